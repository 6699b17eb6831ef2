"""The audit's ground for docs/math.md §13 (the second setting): the independent reference forward pass, loss and
third gradient derivation, and the instances the family ``checks_li`` runs on.

Nothing here calls the code under audit except to *build* instances (the data law and the initialization, which
have their own rows). Shapes follow ``refvit.li2025.model``: X (n, L, d), W_Q, W_K (m_k, d), W_V (2, m_v, d).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.special

from .. import gradcheck
from ..li2025 import data as li_data
from ..li2025 import model as li_model
from ..li2025.config import LiDataConfig, LiModelConfig
from ..li2025.model import LiParams
from .core import H_FD


# ---------------------------------------------------------------------------------------------------------------
# The independent side
# ---------------------------------------------------------------------------------------------------------------

class LiRef(NamedTuple):
    """Q, K (n, L, m_k), pre-scale scores a (n, L, L), S (n, L, L), u (n, L), f (n,)."""
    Q: np.ndarray
    K: np.ndarray
    a: np.ndarray
    S: np.ndarray
    u: np.ndarray
    f: np.ndarray


def ref_c(cfg: LiModelConfig, L: int) -> float:
    """(13.9) c_L = 1 for "sum", 1/L for "mean", read from the switch (not from ``LiModelConfig.c``)."""
    return {"sum": 1.0, "mean": 1.0 / L}[cfg.c_L]


def ref_v(W_V) -> np.ndarray:
    """(13.8) v = mean of the +1 rows − mean of the −1 rows, by np.add.reduce."""
    return (np.add.reduce(W_V[0], axis=0) - np.add.reduce(W_V[1], axis=0)) / W_V.shape[1]


def ref_core(Q, K, u, c, lam) -> LiRef:
    """(13.7), (13.9) from Q, K and u."""
    a = np.einsum("nls,nms->nlm", Q, K)
    S = scipy.special.softmax(lam * a, axis=-1)
    return LiRef(Q, K, a, S, u, c * np.einsum("nlm,nm->n", S, u))


def li_ref_forward(p, X, cfg: LiModelConfig) -> LiRef:
    """(13.6)–(13.9) for params p and X (n, L, d)."""
    Q = np.einsum("nld,sd->nls", X, p[0])
    K = np.einsum("nld,sd->nls", X, p[1])
    return ref_core(Q, K, np.einsum("nmd,d->nm", X, ref_v(p[2])), ref_c(cfg, X.shape[1]), cfg.logit_scale)


def ref_loss(f, y) -> float:
    return float(np.mean(np.logaddexp(0.0, -y * f)))


def ref_g(f, y):
    """(13.13) g_i = −y_i / (n (1 + e^{y_i f_i})), written as −y exp(−logaddexp(0, y f)) / n."""
    return -y * np.exp(-np.logaddexp(0.0, y * f)) / f.shape[0]


def ref_delta(r: LiRef, c, lam):
    """(13.20) δ_lm = c_L λ S_lm (u_m − ū_l)."""
    return c * lam * r.S * (r.u[:, None, :] - np.einsum("nlm,nm->nl", r.S, r.u)[:, :, None])


def li_ref_grads(p, X, y, cfg) -> LiParams:
    """A third derivation of ∇L_S (einsum over δ and g), used to move instances by SignGD."""
    r = li_ref_forward(p, X, cfg)
    g, dl = ref_g(r.f, y), ref_delta(r, ref_c(cfg, X.shape[1]), cfg.logit_scale)
    dW_Q = np.einsum("n,nlm,nms,nld->sd", g, dl, r.K, X)
    dW_K = np.einsum("n,nlm,nls,nmd->sd", g, dl, r.Q, X)
    dv = ref_c(cfg, X.shape[1]) * np.einsum("n,nlm,nmd->d", g, r.S, X) / cfg.m_v
    return LiParams(dW_Q, dW_K, np.stack([np.tile(dv, (cfg.m_v, 1)), np.tile(-dv, (cfg.m_v, 1))]))


def _fd(fun, x):
    return gradcheck.numerical_grad(fun, np.array(x, dtype=np.float64, copy=True), H_FD)


def _with(p, k, a):
    return LiParams(*(a if i == k else b for i, b in enumerate(p)))


# ---------------------------------------------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------------------------------------------

class LiInstance(NamedTuple):
    name: str
    p: LiParams
    X: np.ndarray
    y: np.ndarray
    cfg: LiModelConfig
    small: bool                 # full finite differences and the per-row loops
    noise: np.ndarray | None    # (n, d) noise tokens ξ_i, for data-law instances


def _gaussian(name, seed, n, d, m_k, m_v, scale, **cfg) -> LiInstance:
    rng = np.random.default_rng(seed)
    mc = LiModelConfig(m_k=m_k, m_v=m_v, sigma0=scale, **cfg)
    X = rng.standard_normal((n, 2, d))
    y = rng.choice(np.array([1.0, -1.0]), size=n)
    return LiInstance(name, li_model.init_params(mc, d, rng), X, y, mc, True, None)


def _law(name, dc, mc, seed, signgd_steps=0, lr=0.05) -> LiInstance:
    ds = li_data.make_dataset(dc, np.random.default_rng(seed), np.random.default_rng(seed + 1))
    p = li_model.init_params(mc, dc.d, np.random.default_rng(seed + 2))
    for _ in range(signgd_steps):                                       # (13.28) with the third derivation
        p = LiParams(*(a - lr * np.sign(g) for a, g in zip(p, li_ref_grads(p, ds.X, ds.y, mc))))
    noise = ds.X[np.arange(dc.N), 1 - ds.signal_pos]
    return LiInstance(name, p, ds.X, ds.y, mc, dc.d <= 100, noise)


def li_instances() -> list:
    law = LiDataConfig(N=5, d=40, s=4, mu_norm=1.0, n_test=2, signal_position="random")
    default = LiDataConfig(N=6, n_test=2, mu_norm=2.0)
    return [
        _gaussian("gauss sum", 31, n=3, d=5, m_k=2, m_v=3, scale=0.8),
        _gaussian("gauss mean λ=1.7", 32, n=4, d=4, m_k=2, m_v=1, scale=0.6, c_L="mean", logit_scale=1.7),
        _gaussian("gauss m_k=3", 33, n=5, d=6, m_k=3, m_v=2, scale=0.7),
        _gaussian("saturated", 34, n=2, d=4, m_k=2, m_v=2, scale=2.0),
        _law("law tiny init", law, LiModelConfig(m_k=2, m_v=2), 35),
        _law("law O(1)", law, LiModelConfig(m_k=2, m_v=3, sigma0=0.5, logit_scale=1.3), 36),
        _law("law 3 SignGD steps", law, LiModelConfig(m_k=2, m_v=2, sigma0=0.3), 37, signgd_steps=3),
        _law("default sizes", default, LiModelConfig(sigma0=0.05), 38),
        _law("default 3 SignGD steps", default, LiModelConfig(sigma0=0.05), 38, signgd_steps=3, lr=0.01),
    ]
