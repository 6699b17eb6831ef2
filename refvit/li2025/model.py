"""The reference model of the second setting: the two-token transformer of Li et al. (ICLR 2025), trained by SignGD,
Adam or GD. Forward, then the chain-rule backward beside it. Readable first, no tricks.

    f(X) = c_L Σ_l Σ_m softmax_m(λ⟨W_Q x_l, W_K x_m⟩) · ⟨v, x_m⟩,  v = w̄_{V,+1} − w̄_{V,−1}  (docs/math.md (13.10))

Dimension letters, used in every shape comment of the package:
    n  samples in a batch (N for the training set)     L  tokens per sample (2: signal and noise)
    d  token dimension                                 m_k  query/key width       m_v  value rows per class

Names: W_Q, W_K (m_k, d) with rows w_{Q,s}, w_{K,s}; W_V (2, m_v, d) with W_V[0] = W_{V,+1}, W_V[1] = W_{V,−1}.
Intermediates: Q = X W_Qᵀ, K = X W_Kᵀ (n, L, m_k), logits Z = λ Q Kᵀ (n, L, L), attention S = softmax over keys m
(rows sum to 1), value direction v (d,), value scores u = X v (n, L), and f (n,). λ = ``logit_scale``; c_L = 1
("sum") or 1/L ("mean"). Gradients of a quantity are named d<name>. ``refvit.li2025.formulas`` writes the same
gradients as the per-row sums of docs/math.md §13.5; the tests prove the two, finite differences and a torch
autograd oracle equal.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..primitives import (Evaluation, as_float_array, check_evaluation_finite, check_forward_finite, dloss_df,
                          mean_loss, softmax)
from .config import LiModelConfig


class LiParams(NamedTuple):
    """Model parameters; gradients use the same type."""
    W_Q: np.ndarray   # (m_k, d)      rows w_{Q,s}
    W_K: np.ndarray   # (m_k, d)      rows w_{K,s}
    W_V: np.ndarray   # (2, m_v, d)   W_V[0] = W_{V,+1} (rows w_{V,+1,r}), W_V[1] = W_{V,−1}


class LiCache(NamedTuple):
    """What the forward pass keeps for the backward pass and for the training history."""
    Q: np.ndarray   # (n, L, m_k)  Q[i, l, s] = ⟨w_{Q,s}, x_{i,l}⟩  (math 13.6)
    K: np.ndarray   # (n, L, m_k)  K[i, m, s] = ⟨w_{K,s}, x_{i,m}⟩  (math 13.6)
    u: np.ndarray   # (n, L)       value scores u[i, m] = ⟨v, x_{i,m}⟩  (math 13.8)
    Z: np.ndarray   # (n, L, L)    logits λ⟨Q_l, K_m⟩  (math 13.7)
    S: np.ndarray   # (n, L, L)    softmax over keys m of Z; rows sum to 1  (math 13.7)


# ---------------------------------------------------------------------------------------------------------------
# Parameters and their initialization
# ---------------------------------------------------------------------------------------------------------------

def init_params(cfg: LiModelConfig, d: int, rng: np.random.Generator) -> LiParams:
    """W_Q, W_K (m_k, d) and W_V (2, m_v, d), every entry i.i.d. N(0, σ₀²) (docs/math.md (13.11)).

    Draw order W_Q, W_K, W_V, so a seed always gives the same parameters.
    """
    if not isinstance(cfg, LiModelConfig):
        raise ValueError(f"cfg must be a LiModelConfig, got {type(cfg).__name__}")
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator (e.g. refvit.streams.streams(seed).init), "
                         f"got {type(rng).__name__}")
    return LiParams(cfg.sigma0 * rng.standard_normal((cfg.m_k, d)),        # (math 13.11)
                    cfg.sigma0 * rng.standard_normal((cfg.m_k, d)),
                    cfg.sigma0 * rng.standard_normal((2, cfg.m_v, d)))


# ---------------------------------------------------------------------------------------------------------------
# Input checks: every public entry point runs these once; the training loop does not repeat them per step.
# ---------------------------------------------------------------------------------------------------------------

def check_params(params, cfg: LiModelConfig) -> LiParams:
    """Validate W_Q, W_K (m_k, d), W_V (2, m_v, d) against ``cfg``'s widths; return float64 ``LiParams``."""
    if not isinstance(cfg, LiModelConfig):
        raise ValueError(f"cfg must be a LiModelConfig, got {type(cfg).__name__}")
    if len(params) != 3:
        raise ValueError(f"params must be (W_Q, W_K, W_V), got {len(params)} arrays")
    p = LiParams(*(as_float_array(n, a, k) for n, a, k in zip(LiParams._fields, params, (2, 2, 3))))
    m_k, d = p.W_Q.shape
    if m_k != cfg.m_k:
        raise ValueError(f"W_Q has {m_k} rows but cfg.m_k = {cfg.m_k}")
    if p.W_K.shape != (m_k, d):
        raise ValueError(f"W_K must have the shape of W_Q {(m_k, d)}, got {p.W_K.shape}")
    if p.W_V.shape != (2, cfg.m_v, d):
        raise ValueError(f"W_V must have shape (2, m_v, d) = {(2, cfg.m_v, d)}, got {p.W_V.shape}")
    return p


