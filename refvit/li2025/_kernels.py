"""Numba kernels of the second setting's sparse path (``refvit.li2025.sparse``): the forward pass and the backward
pass of ``refvit.li2025.model`` over the non-zero coordinates of the tokens, each fused into one loop nest.

Tokens are the R = n·L rows of X (n, L, d) in compressed-row form: the non-zeros of row r = i·L + l are ``data[p]``
at coordinates ``indices[p]`` for p in [indptr[r], indptr[r+1]); ``cols`` lists the coordinates used by any token,
sorted, and ``local[p]`` is the position of ``indices[p]`` in ``cols``. A signal token has one non-zero (coordinate
0), a sparse noise token s (s + 1 with feature noise), so a pass costs O(nnz·m_k + n·L²·m_k) instead of the dense
O(n·L·d·m_k); the gradients are still written as dense (m_k, d) and (2, m_v, d) arrays, the training state's shape.

Kernel hygiene (numba docs): ``cache=True``, no ``fastmath`` (it changes bits and lets LLVM assume there is no NaN,
which would defeat the trainer's divergence guard), no globals, no RNG, float64 / int64 contiguous inputs (one
specialization). The loops are serial and add in a fixed order, so a kernel equals its ``.py_func`` to the bit.
Without numba (or with NUMBA_DISABLE_JIT=1) ``njit`` is an identity decorator and these run as plain Python,
slowly but with the same results.
"""
from __future__ import annotations

import math

import numpy as np

from ..jit import njit


@njit(cache=True)
def value_at(W_V, cols):
    """v[c] = mean_r W_V[0, r, c] − mean_r W_V[1, r, c] for c in cols (math 13.8), (len(cols),).

    Summed over r in row order from row 0 and then divided by m_v, as numpy's mean over axis 0 does, so the values
    equal ``model.value_direction(W_V)[cols]`` to the bit.
    """
    m_v = W_V.shape[1]
    v = np.empty(cols.shape[0])
    for k in range(cols.shape[0]):
        c = cols[k]
        a = W_V[0, 0, c]
        b = W_V[1, 0, c]
        for r in range(1, m_v):
            a += W_V[0, r, c]
            b += W_V[1, r, c]
        v[k] = a / m_v - b / m_v
    return v


@njit(cache=True)
def gather(W_Q, W_K, W_V, cols):
    """G (len(cols), 2 m_k + 1): row k holds W_Q[:, c], W_K[:, c] and v[c] for c = cols[k], so that the forward
    pass reads one contiguous row per non-zero instead of 2 m_k + 2 m_v strided entries."""
    m_k = W_Q.shape[0]
    G = np.empty((cols.shape[0], 2 * m_k + 1))
    for k in range(cols.shape[0]):
        c = cols[k]
        for j in range(m_k):
            G[k, j] = W_Q[j, c]
            G[k, m_k + j] = W_K[j, c]
    G[:, 2 * m_k] = value_at(W_V, cols)
    return G


@njit(cache=True)
def forward(indptr, local, data, G, n, L, c_L, lam):
    """Q, K (n, L, m_k), u (n, L), Z, S (n, L, L) and f (n,) of ``model.forward_cache``; G from ``gather``."""
    m_k = (G.shape[1] - 1) // 2
    Q = np.zeros((n, L, m_k))
    K = np.zeros((n, L, m_k))
    u = np.zeros((n, L))
    Z = np.empty((n, L, L))
    S = np.empty((n, L, L))
    f = np.zeros(n)
    for i in range(n):
        for l in range(L):
            r = i * L + l
            for p in range(indptr[r], indptr[r + 1]):
                g = G[local[p]]                        # the columns of W_Q, W_K and v at coordinate indices[p]
                x = data[p]
                for j in range(m_k):
                    Q[i, l, j] += x * g[j]             # Q_l = W_Q x_l  (math 13.6)
                    K[i, l, j] += x * g[m_k + j]       # K_l = W_K x_l  (math 13.6)
                u[i, l] += x * g[2 * m_k]              # u_l = ⟨v, x_l⟩  (math 13.8)
        total_f = 0.0
        for l in range(L):
            zmax = -math.inf
            for m in range(L):
                z = 0.0
                for j in range(m_k):
                    z += Q[i, l, j] * K[i, m, j]
                Z[i, l, m] = lam * z                   # Z[l, m] = λ⟨Q_l, K_m⟩  (math 13.7)
                if Z[i, l, m] > zmax:
                    zmax = Z[i, l, m]
            total = 0.0
            for m in range(L):
                e = math.exp(Z[i, l, m] - zmax)        # row max subtracted: no overflow
                S[i, l, m] = e
                total += e
            for m in range(L):
                S[i, l, m] /= total                    # softmax over keys m  (math 13.7)
                total_f += S[i, l, m] * u[i, m]
        f[i] = c_L * total_f                           # f = c_L Σ_l Σ_m S[l, m] u_m  (math 13.9)
    return Q, K, u, Z, S, f


@njit(cache=True)
def backward(indptr, indices, data, df, Q, K, u, S, c_L, lam, d, m_v):
    """dW_Q, dW_K (m_k, d) and dW_V (2, m_v, d) of Σ_i df[i]·f[i], as ``model.backward``, line by line."""
    n, L, m_k = Q.shape
    dW_Q = np.zeros((m_k, d))
    dW_K = np.zeros((m_k, d))
    dv = np.zeros(d)
    dS = np.empty(L)
    dZ = np.empty((L, L))
    dQ = np.empty(m_k)
    dK = np.empty(m_k)
    for i in range(n):
        for m in range(L):
            dS[m] = df[i] * c_L * u[i, m]              # dS[l, m] = df c_L u_m, the same for every l  (math 13.16)
        for l in range(L):
            inner = 0.0
            for k in range(L):
                inner += S[i, l, k] * dS[k]
            for m in range(L):
                dZ[l, m] = S[i, l, m] * (dS[m] - inner)   # softmax Jacobian-vector product  (math 13.17)
        for l in range(L):
            r = i * L + l
            col_sum = 0.0
            for k in range(L):
                col_sum += S[i, k, l]
            du = df[i] * c_L * col_sum                 # du_l = df c_L Σ_k S[k, l]  (math 13.14)
            for j in range(m_k):
                a = 0.0
                b = 0.0
                for m in range(L):
                    a += dZ[l, m] * K[i, m, j]
                    b += dZ[m, l] * Q[i, m, j]
                dQ[j] = lam * a                        # dQ = λ dZ K  (math 13.18)
                dK[j] = lam * b                        # dK = λ dZᵀ Q  (math 13.18)
            for p in range(indptr[r], indptr[r + 1]):
                col = indices[p]
                x = data[p]
                for j in range(m_k):
                    dW_Q[j, col] += dQ[j] * x          # dW_Q = Σ dQ_l x_lᵀ  (math 13.19)
                    dW_K[j, col] += dK[j] * x          # dW_K = Σ dK_l x_lᵀ  (math 13.19)
                dv[col] += du * x                      # dv = Σ du_l x_l  (math 13.15)
    plus = np.empty(d)
    minus = np.empty(d)
    for k in range(d):
        plus[k] = dv[k] / m_v                          # every row of a class gets ±dv/m_v  (math 13.15)
        minus[k] = -dv[k] / m_v
    dW_V = np.empty((2, m_v, d))
    for r in range(m_v):
        dW_V[0, r] = plus
        dW_V[1, r] = minus
    return dW_Q, dW_K, dW_V
