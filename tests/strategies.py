"""Hypothesis strategies: small shapes drawn directly, bulk values from a drawn seed fed to default_rng."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from refvit.jiang2024 import formulas
from refvit.jiang2024.model import Params

shapes = st.fixed_dictionaries({
    "n": st.integers(1, 4), "M": st.integers(2, 5), "d": st.integers(2, 6),
    "d_h": st.integers(1, 4), "d_v": st.integers(1, 4),
})
seeds = st.integers(0, 2**32 - 1)
scales = st.sampled_from([0.05, 0.5, 1.0])   # tiny, moderate and O(1)-logit parameter scales


def random_problem(shape: dict, seed: int, scale: float = 0.5):
    """Params (scaled by ``scale``), X (n, M, d) with N(0,1) entries and labels y in {±1}."""
    rng = np.random.default_rng(seed)
    n, M, d, d_h, d_v = (shape[k] for k in ("n", "M", "d", "d_h", "d_v"))
    params = Params(scale * rng.standard_normal((d, d_h)), scale * rng.standard_normal((d, d_h)),
                    rng.standard_normal((d, d_v)), rng.standard_normal(d_v))
    X = rng.standard_normal((n, M, d))
    y = rng.choice([-1.0, 1.0], size=n)
    return params, X, y


problems = st.builds(random_problem, shapes, seeds, scales)


def summand_scale(params, X):
    """max over entries of Σ |summand| for each block: the scale rounding errors of the sums are relative to.

    On random problems the gradient can be far smaller than its terms (Σ_j G_lj = 0 cancels by design), so the
    honest bound for two summation orders is ε·(number of terms)·Σ|terms|, not ε·|result|.
    """
    W_Q, W_K, W_V, w_O = params
    N = X.shape[0]
    scale = [np.zeros_like(W_Q), np.zeros_like(W_K), np.zeros_like(W_V), np.zeros_like(w_O)]
    for i in range(N):
        s, v, abar, f, G = formulas._sample_terms(params, X[i])
        c = 1.0 / N   # |ℓ'| < 1
        # |G_lj| can itself be a cancellation (v_j − Σ_k s_lk v_k), so bound it by its terms' magnitudes.
        aX, aG = np.abs(X[i]), s * (np.abs(v)[None, :] + (s @ np.abs(v))[:, None]) / X.shape[1]
        scale[0] += c * aX.T @ aG @ np.abs(X[i] @ W_K)
        scale[1] += c * aX.T @ aG.T @ np.abs(X[i] @ W_Q)
        scale[2] += c * np.outer(aX.T @ abar, np.abs(w_O))
        scale[3] += c * np.abs(X[i] @ W_V).T @ abar
    return [float(sc.max()) for sc in scale]
