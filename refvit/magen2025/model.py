"""The reference model of the third setting: single-head prompt attention of Magen et al. Forward, then the
chain-rule backward beside it. Readable first, no tricks.

    f(X) = vᵀ Xᵀ softmax(X p)                         (prompt form, the paper's; docs/math.md (16.9))
    p = W_Kᵀ W_Q q                                     (query form: trained W_Q, W_K and a query q; (16.6))

Dimension letters, used in every shape comment of the package:
    n  samples in a batch (N for the training set)     M  tokens per sample (2 in the paper: signal and noise)
    d  token dimension                                 d_h  query/key width of the query form

Names: ``MagenParams(p, v)`` (prompt form), ``MagenQKParams(W_Q, W_K, q, v)`` (query form, W_Q, W_K (d_h, d)).
Intermediates: a = W_Q q (d_h,), p (d,), scores Z = X p (n, M), attention S = softmax over tokens (rows sum to 1),
value scores u = X v (n, M), ū = Σ_m S_m u_m and f (n,). Gradients of a quantity are named d<name>.
``refvit.magen2025.formulas`` writes the same gradients as the per-sample sums of docs/math.md §16.5; the tests prove
the two, finite differences and a torch autograd oracle equal.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..primitives import (Evaluation, as_float_array, check_batch, check_evaluation_finite, check_forward_finite,
                          dloss_df, mean_loss, softmax)
from .config import MagenModelConfig


class MagenParams(NamedTuple):
    """Prompt-form parameters; gradients use the same type."""
    p: np.ndarray   # (d,)  the prompt: scores Z = X p
    v: np.ndarray   # (d,)  the value readout: u = X v


class MagenQKParams(NamedTuple):
    """Query-form parameters (p = W_Kᵀ W_Q q); gradients use the same type."""
    W_Q: np.ndarray   # (d_h, d)
    W_K: np.ndarray   # (d_h, d)
    q: np.ndarray     # (d,)   the query token
    v: np.ndarray     # (d,)


class MagenCache(NamedTuple):
    """What the forward pass keeps for the backward pass and for the training history."""
    a: np.ndarray | None   # (d_h,)   W_Q q (query form; None in the prompt form)  (math 16.6)
    p: np.ndarray          # (d,)     the effective prompt  (math 16.6)
    Z: np.ndarray          # (n, M)   scores Z_m = ⟨p, x_m⟩  (math 16.7)
    S: np.ndarray          # (n, M)   softmax over tokens m of Z; rows sum to 1  (math 16.7)
    u: np.ndarray          # (n, M)   value scores u_m = ⟨v, x_m⟩  (math 16.8)


def params_type(cfg: MagenModelConfig):
    """``MagenParams`` (form "prompt") or ``MagenQKParams`` (form "query")."""
    return MagenParams if cfg.form == "prompt" else MagenQKParams


# ---------------------------------------------------------------------------------------------------------------
# Parameters and their initialization
# ---------------------------------------------------------------------------------------------------------------

def init_params(cfg: MagenModelConfig, d: int, rng: np.random.Generator | None = None):
    """Initial parameters (docs/math.md (16.10)). Prompt form: p = v = 0 ("zero", rng unused) or every entry
    N(0, σ₀²) ("gaussian", draw order p, v). Query form: W_Q, W_K (d_h, d) and v entries N(0, σ₀²), q a uniform
    unit vector (draw order W_Q, W_K, q, v)."""
    if not isinstance(cfg, MagenModelConfig):
        raise ValueError(f"cfg must be a MagenModelConfig, got {type(cfg).__name__}")
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    if cfg.init == "zero":
        return MagenParams(np.zeros(d), np.zeros(d))                          # (math 16.10)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator for init='gaussian' (e.g. "
                         f"refvit.streams.streams(seed).init), got {type(rng).__name__}")
    s0 = cfg.sigma0
    if cfg.form == "prompt":
        return MagenParams(s0 * rng.standard_normal(d), s0 * rng.standard_normal(d))
    W_Q = s0 * rng.standard_normal((cfg.d_h, d))
    W_K = s0 * rng.standard_normal((cfg.d_h, d))
    q = rng.standard_normal(d)
    return MagenQKParams(W_Q, W_K, q / np.linalg.norm(q), s0 * rng.standard_normal(d))


# ---------------------------------------------------------------------------------------------------------------
# Input checks: every public entry point runs these once; the training loop does not repeat them per step.
# ---------------------------------------------------------------------------------------------------------------

def check_params(params, cfg: MagenModelConfig):
    """Validate the blocks of ``cfg.form`` (shapes above); return float64 params of the form's type."""
    if not isinstance(cfg, MagenModelConfig):
        raise ValueError(f"cfg must be a MagenModelConfig, got {type(cfg).__name__}")
    kind = params_type(cfg)
    if len(params) != len(kind._fields):
        raise ValueError(f"params must be {kind._fields} for form={cfg.form!r}, got {len(params)} arrays")
    ndims = (1, 1) if cfg.form == "prompt" else (2, 2, 1, 1)
    p = kind(*(as_float_array(n, a, k) for n, a, k in zip(kind._fields, params, ndims)))
    d = p.v.shape[0]
    if cfg.form == "prompt":
        if p.p.shape != (d,):
            raise ValueError(f"p must have the shape of v ({d},), got {p.p.shape}")
        return p
    if p.W_Q.shape != (cfg.d_h, d) or p.W_K.shape != (cfg.d_h, d):
        raise ValueError(f"W_Q and W_K must have shape (d_h, d) = {(cfg.d_h, d)}, got {p.W_Q.shape}, {p.W_K.shape}")
    if p.q.shape != (d,):
        raise ValueError(f"q must have the shape of v ({d},), got {p.q.shape}")
    return p


