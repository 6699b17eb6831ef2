"""The second setting's model over the non-zero coordinates of its tokens: the same f, cache and gradients as the
reference ``refvit.li2025.model``, in O(nnz·m_k) instead of O(n·L·d·m_k) per pass.

Every signal token is ±‖μ‖e₀ (one non-zero, coordinate 0) and a sparse noise token has s non-zeros (its support
S_i, ``LiDataset.support``; with feature noise also coordinate 0), docs/math.md (13.1)–(13.2). So the projections
Q = X W_Qᵀ, K = X W_Kᵀ, u = X v read only the columns of W_Q, W_K and v at those coordinates, and the gradients
Σ dQᵀ X, Σ dKᵀ X, Σ du·X are non-zero only there. ``SparseTokens`` holds the tokens in compressed-row form, built
once per data set; ``refvit.li2025._kernels`` runs the forward pass and the backward pass, each fused into one
numba loop nest. The loss and dL/df are the reference's primitives (``refvit.primitives``).

The two paths add the same products in another order: the reference hands all d coordinates to BLAS (blocked, with
fused multiply-adds, zeros included) and numpy, the kernels add the non-zero products one after the other. So f,
the cache and the gradients agree to rounding (~1e-15 relative; tests/test_li_sparse.py states its tolerance and
why), not to the bit; v at the coordinates used is summed in numpy's order and equals the reference's v exactly.
Letters as in ``refvit.li2025.model``: n samples, L tokens, d token dimension, m_k query/key width, m_v value rows
per class, R = n·L token rows, nnz non-zeros of X.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..primitives import Evaluation, dloss_df, mean_loss
from .config import LiModelConfig
from .model import LiCache, LiParams


class SparseTokens(NamedTuple):
    """X (n, L, d) in compressed-row form: row r = i·L + l is token l of sample i."""
    indptr: np.ndarray    # (R + 1,) int64  row r's non-zeros are p in [indptr[r], indptr[r + 1])
    indices: np.ndarray   # (nnz,) int64    their coordinates, increasing within a row
    data: np.ndarray      # (nnz,) float64  their values
    cols: np.ndarray      # (n_c,) int64    every coordinate some token uses, sorted
    local: np.ndarray     # (nnz,) int64    position of indices[p] in cols
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
    coords = np.concatenate([np.zeros((n, 1), dtype=np.int64), support.astype(np.int64)], axis=1)  # (n, s + 1)
    cols_tok = np.broadcast_to(coords[:, None, :], (n, L, coords.shape[1]))                        # (n, L, s + 1)
    vals = np.take_along_axis(X, cols_tok, axis=2)                                                 # (n, L, s + 1)
    keep = vals != 0.0                                # signal tokens keep coordinate 0 alone
    if np.count_nonzero(X) != np.count_nonzero(keep):
        raise ValueError("X has non-zero coordinates outside coordinate 0 and the noise support; "
                         "the sparse path needs the data's own support (use backend='numpy' otherwise)")
    counts = keep.reshape(n * L, -1).sum(axis=1)                                                   # (R,)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.ascontiguousarray(cols_tok[keep])
    used = np.unique(indices)
    return SparseTokens(indptr, indices, np.ascontiguousarray(vals[keep]), used,
                        np.searchsorted(used, indices).astype(np.int64), (n, L, d))


def _kernels():
    """The numba kernels, imported when first used: importing them loads numba (~0.3 s)."""
    from . import _kernels as k
    return k


def sparse_forward_cache(params: LiParams, tokens: SparseTokens, cfg: LiModelConfig):
    """f (n,) and the ``LiCache`` of the reference ``forward_cache``, from ``SparseTokens``. Inputs assumed checked."""
    W_Q, W_K, W_V = (np.ascontiguousarray(a, dtype=np.float64) for a in params)
    n, L, _ = tokens.shape
    k = _kernels()
    G = k.gather(W_Q, W_K, W_V, tokens.cols)                   # (n_c, 2 m_k + 1) W_Q, W_K, v at the coordinates used
    Q, K, u, Z, S, f = k.forward(tokens.indptr, tokens.local, tokens.data, G, n, L, float(cfg.c(L)),
                                 float(cfg.logit_scale))                   # (math 13.6)–(13.9)
    return f, LiCache(Q, K, u, Z, S)


def sparse_loss_grads_cache(params: LiParams, tokens: SparseTokens, y: np.ndarray, cfg: LiModelConfig) -> Evaluation:
    """``Evaluation`` (loss, grads, f, cache) of the reference ``loss_grads_cache``, from ``SparseTokens``.

    The gradients are dense arrays, as the training state is: W_Q, W_K (m_k, d) and W_V (2, m_v, d), zero outside
    the tokens' non-zero coordinates. The loss and dL/df are the reference's own primitives.
    """
    n, L, d = tokens.shape
    f, cache = sparse_forward_cache(params, tokens, cfg)
    g = dloss_df(f, y)                                          # (n,)  dL/df_i  (math 13.13)
    grads = _kernels().backward(tokens.indptr, tokens.indices, tokens.data, g, cache.Q, cache.K, cache.u, cache.S,
                                float(cfg.c(L)), float(cfg.logit_scale), d, cfg.m_v)   # (math 13.14)–(13.19)
    return Evaluation(mean_loss(f, y), LiParams(*grads), f, cache)       # loss (math 13.12)