def check_inputs(params, X, cfg: LiModelConfig, y=None):
    """Validate params, X (n, L, d) and, if given, y (n,) with entries ±1. Returns float64 copies as needed."""
    params = check_params(params, cfg)
    X = as_float_array("X", X, 3)
    if X.shape[2] != params.W_Q.shape[1]:
        raise ValueError(f"X has token dimension {X.shape[2]} but W_Q expects d = {params.W_Q.shape[1]}")
    if y is None:
        return params, X
    y = as_float_array("y", y, 1)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape (n,) = ({X.shape[0]},), got {y.shape}")
    if not np.all(np.abs(y) == 1):
        raise ValueError("labels y must be +1 or -1")
    return params, X, y


# ---------------------------------------------------------------------------------------------------------------
# Forward and backward
# ---------------------------------------------------------------------------------------------------------------

def value_direction(W_V: np.ndarray) -> np.ndarray:
    """v = w̄_{V,+1} − w̄_{V,−1} (d,): the class difference of the value rows' means (math 13.8)."""
    return W_V[0].mean(axis=0) - W_V[1].mean(axis=0)


def forward_cache(params: LiParams, X: np.ndarray, cfg: LiModelConfig):
    """f (n,) and the ``LiCache`` for X (n, L, d). Inputs are assumed checked (see ``check_inputs``)."""
    W_Q, W_K, W_V = params
    n, L, d = X.shape
    lam, c = cfg.logit_scale, cfg.c(L)
    Xf = X.reshape(n * L, d)                    # (n L, d) all tokens as rows: one GEMM, not n small ones
    Q = (Xf @ W_Q.T).reshape(n, L, -1)          # (n, L, m_k)  Q_l = W_Q x_l  (math 13.6)
    K = (Xf @ W_K.T).reshape(n, L, -1)          # (n, L, m_k)  K_m = W_K x_m  (math 13.6)
    Z = lam * (Q @ K.transpose(0, 2, 1))        # (n, L, L)    Z[l, m] = λ⟨Q_l, K_m⟩  (math 13.7)
    S = softmax(Z)                              # (n, L, L)    softmax over keys m, one row per query l  (math 13.7)
    u = (Xf @ value_direction(W_V)).reshape(n, L)   # (n, L)   u_m = ⟨v, x_m⟩  (math 13.8)
    f = c * np.einsum("nlm,nm->n", S, u)        # (n,)         f = c_L Σ_l Σ_m S[l, m] u_m  (math 13.9)
    return f, LiCache(Q, K, u, Z, S)


