"""The reference model: forward, then the chain-rule backward beside it. Readable first, no tricks.

    f(X) = (1/M) Σ_l softmax_j(x_lᵀ W_Q W_Kᵀ x_j) · x_jᵀ W_V w_O                       (docs/math.md (2.7))

Dimension letters, used in every shape comment of the package:
    n  samples in a batch (N for the training set)     M  tokens per image      d  token dimension
    d_h  query/key width                               d_v  value width

Names follow the paper: W_Q, W_K (d, d_h), W_V (d, d_v), w_O (d_v,). Intermediates: Q = X W_Q, K = X W_K,
u = W_V w_O (d,), value scores v = X u (n, M), logits Z (n, M, M) with Z[l, j] = x_lᵀ W_Q W_Kᵀ x_j, attention
S = softmax over keys j (rows sum to 1), column-mean attention ā = (1/M) Sᵀ𝟙 (n, M), and f = Σ_j ā_j v_j (n,).
Gradients of a quantity are named d<name>.

The value path never forms X·W_V: f depends on (W_V, w_O) only through u = W_V w_O (docs/math.md (5.2)), so it costs
O(n M d) instead of O(n M d d_v). The attention core (logits → softmax → ā, and its backward) is the only part with
a second, numba-compiled implementation (``refvit.jiang2024._kernels``); everything else here is shared by both backends.
``refvit.jiang2024.formulas`` writes the same gradients as the per-sample, per-token sums of docs/math.md §4.3, and the tests
prove the three (chain rule, paper form, finite differences) equal.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..jit import numba_usable
from ..primitives import (Evaluation, ModelOverflow, as_float_array, check_batch, check_evaluation_finite,  # noqa: F401
                          check_forward_finite, dloss_df, logistic_loss, logistic_loss_derivative, mean_loss,
                          overflow_scales, softmax)


class Params(NamedTuple):
    """Model parameters. Shapes: W_Q (d, d_h), W_K (d, d_h), W_V (d, d_v), w_O (d_v,). Gradients use the same type."""
    W_Q: np.ndarray
    W_K: np.ndarray
    W_V: np.ndarray
    w_O: np.ndarray


class Cache(NamedTuple):
    """What the forward pass keeps for the backward pass (and for the training history)."""
    Q: np.ndarray     # (n, M, d_h)  X W_Q, one query per token  (math 2.1)
    K: np.ndarray     # (n, M, d_h)  X W_K, one key per token    (math 2.1)
    v: np.ndarray     # (n, M)       value scores x_jᵀ W_V w_O  (math 2.2)
    Z: np.ndarray     # (n, M, M)    logits x_lᵀ W_Q W_Kᵀ x_j  (math 2.3)
    S: np.ndarray     # (n, M, M)    softmax over keys j of Z; rows sum to 1  (math 2.4)
    abar: np.ndarray  # (n, M)       column-mean attention ā_j = (1/M) Σ_l S[l, j]  (math 2.5)


# ---------------------------------------------------------------------------------------------------------------
# Input checks: every public entry point runs these once; the training loop does not repeat them per step.
# (The loss, softmax and array checks every setting shares are in ``refvit.primitives``.)
# ---------------------------------------------------------------------------------------------------------------

def check_params(params) -> Params:
    """Validate shapes (d, d_h), (d, d_h), (d, d_v), (d_v,) and finiteness; return float64 ``Params``."""
    if len(params) != 4:
        raise ValueError(f"params must be (W_Q, W_K, W_V, w_O), got {len(params)} arrays")
    p = Params(*(as_float_array(n, a, k) for n, a, k in zip(Params._fields, params, (2, 2, 2, 1))))
    d, d_h = p.W_Q.shape
    if p.W_K.shape != (d, d_h):
        raise ValueError(f"W_K must have the shape of W_Q {(d, d_h)}, got {p.W_K.shape}")
    if p.W_V.shape[0] != d:
        raise ValueError(f"W_V must have {d} rows like W_Q, got shape {p.W_V.shape}")
    if p.w_O.shape != (p.W_V.shape[1],):
        raise ValueError(f"w_O must have shape (d_v,) = ({p.W_V.shape[1]},), got {p.w_O.shape}")
    return p


def check_inputs(params, X, y=None):
    """Validate params, X (n, M, d) and, if given, y (n,) with entries ±1. Returns float64 copies as needed."""
    params = check_params(params)
    if y is None:
        return params, check_batch(X, params.W_Q.shape[0])
    return (params, *check_batch(X, params.W_Q.shape[0], y))


# ---------------------------------------------------------------------------------------------------------------
# Attention core, numpy version (the numba version in _kernels.py must give the same numbers)
# ---------------------------------------------------------------------------------------------------------------

def attention_forward(Q, K, v):
    """Q, K: (n, M, d_h), v: (n, M) -> Z, S: (n, M, M), abar: (n, M), f: (n,)."""
    Z = Q @ K.transpose(0, 2, 1)                # (n, M, M)  Z[l, j] = q_l · k_j       (math 2.3)
    return (Z, *attention_from_logits(Z, v))


def attention_from_logits(Z, v):
    """The forward after the logits: Z (n, M, M), v (n, M) -> S (n, M, M), abar (n, M), f (n,)."""
    M = Z.shape[1]
    S = softmax(Z)                              # (n, M, M)  softmax over keys j, for each query l  (math 2.4)
    abar = S.sum(axis=1) / M                    # (n, M)     ā_j = (1/M) Σ_l S[l, j]  (math 2.5)
    f = (abar * v).sum(axis=1)                  # (n,)       f = Σ_j ā_j v_j          (math 2.6)
    return S, abar, f


def attention_backward(df, S, v, Q, K):
    """Backward of ``attention_forward``: given df (n,), return dQ, dK (n, M, d_h) and dv (n, M)."""
    dZ, dv = logits_backward(df, S, v)
    # forward: Z = Q Kᵀ
    dQ = dZ @ K                                 # (n, M, d_h)  (math 4.10)
    dK = dZ.transpose(0, 2, 1) @ Q              # (n, M, d_h)  (math 4.10)
    return dQ, dK, dv


def logits_backward(df, S, v):
    """The backward down to the logits: df (n,), S (n, M, M), v (n, M) -> dZ (n, M, M), dv (n, M)."""
    M = S.shape[1]
    # forward: f = Σ_j ā_j v_j
    dv = df[:, None] * S.sum(axis=1) / M        # (n, M)     ∂f/∂v_j = ā_j  (math 4.2)
    # forward: f = (1/M) Σ_l Σ_j S[l, j] v_j,  so ∂f/∂S[l, j] = v_j / M for every query l
    dS = np.broadcast_to((df[:, None] * v / M)[:, None, :], S.shape)   # (math 4.5)
    # forward: S = softmax_j(Z), so dZ = S ⊙ (dS − Σ_k S[l, k] dS[l, k])   (softmax Jacobian-vector product)
    dZ = S * (dS - (S * dS).sum(axis=-1, keepdims=True))    # (n, M, M) (math 4.7); = df · G (math 4.8)
    return dZ, dv


def resolve_backend(backend: str) -> str:
    """"auto" -> "numba" when numba is installed and JIT is enabled, else "numpy"."""
    if backend == "auto":
        return "numba" if numba_usable() else "numpy"
    if backend not in ("numpy", "numba"):
        raise ValueError(f"unknown backend {backend!r} for the dense model; choose 'auto', 'numpy' or 'numba'")
    return backend


def attention_core(backend: str = "numpy"):
    """(attention_forward, attention_backward) of the chosen backend: "numpy", "numba" or "auto"."""
    if resolve_backend(backend) == "numba":
        from . import _kernels  # here, not at the top: importing it compiles nothing but loads numba (~0.3 s)
        return _kernels.attention_forward, _kernels.attention_backward
    return attention_forward, attention_backward


# ---------------------------------------------------------------------------------------------------------------
# Forward and backward of the whole model
# ---------------------------------------------------------------------------------------------------------------

def forward_cache(params: Params, X: np.ndarray, backend: str = "numpy"):
    """f (n,) and the ``Cache`` for X (n, M, d). Inputs are assumed checked (see ``check_inputs``)."""
    W_Q, W_K, W_V, w_O = params
    n, M, d = X.shape
    Xf = X.reshape(n * M, d)                    # (n M, d) all tokens as rows: one GEMM, not n small ones
    Q = (Xf @ W_Q).reshape(n, M, -1)            # (n, M, d_h)  (math 2.1)
    K = (Xf @ W_K).reshape(n, M, -1)            # (n, M, d_h)  (math 2.1)
    u = W_V @ w_O                               # (d,)   value direction u = W_V w_O  (math 2.2)
    v = (Xf @ u).reshape(n, M)                  # (n, M) value scores, without forming X W_V  (math 2.2)
    fwd, _ = attention_core(backend)
    Z, S, abar, f = fwd(Q, K, v)
    return f, Cache(Q, K, v, Z, S, abar)


def backward(df: np.ndarray, cache: Cache, params: Params, X: np.ndarray, backend: str = "numpy") -> Params:
    """Gradients of Σ_n df[n]·f[n] with respect to (W_Q, W_K, W_V, w_O), by the chain rule."""
    W_Q, W_K, W_V, w_O = params
    _, bwd = attention_core(backend)
    dQ, dK, dv = bwd(df, cache.S, cache.v, cache.Q, cache.K)
    n, M, d = X.shape
    Xf = X.reshape(n * M, d)                    # (n M, d)  all tokens as rows
    # forward: Q = X W_Q and K = X W_K, so dW = Xᵀ dQ summed over samples and tokens
    dW_Q = Xf.T @ dQ.reshape(n * M, -1)         # (d, d_h)  (math 4.11)
    dW_K = Xf.T @ dK.reshape(n * M, -1)         # (d, d_h)  (math 4.11)
    # forward: v = X u with u = W_V w_O, so du = Xᵀ dv, dW_V = du w_Oᵀ and dw_O = W_Vᵀ du
    du = Xf.T @ dv.reshape(n * M)               # (d,)  (math 4.3)
    return Params(dW_Q, dW_K, np.outer(du, w_O), W_V.T @ du)   # dW_V, dw_O (math 4.4)


def loss_grads_cache(params: Params, X: np.ndarray, y: np.ndarray, backend: str = "numpy"):
    """``Evaluation`` (loss, grads, f, cache) for checked inputs; the training loop's single call per step."""
    f, cache = forward_cache(params, X, backend)
    # forward: L = (1/n) Σ_i ℓ(y_i f_i), so dL/df_i = ℓ'(y_i f_i) y_i / n = c_i  (math 4.1)
    df = dloss_df(f, y)
    return Evaluation(mean_loss(f, y), backward(df, cache, params, X, backend), f, cache)


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------

def forward(params, X, backend: str = "numpy") -> np.ndarray:
    """Model output f for a batch. params: ``Params`` or 4-tuple; X: (n, M, d). Returns f: (n,)."""
    params, X = check_inputs(params, X)
    with np.errstate(over="ignore", invalid="ignore"):   # overflow is detected right below and named
        f, cache = forward_cache(params, X, backend)
    check_forward_finite(X, f, cache)
    return f


def loss_and_grads(params, X, y, backend: str = "numpy") -> tuple[float, Params]:
    """Mean logistic loss and its gradient for every block (w_O included, even when training freezes it).

    params: ``Params`` or 4-tuple; X: (n, M, d); y: (n,) in {±1}. Returns (loss: float, grads: Params).
    """
    params, X, y = check_inputs(params, X, y)
    with np.errstate(over="ignore", invalid="ignore"):   # overflow is detected right below and named
        loss, grads, f, cache = loss_grads_cache(params, X, y, backend)
    check_evaluation_finite(X, f, cache, loss, grads)
    return loss, grads
