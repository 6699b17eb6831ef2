"""The second setting's model over the non-zero coordinates of its tokens: the same f, cache and gradients as the
reference ``refvit.li2025.model``, in O(nnz·m_k) instead of O(n·L·d·m_k) per pass.

Every signal token is ±‖μ‖e₀ (one non-zero, coordinate 0) and a sparse noise token has s non-zeros (its support
S_i, ``LiDataset.support``; with feature noise also coordinate 0), docs/math.md (13.1)–(13.2). So the projections
Q = X W_Qᵀ, K = X W_Kᵀ, u = X v read only the columns of W_Q, W_K and v at those coordinates, and the gradients
Σ dQᵀ X, Σ dKᵀ X, Σ du·X are non-zero only there. ``SparseTokens`` holds the tokens in compressed-row form, built
once per data set; ``refvit.li2025._kernels`` does the two passes. Between them the attention itself (logits,
softmax, readout and its backward) is the reference's own code, ``model.attention_forward`` and
``model.attention_backward``: given the same Q, K and u the two paths agree to the bit there.

What differs is the order of the sums in the projections: the reference hands all d coordinates to BLAS (blocked,
with fused multiply-adds), the kernels add the ≤ s + 1 non-zero products one after the other. Both are exact up to
rounding, so f, the cache and the gradients agree to about 1e-15 relative (tests/test_li_sparse.py states the
tolerance and why). Letters as in ``refvit.li2025.model``: n samples, L tokens, d token dimension, m_k query/key
width, m_v value rows per class, R = n·L token rows, nnz non-zeros of X.
"""
from __future__ import annotations

import importlib.util
import os
from typing import NamedTuple

import numpy as np

from ..primitives import Evaluation, dloss_df, mean_loss
from .config import LiModelConfig
from .model import LiParams, attention_backward, attention_forward, value_direction, value_rows_backward


class SparseTokens(NamedTuple):
    """X (n, L, d) in compressed-row form: row r = i·L + l is token l of sample i."""
    indptr: np.ndarray    # (R + 1,) int64  row r's non-zeros are p in [indptr[r], indptr[r + 1])
    indices: np.ndarray   # (nnz,) int64    their coordinates, increasing within a row
    data: np.ndarray      # (nnz,) float64  their values
    shape: tuple          # (n, L, d)


def sparse_tokens(X: np.ndarray, support: np.ndarray) -> SparseTokens:
    """``SparseTokens`` of X (n, L, d), whose tokens are zero outside coordinate 0 and the noise support.

    support : (n, s) int, the sorted noise coordinates of each sample in [1, d−1] (``LiDataset.support``).
    The claim is checked (a ValueError if X has a non-zero elsewhere): X is read once, O(n·L·d).
    """
    X = np.asarray(X)
    if X.ndim != 3 or X.dtype != np.float64:
        raise ValueError(f"X must be a float64 array (n, L, d), got {X.dtype} of shape {X.shape}")
    n, L, d = X.shape
    support = np.asarray(support)
    if support.ndim != 2 or support.shape[0] != n or not np.issubdtype(support.dtype, np.integer):
        raise ValueError(f"support must be an integer array (n, s) = ({n}, s), got {support.dtype} "
                         f"of shape {support.shape}")
    if support.size and (support.min() < 1 or support.max() > d - 1 or np.any(np.diff(support, axis=1) <= 0)):
        raise ValueError(f"support rows must be increasing coordinates in [1, d-1] = [1, {d - 1}]")
    cols = np.concatenate([np.zeros((n, 1), dtype=np.int64), support.astype(np.int64)], axis=1)   # (n, s + 1)
    cols_tok = np.broadcast_to(cols[:, None, :], (n, L, cols.shape[1]))                            # (n, L, s + 1)
    vals = np.take_along_axis(X, cols_tok, axis=2)                                                 # (n, L, s + 1)
    keep = vals != 0.0                                # signal tokens keep coordinate 0 alone
    if np.count_nonzero(X) != np.count_nonzero(keep):
        raise ValueError("X has non-zero coordinates outside coordinate 0 and the noise support; "
                         "the sparse path needs the data's own support (use backend='numpy' otherwise)")
    counts = keep.reshape(n * L, -1).sum(axis=1)                                                   # (R,)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return SparseTokens(indptr, np.ascontiguousarray(cols_tok[keep]), np.ascontiguousarray(vals[keep]), (n, L, d))


def numba_usable() -> bool:
    """Whether the kernels are compiled: numba installed and JIT not disabled (numba itself is not loaded here)."""
    if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
        return False
    return importlib.util.find_spec("numba") is not None


def _kernels():
    """The numba kernels, imported when first used: importing them loads numba (~0.3 s)."""
    from . import _kernels as k
    return k


def sparse_forward_cache(params: LiParams, tokens: SparseTokens, cfg: LiModelConfig):
    """f (n,) and the ``LiCache`` of the reference ``forward_cache``, from ``SparseTokens``. Inputs assumed checked."""
    W_Q, W_K, W_V = (np.ascontiguousarray(a, dtype=np.float64) for a in params)
    n, L, _ = tokens.shape
    m_k = W_Q.shape[0]
    v = value_direction(W_V)                                   # (d,) the reference's own v, to the bit  (math 13.8)
    Q, K, u = _kernels().project(tokens.indptr, tokens.indices, tokens.data, W_Q, W_K, v)   # (R, m_k) ×2, (R,)
    return attention_forward(Q.reshape(n, L, m_k), K.reshape(n, L, m_k), u.reshape(n, L),
                             cfg.c(L), cfg.logit_scale)      # (math 13.7), (math 13.9)


def sparse_loss_grads_cache(params: LiParams, tokens: SparseTokens, y: np.ndarray, cfg: LiModelConfig) -> Evaluation:
    """``Evaluation`` (loss, grads, f, cache) of the reference ``loss_grads_cache``, from ``SparseTokens``.

    The gradients are dense arrays, as the training state is: W_Q, W_K (m_k, d) and W_V (2, m_v, d), zero outside
    the tokens' non-zero coordinates.
    """
    n, L, d = tokens.shape
    f, cache = sparse_forward_cache(params, tokens, cfg)
    g = dloss_df(f, y)                                          # (n,)  dL/df_i  (math 13.13)
    dQ, dK, du = attention_backward(g, cache, cfg.c(L), cfg.logit_scale)   # (n, L, m_k) ×2, (n, L)
    m_k = dQ.shape[2]
    # forward: Q = X W_Qᵀ, K = X W_Kᵀ, u = X v; so dW = Σ_r dQ_r x_rᵀ and dv = Σ_r du_r x_r, over non-zeros only
    dW_Q, dW_K, dv = _kernels().project_transpose(tokens.indptr, tokens.indices, tokens.data,
                                                  dQ.reshape(n * L, m_k), dK.reshape(n * L, m_k),
                                                  du.reshape(n * L), d)                   # (math 13.15, 13.19)
    return Evaluation(mean_loss(f, y), LiParams(dW_Q, dW_K, value_rows_backward(dv, cfg.m_v)), f, cache)