def check_inputs(params, X, cfg: MagenModelConfig, y=None):
    """Validate params, X (n, M, d) and, if given, y (n,) with entries ±1. Returns float64 copies as needed."""
    params = check_params(params, cfg)
    if y is None:
        return params, check_batch(X, params.v.shape[0])
    return (params, *check_batch(X, params.v.shape[0], y))


# ---------------------------------------------------------------------------------------------------------------
# Forward and backward
# ---------------------------------------------------------------------------------------------------------------

def prompt(params) -> tuple:
    """(a, p): a = W_Q q (d_h,) and p = W_Kᵀ a (d,) in the query form; (None, p) in the prompt form (math 16.6)."""
    if isinstance(params, MagenParams):
        return None, params.p
    a = params.W_Q @ params.q                   # (d_h,)  a = W_Q q  (math 16.6)
    return a, params.W_K.T @ a                  # (d,)    p = W_Kᵀ a  (math 16.6)


def forward_cache(params, X: np.ndarray):
    """f (n,) and the ``MagenCache`` for X (n, M, d). Inputs are assumed checked (see ``check_inputs``)."""
    a, p = prompt(params)
    Z = X @ p                                   # (n, M)  Z_m = ⟨p, x_m⟩  (math 16.7)
    S = softmax(Z)                              # (n, M)  softmax over tokens  (math 16.7)
    u = X @ params.v                            # (n, M)  u_m = ⟨v, x_m⟩  (math 16.8)
    f = np.einsum("nm,nm->n", S, u)             # (n,)    f = Σ_m S_m u_m = vᵀ Xᵀ S  (math 16.9)
    return f, MagenCache(a, p, Z, S, u)


def attention_backward(df: np.ndarray, cache: MagenCache, X: np.ndarray):
    """dp, dv (d,) of Σ_i df_i f_i for df (n,): the backward of the prompt form (math 16.13–16.16)."""
    S, u = cache.S, cache.u
    # forward: f = Σ_m S_m u_m, so du_m = df · S_m
    du = df[:, None] * S                                         # (n, M)  (math 16.13)
    # forward: u_m = ⟨v, x_m⟩, so dv = Σ_i Σ_m du_im x_im
    dv = np.einsum("nm,nmd->d", du, X)                           # (d,)    (math 16.14)
    # forward: f = Σ_m S_m u_m, so dS_m = df · u_m
    dS = df[:, None] * u                                         # (n, M)  (math 16.15)
    # forward: S = softmax(Z), so dZ = S ⊙ (dS − Σ_k S_k dS_k)  (softmax Jacobian-vector product)
    dZ = S * (dS - (S * dS).sum(axis=-1, keepdims=True))         # (n, M)  = df S (u − ū)  (math 16.15)
    # forward: Z_m = ⟨p, x_m⟩, so dp = Σ_i Σ_m dZ_im x_im
    dp = np.einsum("nm,nmd->d", dZ, X)                           # (d,)    (math 16.16)
    return dp, dv


def backward(df: np.ndarray, cache: MagenCache, X: np.ndarray, params):
    """Gradients of Σ_i df[i]·f[i] (df: (n,)) with respect to every block of ``params``, by the chain rule."""
    dp, dv = attention_backward(df, cache, X)
    if isinstance(params, MagenParams):
        return MagenParams(dp, dv)
    a = cache.a
    # forward: p = W_Kᵀ a, so dW_K = a dpᵀ and da = W_K dp
    dW_K = np.outer(a, dp)                                       # (d_h, d)  (math 16.17)
    da = params.W_K @ dp                                         # (d_h,)    (math 16.17)
    # forward: a = W_Q q, so dW_Q = da qᵀ and dq = W_Qᵀ da
    dW_Q = np.outer(da, params.q)                                # (d_h, d)  (math 16.17)
    dq = params.W_Q.T @ da                                       # (d,)      (math 16.17)
    return MagenQKParams(dW_Q, dW_K, dq, dv)


def loss_grads_cache(params, X: np.ndarray, y: np.ndarray) -> Evaluation:
    """``Evaluation`` (loss, grads, f, cache) for checked inputs; the training loop's single call per step."""
    f, cache = forward_cache(params, X)
    # forward: L = (1/n) Σ_i ℓ(y_i f_i), so g_i = dL/df_i = ℓ'(y_i f_i) y_i / n  (math 16.12)
    g = dloss_df(f, y)
    return Evaluation(mean_loss(f, y), backward(g, cache, X, params), f, cache)   # loss (math 16.11)


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------

def forward(params, X, cfg: MagenModelConfig) -> np.ndarray:
    """Model output f for a batch. params: the form's NamedTuple or tuple; X: (n, M, d). Returns f: (n,)."""
    params, X = check_inputs(params, X, cfg)
    with np.errstate(over="ignore", invalid="ignore"):   # overflow is detected right below and named
        f, cache = forward_cache(params, X)
    check_forward_finite(X, f, cache)
    return f


def loss_and_grads(params, X, y, cfg: MagenModelConfig):
    """Mean logistic loss and its gradient for every block (frozen ones included; the optimizer skips them).

    params: the form's NamedTuple or tuple; X: (n, M, d); y: (n,) in {±1}. Returns (loss: float, grads).
    """
    params, X, y = check_inputs(params, X, cfg, y)
    with np.errstate(over="ignore", invalid="ignore"):   # overflow is detected right below and named
        loss, grads, f, cache = loss_grads_cache(params, X, y)
    check_evaluation_finite(X, f, cache, loss, grads)
    return loss, grads
