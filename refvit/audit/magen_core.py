"""The audit's ground for docs/math.md §16 (the third setting): the independent reference forward pass, loss and
third gradient derivation, and the instances the family ``checks_magen`` runs on.

Nothing here calls the code under audit except to *build* instances (the data law and the initialization, which
have their own rows). Shapes follow ``refvit.magen2025.model``: X (n, M, d), p, v, q (d,), W_Q, W_K (d_h, d).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.special

from .. import gradcheck
from ..magen2025 import data as mg_data
from ..magen2025 import model as mg_model
from ..magen2025.config import MagenDataConfig, MagenModelConfig
from .core import H_FD


# ---------------------------------------------------------------------------------------------------------------
# The independent side
# ---------------------------------------------------------------------------------------------------------------

class MagenRef(NamedTuple):
    """p (d,), scores Z (n, M), attention S (n, M), u (n, M), f (n,)."""
    p: np.ndarray
    Z: np.ndarray
    S: np.ndarray
    u: np.ndarray
    f: np.ndarray


def ref_prompt(params) -> np.ndarray:
    """(16.6): p itself, or W_Kᵀ W_Q q by einsum (read by the number of blocks, not by the code's types)."""
    if len(params) == 2:
        return np.asarray(params[0])
    W_Q, W_K, q, _ = params
    return np.einsum("hd,he,e->d", W_K, W_Q, q)


def ref_core(Z, u) -> tuple:
    """(16.7), (16.9) from the scores Z and the value scores u: (S, f)."""
    S = scipy.special.softmax(Z, axis=-1)
    return S, np.einsum("nm,nm->n", S, u)


def magen_ref_forward(params, X) -> MagenRef:
    """(16.6)–(16.9) for params (2 or 4 blocks) and X (n, M, d)."""
    p = ref_prompt(params)
    Z = np.einsum("nmd,d->nm", X, p)
    u = np.einsum("nmd,d->nm", X, params[-1])
    S, f = ref_core(Z, u)
    return MagenRef(p, Z, S, u, f)


def ref_loss(f, y) -> float:
    return float(np.mean(np.logaddexp(0.0, -y * f)))


def ref_g(f, y):
    """(16.12) g_i = −y_i / (n (1 + e^{y_i f_i})), written as −y exp(−logaddexp(0, y f)) / n."""
    return -y * np.exp(-np.logaddexp(0.0, y * f)) / f.shape[0]


def magen_ref_grads(params, X, y):
    """A third derivation of ∇L_S (einsum over c_im = g_i s_im (u_im − ū_i)), used to move instances by GD."""
    r = magen_ref_forward(params, X)
    g = ref_g(r.f, y)
    c = g[:, None] * r.S * (r.u - r.f[:, None])
    dv = np.einsum("n,nm,nmd->d", g, r.S, X)
    dp = np.einsum("nm,nmd->d", c, X)
    if len(params) == 2:
        return type(params)(dp, dv)
    W_Q, W_K, q, _ = params
    a = W_Q @ q
    da = W_K @ dp
    return type(params)(np.outer(da, q), np.outer(a, dp), W_Q.T @ da, dv)


def fd(fun, x):
    return gradcheck.numerical_grad(fun, np.array(x, dtype=np.float64, copy=True), H_FD)


def with_block(p, k, a):
    return type(p)(*(a if i == k else b for i, b in enumerate(p)))


# ---------------------------------------------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------------------------------------------

class MagenInstance(NamedTuple):
    name: str
    p: tuple                    # MagenParams or MagenQKParams
    X: np.ndarray
    y: np.ndarray
    cfg: MagenModelConfig
    small: bool                 # full finite differences and the per-sample loops
    data: object | None         # the MagenDataset of data-law instances


def _gaussian(name, seed, n, M, d, scale, form="prompt", d_h=2) -> MagenInstance:
    rng = np.random.default_rng(seed)
    mc = MagenModelConfig(form=form, init="gaussian", sigma0=scale, d_h=d_h)
    X = rng.standard_normal((n, M, d))
    y = rng.choice(np.array([1.0, -1.0]), size=n)
    return MagenInstance(name, mg_model.init_params(mc, d, rng), X, y, mc, True, None)


def _law(name, dc, mc, seed, gd_steps=0, lr=1.0) -> MagenInstance:
    ds = mg_data.make_dataset(dc, np.random.default_rng(seed), np.random.default_rng(seed + 1))
    p = mg_model.init_params(mc, dc.d, np.random.default_rng(seed + 2))
    for _ in range(gd_steps):                                            # (16.21) onwards, the third derivation
        p = type(p)(*(a - lr * b for a, b in zip(p, magen_ref_grads(p, ds.X, ds.y))))
    return MagenInstance(name, p, ds.X, ds.y, mc, dc.d <= 100, ds)


def magen_instances() -> list:
    law = MagenDataConfig(N=6, d=12, rho=1.5, n_test=2, flip_rate=0.34, flips="exact")
    default = MagenDataConfig(N=40, n_test=2, signals="random")
    gauss = MagenModelConfig(init="gaussian", sigma0=0.5)
    return [
        _gaussian("gauss M=2", 91, n=3, M=2, d=5, scale=0.8),
        _gaussian("gauss M=3", 92, n=4, M=3, d=4, scale=0.7),
        _gaussian("query d_h=2", 93, n=3, M=3, d=5, scale=0.9, form="query"),
        _gaussian("saturated", 94, n=2, M=2, d=4, scale=3.0),
        _law("law O(1)", law, gauss, 95),
        _law("law 3 GD steps from zero", law, MagenModelConfig(), 96, gd_steps=3, lr=2.0),
        _law("law M=3 query", law.replace(M=3), MagenModelConfig(form="query", init="gaussian", sigma0=0.6, d_h=3),
             97),
        _law("default sizes", default, MagenModelConfig(init="gaussian", sigma0=0.02), 98),
        _law("default 2 GD steps from zero", default, MagenModelConfig(), 99, gd_steps=2, lr=5.0),
    ]
