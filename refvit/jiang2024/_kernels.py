"""Numba kernels for the attention core: the same contract and numbers as ``model.attention_forward/backward``, and
``span_step``, the per-sample work of a span-coordinate evaluation (``refvit.jiang2024.span``) in one pass. Both
build on the per-sample softmax (``_softmax_sample``) and its backward (``_backward_sample``), written once.

Kernel hygiene (numba docs): ``cache=True``, no ``fastmath`` (it changes bits and lets LLVM assume there is no NaN,
which would defeat the divergence guard), no globals, no RNG, float64 contiguous inputs (one specialization).
The loops run one sample at a time, serially: sweeps already use one process per core, and numba's default thread
pool may not be entered from two Python threads at once, which a caller's own thread pool would do. The (M, M)·(M,
d_h) products go to BLAS through ``np.dot`` (a strict scalar loop cannot be vectorized without fastmath and was 10x
slower); the softmax, ā and the softmax Jacobian are fused loops with no temporaries.

Without numba (or with NUMBA_DISABLE_JIT=1) ``njit`` below is an identity decorator and these run as plain Python,
slowly but with the same results; ``model.resolve_backend("auto")`` then picks the numpy path instead.
"""
from __future__ import annotations

import math

import numpy as np

from ..jit import njit


@njit(cache=True)
def _softmax_sample(Z, v, S, abar):
    """One sample: S = softmax over keys of Z (M, M), ā (M,) and f = Σ_j ā_j v_j (returned) (math 2.4-2.6)."""
    M = Z.shape[0]
    for j in range(M):
        abar[j] = 0.0
    for l in range(M):
        zmax = -math.inf
        for j in range(M):
            if Z[l, j] > zmax:
                zmax = Z[l, j]
        total = 0.0
        for j in range(M):
            e = math.exp(Z[l, j] - zmax)       # row max subtracted: no overflow (math 2.4, 3.5)
            S[l, j] = e
            total += e
        for j in range(M):
            S[l, j] /= total                   # s_{lj} (math 2.4)
            abar[j] += S[l, j]                 # Σ_l s_{lj} (math 2.5)
    f = 0.0
    for j in range(M):
        abar[j] /= M                           # ā_j (math 2.5)
        f += abar[j] * v[j]                    # f = Σ_j ā_j v_j (math 2.6)
    return f


@njit(cache=True)
def _from_logits(Z, v):
    n, M, _ = Z.shape
    S = np.empty((n, M, M))
    abar = np.zeros((n, M))
    f = np.zeros(n)
    for i in range(n):
        f[i] = _softmax_sample(Z[i], v[i], S[i], abar[i])
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
def _backward_sample(df, S, v, dZ, dv, dS):
    """One sample: dZ (M, M) and dv (M,) from df (a scalar), S (M, M), v (M,); dS (M,) is scratch (math 4.2-4.8)."""
    M = S.shape[0]
    for j in range(M):
        dS[j] = df * v[j] / M                  # ∂(df·f)/∂S[l, j], the same for every query l (math 4.5)
        dv[j] = 0.0
    for l in range(M):
        inner = 0.0                            # Σ_k S[l, k] dS[k] (math 4.7)
        for k in range(M):
            inner += S[l, k] * dS[k]
        for j in range(M):
            dZ[l, j] = S[l, j] * (dS[j] - inner)   # df · G[l, j] (math 4.7, 4.8), same ops as model.py
            dv[j] += S[l, j]                   # Σ_l S[l, j] (math 4.2)
    for j in range(M):
        dv[j] = df * dv[j] / M                 # dv_j = df ā_j (math 4.2)


@njit(cache=True)
def _logits_backward(df, S, v):
    n, M, _ = S.shape
    dZ = np.empty((n, M, M))
    dv = np.zeros((n, M))
    dS = np.empty(M)
    for i in range(n):
        _backward_sample(df[i], S[i], v[i], dZ[i], dv[i], dS)
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


# --- the span step (refvit.jiang2024.span): every per-sample operation of one evaluation in one pass ---------------

@njit(cache=True)
def span_step(QKW0, UcA, index, v, y, n_train, first, Q, K, Z, S, abar, f, dv, G):
    """One pass over the samples of the span step (docs/math.md (8.4), (2.3)-(2.6), (4.1)-(4.10), (8.5)), each
    sample while its rows are in cache; the sample loop of ``SpanObjective.value_and_grad``'s numpy path, fused.

    Inputs: QKW0, UcA (n_u, 2 d_h) U·[W_Q(0) | W_K(0)] and U_c·[A_Q | A_K] (UcA with no rows stands for A = 0);
    index (n, M) the unique token at each position (-1: a zero token, whose query and key are 0); v (n, M) value
    scores; y (n,) labels; n_train the N of the loss' 1/N.
    Forward, written into Q, K (n, M, d_h) (or (1, M, d_h): scratch reused by every sample, nothing kept), Z, S
    (n, M, M), abar (n, M) and f (n,). If G has rows, the backward too: dL/df_i = ℓ'(y_i f_i) y_i / N (math 4.1),
    dv (n, M), and G (n_u, 2 d_h) = Eᵀ[dQ | dK] with dQ_i = dZ_i K_i and dK_i = dZ_iᵀ Q_i (math 4.10, 8.5): a token's
    rows are added in position order, its first one (``first`` (n M,)) copied, zero tokens left out.
    """
    n, M = index.shape
    d_h = Q.shape[2]
    moved = UcA.shape[0] > 0
    backward = G.shape[0] > 0
    dZ = np.empty((M, M))
    dZt = np.empty((M, M))                       # contiguous transpose, so both products go to BLAS
    dS = np.empty(M)
    dQ = np.empty((M, d_h))
    dK = np.empty((M, d_h))
    for i in range(n):
        Qi = Q[i if Q.shape[0] > 1 else 0]
        Ki = K[i if K.shape[0] > 1 else 0]
        for l in range(M):                       # gather: the rows of the tokens of sample i (math 8.4)
            u = index[i, l]
            for k in range(d_h):
                if u < 0:
                    Qi[l, k] = 0.0
                    Ki[l, k] = 0.0
                elif moved:
                    Qi[l, k] = UcA[u, k] + QKW0[u, k]
                    Ki[l, k] = UcA[u, d_h + k] + QKW0[u, d_h + k]
                else:
                    Qi[l, k] = QKW0[u, k]
                    Ki[l, k] = QKW0[u, d_h + k]
        np.dot(Qi, Ki.T, Z[i])                   # (M, M) logits Z_i = Q_i K_iᵀ (math 2.3)
        f[i] = _softmax_sample(Z[i], v[i], S[i], abar[i])
        if not backward:
            continue
        z = y[i] * f[i]                          # e^z is inf past log(float64 max), where plain-Python math.exp raises
        ez = math.exp(z) if z <= 709.782712893384 else math.inf
        df = -1.0 / (1.0 + ez) * y[i] / n_train  # ℓ'(z) y / N, ℓ'(z) = -1/(1 + e^z) (math 3.2, 4.1)
        _backward_sample(df, S[i], v[i], dZ, dv[i], dS)
        for l in range(M):
            for j in range(M):
                dZt[j, l] = dZ[l, j]
        np.dot(dZ, Ki, dQ)                       # (M, d_h) dQ_i = dZ_i K_i (math 4.10)
        np.dot(dZt, Qi, dK)                      # (M, d_h) dK_i = dZ_iᵀ Q_i (math 4.10)
        for l in range(M):                       # scatter: Eᵀ[dQ | dK] (math 8.5)
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