def attention_backward(df: np.ndarray, cache: LiCache, c: float, lam: float):
    """Backward of the attention readout for one cotangent df (n,): dQ, dK (n, L, m_k) and du (n, L).

    c = c_L and lam = λ. Kept apart from the projections so that each chain-rule line can be checked on its own.
    """
    Q, K, u, _, S = cache
    # forward: f = c_L Σ_m (Σ_l S[l, m]) u_m, so du_m = df · c_L Σ_l S[l, m]
    du = df[:, None] * c * S.sum(axis=1)                        # (n, L)  (math 13.14)
    # forward: f = c_L Σ_l Σ_m S[l, m] u_m, so dS[l, m] = df · c_L u_m, the same for every query l
    dS = np.broadcast_to((df[:, None] * c * u)[:, None, :], S.shape)   # (n, L, L)  (math 13.16)
    # forward: S = softmax_m(Z), so dZ = S ⊙ (dS − Σ_k S[l, k] dS[l, k])  (softmax Jacobian-vector product)
    dZ = S * (dS - (S * dS).sum(axis=-1, keepdims=True))        # (n, L, L)  = df c_L S_lm (u_m − ū_l)  (math 13.17)
    # forward: Z = λ Q Kᵀ, so dQ = λ dZ K and dK = λ dZᵀ Q
    dQ = lam * (dZ @ K)                                         # (n, L, m_k)  (math 13.18)
    dK = lam * (dZ.transpose(0, 2, 1) @ Q)                      # (n, L, m_k)  (math 13.18)
    return dQ, dK, du


def backward(df: np.ndarray, cache: LiCache, X: np.ndarray, cfg: LiModelConfig) -> LiParams:
    """Gradients of Σ_i df[i]·f[i] (df: (n,)) with respect to (W_Q, W_K, W_V), by the chain rule."""
    dQ, dK, du = attention_backward(df, cache, cfg.c(X.shape[1]), cfg.logit_scale)
    n, L, d = X.shape
    m_v = cfg.m_v
    Xf = X.reshape(n * L, d)                                    # (n L, d) all tokens as rows: one GEMM
    # forward: u_m = ⟨v, x_m⟩, so dv = Σ_i Σ_m du[i, m] x_{i,m}
    dv = du.reshape(n * L) @ Xf                                 # (d,)  (math 13.15)
    # forward: v = (1/m_v) Σ_r W_V[0, r] − (1/m_v) Σ_r W_V[1, r]: every row of a class gets ±dv/m_v
    dW_V = np.stack([np.broadcast_to(dv / m_v, (m_v, d)),
                     np.broadcast_to(-dv / m_v, (m_v, d))])     # (2, m_v, d)  (math 13.15)
    # forward: Q = X W_Qᵀ and K = X W_Kᵀ, so dW = Σ_i dQ_iᵀ X_i summed over samples and tokens
    dW_Q = dQ.reshape(n * L, -1).T @ Xf                         # (m_k, d)  (math 13.19)
    dW_K = dK.reshape(n * L, -1).T @ Xf                         # (m_k, d)  (math 13.19)
    return LiParams(dW_Q, dW_K, dW_V)


def loss_grads_cache(params: LiParams, X: np.ndarray, y: np.ndarray, cfg: LiModelConfig) -> Evaluation:
    """``Evaluation`` (loss, grads, f, cache) for checked inputs; the training loop's single call per step."""
    f, cache = forward_cache(params, X, cfg)
    # forward: L = (1/n) Σ_i ℓ(y_i f_i), so g_i = dL/df_i = ℓ'(y_i f_i) y_i / n  (math 13.13)
    g = dloss_df(f, y)
    return Evaluation(mean_loss(f, y), backward(g, cache, X, cfg), f, cache)   # loss (math 13.12)


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------

def forward(params, X, cfg: LiModelConfig) -> np.ndarray:
    """Model output f for a batch. params: ``LiParams`` or 3-tuple; X: (n, L, d). Returns f: (n,)."""
    params, X = check_inputs(params, X, cfg)
    with np.errstate(over="ignore", invalid="ignore"):   # overflow is detected right below and named
        f, cache = forward_cache(params, X, cfg)
    check_forward_finite(X, f, cache)
    return f


def loss_and_grads(params, X, y, cfg: LiModelConfig) -> tuple[float, LiParams]:
    """Mean logistic loss and its gradient for every block (frozen ones included; the optimizer skips them).

    params: ``LiParams`` or 3-tuple; X: (n, L, d); y: (n,) in {±1}. Returns (loss: float, grads: LiParams).
    """
    params, X, y = check_inputs(params, X, cfg, y)
    with np.errstate(over="ignore", invalid="ignore"):   # overflow is detected right below and named
        loss, grads, f, cache = loss_grads_cache(params, X, y, cfg)
    check_evaluation_finite(X, f, cache, loss, grads)
    return loss, grads
