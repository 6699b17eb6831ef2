"""Numba kernels for the attention core: the same contract and numbers as ``model.attention_forward/backward``.

Kernel hygiene (numba docs): ``cache=True``, no ``fastmath`` (it changes bits and lets LLVM assume there is no NaN,
which would defeat the divergence guard), no globals, no RNG, float64 contiguous inputs (one specialization).
The loops run one sample at a time and write only that sample's slice, so a ``prange`` over samples would be
race-free; we keep them serial because sweeps already use one process per core. The (M, M)·(M, d_h) products go
to BLAS through ``np.dot`` (a strict scalar loop cannot be vectorized without fastmath and was 10x slower); the
softmax, ā and the softmax Jacobian are fused loops with no temporaries.

Without numba (or with NUMBA_DISABLE_JIT=1) ``njit`` below is an identity decorator and these run as plain Python,
slowly but with the same results; ``model.resolve_backend("auto")`` then picks the numpy path instead.
"""
from __future__ import annotations

import math

import numpy as np

from ..jit import njit


@njit(cache=True)
def _attention_forward(Q, K, v):
    n, M, d_h = Q.shape
    Z = np.empty((n, M, M))
    S = np.empty((n, M, M))
    abar = np.zeros((n, M))
    f = np.zeros(n)
    for i in range(n):
        Z[i] = np.dot(Q[i], K[i].T)               # (M, M) logits: one BLAS call per sample (math 2.3)
        for l in range(M):
            zmax = -math.inf
            for j in range(M):
                if Z[i, l, j] > zmax:
                    zmax = Z[i, l, j]
            total = 0.0
            for j in range(M):
                e = math.exp(Z[i, l, j] - zmax)   # row max subtracted: no overflow (math 2.4, 3.5)
                S[i, l, j] = e
                total += e
            for j in range(M):
                S[i, l, j] /= total                # s_{lj} (math 2.4)
                abar[i, j] += S[i, l, j]           # Σ_l s_{lj} (math 2.5)
        for j in range(M):
            abar[i, j] /= M                        # ā_j (math 2.5)
            f[i] += abar[i, j] * v[i, j]           # f = Σ_j ā_j v_j (math 2.6)
    return Z, S, abar, f


@njit(cache=True)
def _attention_backward(df, S, v, Q, K):
    n, M, d_h = Q.shape
    dQ = np.empty((n, M, d_h))
    dK = np.empty((n, M, d_h))
    dv = np.zeros((n, M))
    dZ = np.empty((M, M))
    dZt = np.empty((M, M))                       # contiguous transpose, so both products go to BLAS
    dS = np.empty(M)
    for i in range(n):
        for j in range(M):
            dS[j] = df[i] * v[i, j] / M           # ∂(df·f)/∂S[l, j], the same for every query l (math 4.5)
        for l in range(M):
            inner = 0.0                           # Σ_k S[l, k] dS[k] (math 4.7)
            for k in range(M):
                inner += S[i, l, k] * dS[k]
            for j in range(M):
                g = S[i, l, j] * (dS[j] - inner)  # df · G[l, j] (math 4.7, 4.8), same ops as model.py
                dZ[l, j] = g
                dZt[j, l] = g
                dv[i, j] += S[i, l, j]            # Σ_l S[l, j] (math 4.2)
        for j in range(M):
            dv[i, j] = df[i] * dv[i, j] / M       # dv_j = df ā_j (math 4.2)
        dQ[i] = np.dot(dZ, K[i])                  # dQ = dZ K (math 4.10)
        dK[i] = np.dot(dZt, Q[i])                 # dK = dZᵀ Q (math 4.10)
    return dQ, dK, dv


def attention_forward(Q, K, v):
    """Numba version of ``model.attention_forward``: Q, K (n, M, d_h), v (n, M) -> Z, S, abar, f."""
    c = np.ascontiguousarray
    return _attention_forward(c(Q, dtype=np.float64), c(K, dtype=np.float64), c(v, dtype=np.float64))


def attention_backward(df, S, v, Q, K):
    """Numba version of ``model.attention_backward``: returns dQ, dK (n, M, d_h) and dv (n, M)."""
    c = np.ascontiguousarray
    return _attention_backward(c(df, dtype=np.float64), c(S, dtype=np.float64), c(v, dtype=np.float64),
                               c(Q, dtype=np.float64), c(K, dtype=np.float64))
