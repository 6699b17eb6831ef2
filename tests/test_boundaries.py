"""Boundaries and inclusions: the stopping comparison exactly at the threshold, which runs enter the boundary fit,
a coefficient absent at an index boundary, and identifiability at the edge of rank deficiency."""
import math

import numpy as np
import pytest
from scipy.special import expit

from refvit import DataConfig, ModelConfig, init_params, make_dataset, streams, train
from refvit.jiang2024.decompose import TokenSolver, name_coefficients
from refvit.jiang2024.boundary import fit_columns
from refvit.results import COLUMNS
from refvit.jiang2024.tokens import unique_tokens

from .problems import newton_logistic, table_row


# ---------------------------------------------------------------------------------------------------------------
# the stopping comparison L_S(θ_t) < τ is strict (docs/math.md (6.4)), for both rules
# ---------------------------------------------------------------------------------------------------------------

def tiny():
    cfg = DataConfig(N=4, M=3, d=8, mu_norm=2.0, sigma_p=1.0, sigma_w=0.1, n_test=4)
    rng = streams(1)
    data = make_dataset(cfg, rng.data, rng.test)
    return init_params(ModelConfig(d_h=2, d_v=2, init_scale=1.0), 8, rng.init), data.X, data.y


@pytest.mark.parametrize("rule", ["first_below", "authors"])
def test_a_loss_equal_to_the_threshold_is_not_below_it(rule):
    p0, X, y = tiny()
    _, free = train(p0, X, y, lr=0.3, steps=3, backend="numpy")          # no threshold: the losses of θ_0..θ_3
    L = free["train_loss"]
    assert np.all(np.diff(L) < 0)                                        # decreasing, so θ_1 is the first below L_0
    at = dict(lr=0.3, steps=3, backend="numpy", stop_rule=rule)
    _, h_at = train(p0, X, y, loss_threshold=float(L[0]), **at)          # τ = L_S(θ_0) exactly: not below
    _, h_up = train(p0, X, y, loss_threshold=float(np.nextafter(L[0], np.inf)), **at)   # one ulp above: below
    # t⋆ = 1 at τ = L_0 and t⋆ = 0 one ulp above; steps = t⋆ (math 6.5) or t⋆ + 1 (math 6.6)
    extra = 1 if rule == "authors" else 0
    assert (h_at.status, h_at.steps) == ("converged", 1 + extra)
    assert (h_up.status, h_up.steps) == ("converged", 0 + extra)


# ---------------------------------------------------------------------------------------------------------------
# non-converged runs are left out of the boundary fit (docs/math.md §11)
# ---------------------------------------------------------------------------------------------------------------

def test_fit_sweep_leaves_out_runs_that_did_not_converge():
    rng = np.random.default_rng(2)
    n = 120
    N = rng.choice([2, 4, 8, 16], size=n)
    mu = rng.choice([10, 20, 40, 80], size=n).astype(float)
    snr = mu / (4.0 * math.sqrt(2000))                      # ‖μ‖/(σ_p √d) (math 1.6)
    benign = rng.random(n) < expit(3.0 + 1.0 * np.log(N) + 1.5 * np.log(snr))
    converged = rng.random(n) < 0.75
    # the runs that did not converge have small test losses where the converged ones are harmful: including
    # them moves the boundary a lot
    loss = np.where(benign, 0.05, 0.5)
    loss = np.where(~converged & (N <= 4), 0.01, loss)
    rows = [table_row(N=int(N[i]), mu_norm=float(mu[i]), snr=float(snr[i]), converged=bool(converged[i]),
                      test_loss=float(loss[i])) for i in range(n)]
    # the fit of a sweep folder reads its run files (fit_sweep); these hand-made rows go to the same fit directly
    fit = fit_columns({k: np.array([r[k] for r in rows]) for k in COLUMNS},
                      {"sigma_p": 4.0, "snr_axis_sigma": 0.2, "d": 2000}, n_boot=0)
    ok = converged
    w = newton_logistic(np.column_stack([np.log(N[ok]), np.log(snr[ok])]), (loss[ok] < 0.2).astype(float))
    w_all = newton_logistic(np.column_stack([np.log(N), np.log(snr)]), (loss < 0.2).astype(float))
    assert abs(w_all[2] / w_all[1] - w[2] / w[1]) > 0.1     # the case is one where the inclusion matters
    # 1e-8: two Newton fits of the same likelihood, each converged to ~1e-12 in β (well conditioned, n = 90)
    assert fit["beta"] == pytest.approx(list(w), rel=1e-8)
    assert fit["n"] == ok.sum() and fit["n_not_converged"] == n - ok.sum()


