"""The attention core off the beaten path: logits all very negative, all very positive, spread over ±800 in one
row, exact ties, M = 1.

Both cores (``refvit.jiang2024.model`` numpy and ``refvit.jiang2024._kernels`` numba; the latter also as plain Python under
NUMBA_DISABLE_JIT=1 in .ci/run) against a float64 reference written here: scipy's softmax for the forward and the
explicit softmax Jacobian diag(s) − s sᵀ (docs/math.md (4.6)) for the backward.

Tolerance: 1e-12 relative to the largest entry of each array. The logits here are up to ~1e3 in size, so their
differences (all the softmax sees, docs/math.md (3.5)) carry absolute rounding ~1e-13 and the probabilities a
relative error ~1e-13; measured ≤ 1e-15 after normalization. A core that does not subtract the row maximum gives NaN
or 0/0 in these rows, and a wrong tie or M = 1 treatment is off at O(1).
"""
import numpy as np
import pytest
from scipy.special import softmax

from refvit.jiang2024 import _kernels, model

CORES = {"numpy": (model.attention_forward, model.attention_backward),
         "numba": (_kernels.attention_forward, _kernels.attention_backward)}


def reference(Q, K, v, df):
    Z = np.einsum("nle,nje->nlj", Q, K)
    S = softmax(Z, axis=-1)
    n, M, _ = Q.shape
    abar = S.mean(axis=1)
    f = np.einsum("nj,nj->n", abar, v)
    dZ = np.empty_like(Z)
    for i in range(n):
        dS = df[i] * v[i] / M                                 # ∂(df·f)/∂S[l, j] (math 4.5)
        for l in range(M):
            s = S[i, l]
            dZ[i, l] = (np.diag(s) - np.outer(s, s)) @ dS       # Jacobian of the softmax (math 4.6), symmetric
    dQ = np.einsum("nlj,nje->nle", dZ, K)                      # (math 4.10)
    dK = np.einsum("nlj,nle->nje", dZ, Q)
    dv = df[:, None] * abar                                   # (math 4.2)
    return (Z, S, abar, f), (dQ, dK, dv)


def regime(name):
    """(Q, K, v) with the logit rows of the named regime; d_h = 2 unless said otherwise."""
    rng = np.random.default_rng(7)
    n, M = 3, 4
    if name == "M1":
        M = 1
    Q = rng.standard_normal((n, M, 2))
    K = rng.standard_normal((n, M, 2))
    if name in ("very_negative", "very_positive"):
        sign = -1.0 if name == "very_negative" else 1.0
        # z_lj = q_l·k_j = ±1e3·(1 + small): every logit of every row ~ ±1e3, differences O(1)
        Q = np.concatenate([np.ones((n, M, 1)), 0.3 * rng.standard_normal((n, M, 1))], axis=2)
        K = np.concatenate([np.full((n, M, 1), sign * 1e3), rng.standard_normal((n, M, 1))], axis=2)
    if name == "wide":
        # logits from −800 to +800 within each row: attention saturated on one key, the others e^{-600} and less
        Q[..., 0] = 1.0
        K[..., 0] = np.array([-800.0, -300.0, 200.0, 800.0])
    if name == "ties":
        K[:] = K[:, :1]                                       # every key equal: every row is an exact tie
        K[1, 2:] = K[1, 0] + 0.0                              # and sample 1 has equal keys too (still a tie)
    if name == "ties_mixed":
        K[:, 2] = K[:, 0]                                     # two equal keys among different ones
    v = rng.standard_normal((n, M))
    return Q, K, v


REGIMES = ["very_negative", "very_positive", "wide", "ties", "ties_mixed", "M1"]


def close(a, b, what, scale=0.0):
    """Max error relative to the largest entry of b, or to ``scale`` when larger (a sum of terms that cancel)."""
    scale = max(np.abs(b).max(), scale, 1e-300)
    err = np.abs(np.asarray(a) - b).max() / scale
    assert np.all(np.isfinite(a)) and err <= 1e-12, f"{what}: relative error {err:.3g}"   # see module docstring


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("name", REGIMES)
def test_core_matches_an_independent_softmax(core, name):
    Q, K, v = regime(name)
    df = np.array([0.7, -1.3, 0.2])
    fwd, bwd = CORES[core]
    (Z, S, abar, f), (dQ, dK, dv) = reference(Q, K, v, df)
    got = fwd(Q, K, v)
    for a, b, what in zip(got, (Z, S, abar, f), ("Z", "S", "abar", "f")):
        close(a, b, what)
    np.testing.assert_allclose(got[1].sum(axis=-1), 1.0, rtol=1e-14)   # rows sum to 1 up to M roundings
    # dZ = S ⊙ (dS − Σ S dS) cancels: in a tie dQ = dZ K is exactly 0 (rows of dZ sum to 0, math 4.9), and in a
    # saturated row 1 − s_max ~ e^{-600} is below rounding. Each entry of dZ carries rounding ~1e-16·max|dS|, so the
    # scale of dQ (dK) is M·max|dS|·max|K| (max|Q|), not its own tiny size
    M = Q.shape[1]
    dS_max = np.abs(df[:, None] * v).max() / M
    scales = (M * dS_max * np.abs(K).max(), M * dS_max * np.abs(Q).max(), 0.0)
    for a, b, what, sc in zip(bwd(df, got[1], v, Q, K), (dQ, dK, dv), ("dQ", "dK", "dv"), scales):
        close(a, b, what, sc)
    if name == "ties":
        np.testing.assert_array_equal(got[1], np.full_like(S, 1 / 4))   # exact: e^0 / 4 in every entry
    if name == "M1":
        np.testing.assert_array_equal(got[1], 1.0)                      # one key: attention 1, f = v
        np.testing.assert_array_equal(got[3], v[:, 0])
        np.testing.assert_array_equal(got[0][..., 0, 0], np.einsum("ne,ne->n", Q[:, 0], K[:, 0]))
