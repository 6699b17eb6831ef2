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
def _from_logits(Z, v):
    n, M, _ = Z.shape
    S = np.empty((n, M, M))
    abar = np.zeros((n, M))
    f = np.zeros(n)
    for i in range(n):
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
    return S, abar, f


@njit(cache=True)
def _attention_forward(Q, K, v):
    n, M, d_h = Q.shape
    Z = np.empty((n, M, M))
    for i in range(n):
        Z[i] = np.dot(Q[i], K[i].T)               # (M, M) logits: one BLAS call per sample (math 2.3)
    S, abar, f = _from_logits(Z, v)
    return Z, S, abar, f


@njit(cache=True)
def _logits_backward(df, S, v):
    n, M, _ = S.shape
    dZ = np.empty((n, M, M))
    dv = np.zeros((n, M))
    dS = np.empty(M)
    for i in range(n):
        for j in range(M):
            dS[j] = df[i] * v[i, j] / M           # ∂(df·f)/∂S[l, j], the same for every query l (math 4.5)
        for l in range(M):
            inner = 0.0                           # Σ_k S[l, k] dS[k] (math 4.7)
            for k in range(M):
                inner += S[i, l, k] * dS[k]
            for j in range(M):
                dZ[i, l, j] = S[i, l, j] * (dS[j] - inner)   # df · G[l, j] (math 4.7, 4.8), same ops as model.py
                dv[i, j] += S[i, l, j]            # Σ_l S[l, j] (math 4.2)
        for j in range(M):
            dv[i, j] = df[i] * dv[i, j] / M       # dv_j = df ā_j (math 4.2)
    return dZ, dv


@njit(cache=True)
def _attention_backward(df, S, v, Q, K):
    n, M, d_h = Q.shape
    dQ = np.empty((n, M, d_h))
    dK = np.empty((n, M, d_h))
    dZ, dv = _logits_backward(df, S, v)
    dZt = np.empty((M, M))                       # contiguous transpose, so both products go to BLAS
    for i in range(n):
        for l in range(M):
            for j in range(M):
                dZt[j, l] = dZ[i, l, j]
        dQ[i] = np.dot(dZ[i], K[i])               # dQ = dZ K (math 4.10)
        dK[i] = np.dot(dZt, Q[i])                 # dK = dZᵀ Q (math 4.10)
    return dQ, dK, dv


# --- the span step's products (refvit.jiang2024.span): the same BLAS calls as the numpy path, so the same bits ---

@njit(cache=True)
def span_logits(QKW0, UcA, index, Q, K, Z):
    """Q[i, l] | K[i, l] = row index[i, l] of QKW0 + UcA, the query | key of the token at (i, l) (0 where index is
    -1, a zero token), and Z[i] = Q[i] K[i]ᵀ, written into Q, K (n, M, d_h) and Z (n, M, M) (docs/math.md (8.4),
    (2.3)). QKW0, UcA: (n_u, 2 d_h) U·[W_Q(0) | W_K(0)] and U_c·[A_Q | A_K]; UcA with no rows stands for A = 0.
    Each row sum is the one ``QKW0 + UcA`` would give, and each sample is multiplied while its rows are in cache."""
    n, M = index.shape
    d_h = Q.shape[2]
    moved = UcA.shape[0] > 0
    for i in range(n):
        for l in range(M):
            u = index[i, l]
            for k in range(d_h):
                if u < 0:
                    Q[i, l, k] = 0.0
                    K[i, l, k] = 0.0
                elif moved:
                    Q[i, l, k] = UcA[u, k] + QKW0[u, k]
                    K[i, l, k] = UcA[u, d_h + k] + QKW0[u, d_h + k]
                else:
                    Q[i, l, k] = QKW0[u, k]
                    K[i, l, k] = QKW0[u, d_h + k]
        np.dot(Q[i], K[i].T, Z[i])                # one BLAS call per sample, as numpy's batched Q @ Kᵀ


@njit(cache=True)
def span_products(dZ, Q, K, index, first, G):
    """G[u] = [Σ dQ rows | Σ dK rows] over the occurrences (i, l) of token u, with dQ_i = dZ_i K_i and
    dK_i = dZ_iᵀ Q_i (docs/math.md (4.10), (8.5)): Eᵀ[dQ | dK], written into G (n_u, 2 d_h) without forming dQ, dK.

    Rows are added in position order (``first`` (n M,) marks each token's first position, which is copied), as
    ``TokenSet.scatter`` adds them: the same bits. Zero tokens (index -1) are left out."""
    n, M = index.shape
    d_h = Q.shape[2]
    dQ = np.empty((M, d_h))
    dK = np.empty((M, d_h))
    dZt = np.empty((M, M))                       # contiguous transpose, so both products go to BLAS
    for i in range(n):
        for l in range(M):
            for j in range(M):
                dZt[j, l] = dZ[i, l, j]
        np.dot(dZ[i], K[i], dQ)                   # (M, d_h) dQ_i = dZ_i K_i (math 4.10)
        np.dot(dZt, Q[i], dK)                     # (M, d_h) dK_i = dZ_iᵀ Q_i (math 4.10)
        for l in range(M):
            u = index[i, l]
            if u < 0:
                continue
            if first[i * M + l]:
                for k in range(d_h):
                    G[u, k] = dQ[l, k]
                    G[u, d_h + k] = dK[l, k]
            else:
                for k in range(d_h):
                    G[u, k] += dQ[l, k]
                    G[u, d_h + k] += dK[l, k]


def attention_forward(Q, K, v):
    """Numba version of ``model.attention_forward``: Q, K (n, M, d_h), v (n, M) -> Z, S, abar, f."""
    c = np.ascontiguousarray
    return _attention_forward(c(Q, dtype=np.float64), c(K, dtype=np.float64), c(v, dtype=np.float64))


def attention_backward(df, S, v, Q, K):
    """Numba version of ``model.attention_backward``: returns dQ, dK (n, M, d_h) and dv (n, M)."""
    c = np.ascontiguousarray
    return _attention_backward(c(df, dtype=np.float64), c(S, dtype=np.float64), c(v, dtype=np.float64),
                               c(Q, dtype=np.float64), c(K, dtype=np.float64))


def attention_from_logits(Z, v):
    """Numba version of ``model.attention_from_logits``: Z (n, M, M), v (n, M) -> S, abar, f."""
    c = np.ascontiguousarray
    return _from_logits(c(Z, dtype=np.float64), c(v, dtype=np.float64))


def logits_backward(df, S, v):
    """Numba version of ``model.logits_backward``: returns dZ (n, M, M) and dv (n, M)."""
    c = np.ascontiguousarray
    return _logits_backward(c(df, dtype=np.float64), c(S, dtype=np.float64), c(v, dtype=np.float64))