# ---------------------------------------------------------------------------------------------------------------
# a coefficient treated as absent at an index boundary (refvit.jiang2024.decompose.name_coefficients)
# ---------------------------------------------------------------------------------------------------------------

def test_name_coefficients_at_the_first_and_last_index_and_for_absent_tokens():
    e = np.eye(5)
    # sample 0: μ₊ (unique index 0), ξ₀, a zero token; sample 1: μ₋, ξ₁, and a last token (the last unique index)
    X = np.stack([np.stack([3 * e[0], e[2], 0 * e[0]]), np.stack([3 * e[1], e[3], 0.5 * e[4]])])
    tokens = unique_tokens(X)
    np.testing.assert_array_equal(tokens.index, [[0, 1, -1], [2, 3, 4]])
    coef = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    gp, gm, rho, rho_other = name_coefficients(coef, tokens, (3 * e[0], 3 * e[1]))
    assert (gp, gm) == (10.0, 12.0)                     # μ₊ at index 0 is present, not absent
    np.testing.assert_array_equal(rho, [11.0, 13.0])
    assert np.isnan(rho_other[0, 0]) and rho_other[1, 0] == 14.0   # zero token (-1): NaN; last index: its value
    # a signal that is not a training token has no coefficient (NaN), and that does not borrow the last one
    gp2, gm2, _, _ = name_coefficients(coef, tokens, (3 * e[0], 7 * e[1]))
    assert gp2 == 10.0 and np.isnan(gm2)
    # batched coefficients (..., n_u) are named the same way
    gpb, _, _, rob = name_coefficients(np.stack([coef, -coef]), tokens, (3 * e[0], 3 * e[1]))
    np.testing.assert_array_equal(gpb, [10.0, -10.0])
    np.testing.assert_array_equal(rob[:, 1, 0], [14.0, -14.0])
    assert np.all(np.isnan(rob[:, 0, 0]))


# ---------------------------------------------------------------------------------------------------------------
# identifiability at the edges (refvit.jiang2024.decompose.TokenSolver, docs/math.md (7.17), (7.18))
# ---------------------------------------------------------------------------------------------------------------

def test_exactly_rank_deficient_tokens_are_not_identifiable_and_the_others_are():
    e = np.eye(4)
    U = np.stack([e[0], 2 * e[1], e[0] + e[1], 3 * e[2]])     # u₂ = u₀ + u₁/2 exactly; u₃ independent of all
    s = TokenSolver(U)
    assert s.rank == 3
    np.testing.assert_array_equal(s.identifiable, [False, False, False, True])


@pytest.mark.parametrize("eps", [1e-4, 1e-6])
def test_barely_independent_tokens_are_identifiable_and_recovered(eps):
    e = np.eye(4)
    U = np.stack([e[0], 2 * e[1], e[0] + e[1] + eps * e[3], 3 * e[2]])   # independent by a margin eps
    s = TokenSolver(U)
    Uhat = U / np.linalg.norm(U, axis=1)[:, None]
    assert s.rank == 4 and np.all(s.identifiable)
    # rounding moves an SVD-based condition number (~1/eps here) by ~cond·1e-16 relative; 1e-13/eps is a margin of
    # 1e3 over that, and numpy's own cond is a second path to the same number
    assert s.cond == pytest.approx(np.linalg.cond(Uhat.T), rel=1e-13 / eps)
    B = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25], [2.0, 1.0]])
    D = U.T @ B                                               # ΔW in the token span, coefficients B
    # the error is ≤ cond · eps_machine ~ 1e-16/eps relative; 1e-13/eps is a margin of 1e3, while a solve that
    # treats a barely independent token as dependent (min-norm solution) is off at O(1)
    np.testing.assert_allclose(s.solve(D), B, rtol=0, atol=1e-13 / eps * np.abs(B).max())
