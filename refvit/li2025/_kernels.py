"""Numba kernels of the second setting's sparse path (``refvit.li2025.sparse``): the token projections and their
transposes, over the non-zero coordinates of the tokens only.

Tokens are the R = n·L rows of X (n, L, d) in compressed-row form: the non-zeros of row r are ``data[p]`` at
coordinates ``indices[p]`` for p in [indptr[r], indptr[r+1]). A signal token has one non-zero (coordinate 0), a
sparse noise token s (s + 1 with feature noise), so a pass costs O(nnz·m_k) instead of the dense O(R·d·m_k).

Kernel hygiene (numba docs): ``cache=True``, no ``fastmath`` (it changes bits and lets LLVM assume there is no NaN,
which would defeat the trainer's divergence guard), no globals, no RNG, float64 / int64 contiguous inputs (one
specialization). The loops are serial and add in a fixed order (rows, then their non-zeros by coordinate), so a
kernel equals its ``.py_func`` to the bit. Without numba (or with NUMBA_DISABLE_JIT=1) ``njit`` is an identity
decorator and these run as plain Python, slowly but with the same results.
"""
from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - exercised only where numba is absent
    def njit(*args, **kwargs):
        """Stand-in that works both as ``@njit`` and as ``@njit(cache=True)``."""
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda fn: fn


@njit(cache=True)
def project(indptr, indices, data, W_Q, W_K, v):
    """Q, K (R, m_k) and u (R,) of the R token rows: Q[r] = W_Q x_r, K[r] = W_K x_r, u[r] = ⟨v, x_r⟩ (math 13.6,
    13.8), summed over the non-zeros of x_r by increasing coordinate."""
    R = indptr.shape[0] - 1
    m_k = W_Q.shape[0]
    Q = np.zeros((R, m_k))
    K = np.zeros((R, m_k))
    u = np.zeros(R)
    for r in range(R):
        for p in range(indptr[r], indptr[r + 1]):
            c = indices[p]
            x = data[p]
            for j in range(m_k):
                Q[r, j] += x * W_Q[j, c]
                K[r, j] += x * W_K[j, c]
            u[r] += x * v[c]
    return Q, K, u


@njit(cache=True)
def project_transpose(indptr, indices, data, dQ, dK, du, d):
    """dW_Q, dW_K (m_k, d) and dv (d,): Σ_r dQ[r] x_rᵀ, Σ_r dK[r] x_rᵀ and Σ_r du[r] x_r (math 13.15, 13.19).

    Zero outside the tokens' non-zero coordinates; a coordinate shared by several rows (coordinate 0 by every
    signal token, a noise coordinate drawn by two samples) adds their terms in row order.
    """
    R = indptr.shape[0] - 1
    m_k = dQ.shape[1]
    dW_Q = np.zeros((m_k, d))
    dW_K = np.zeros((m_k, d))
    dv = np.zeros(d)
    for r in range(R):
        for p in range(indptr[r], indptr[r + 1]):
            c = indices[p]
            x = data[p]
            for j in range(m_k):
                dW_Q[j, c] += x * dQ[r, j]
                dW_K[j, c] += x * dK[r, j]
            dv[c] += x * du[r]
    return dW_Q, dW_K, dv
