"""The gradients of the second setting written as the per-row sums of docs/math.md §13.5 — the form a reader audits.

Deliberately independent of ``model.py``: no cache, no chain rule, no matrix backward; explicit loops over samples i,
token pairs (l, m), query/key rows s and value rows (j, r). Slow (O(n L² m_k d)); meant for tests and for reading.

Notation (docs/math.md §13.2–§13.5), per sample i: a_{lm} = ⟨w_{Q,·} x_l, w_{K,·} x_m⟩ summed over rows, logits λa,
S_{lm} = softmax_m(λa_{lm}), u_m = ⟨v, x_m⟩ with v = w̄_{V,+1} − w̄_{V,−1}, ū_l = Σ_m S_{lm} u_m,
f = c_L Σ_l ū_l, g_i = −y_i / (n (1 + e^{y_i f_i})), δ_{lm} = c_L λ S_{lm} (u_m − ū_l) = ∂f/∂a_{lm}.
"""
from __future__ import annotations

import numpy as np

from .config import LiModelConfig
from .model import LiParams, check_inputs


def sample_terms(params: LiParams, Xi: np.ndarray, cfg: LiModelConfig):
    """For one sample Xi (L, d): attention S (L, L), value scores u (L,), f (scalar), δ (L, L)."""
    W_Q, W_K, W_V = params
    L = Xi.shape[0]
    lam, c = cfg.logit_scale, cfg.c(L)
    m_k, m_v = W_Q.shape[0], W_V.shape[1]
    # a_{lm} = Σ_s ⟨w_{Q,s}, x_l⟩⟨w_{K,s}, x_m⟩                                                     (math 13.7)
    a = np.array([[sum((W_Q[s] @ Xi[l]) * (W_K[s] @ Xi[m]) for s in range(m_k)) for m in range(L)]
                  for l in range(L)])
    e = np.exp(lam * a - (lam * a).max(axis=1, keepdims=True))
    S = e / e.sum(axis=1, keepdims=True)                                # S_{lm}, rows sum to 1  (math 13.7)
    v = sum(W_V[0, r] for r in range(m_v)) / m_v - sum(W_V[1, r] for r in range(m_v)) / m_v   # (math 13.8)
    u = np.array([v @ Xi[m] for m in range(L)])                         # u_m = ⟨v, x_m⟩        (math 13.8)
    ubar = np.array([sum(S[l, m] * u[m] for m in range(L)) for l in range(L)])   # ū_l
    f = c * sum(ubar)                                                   # f = c_L Σ_l ū_l      (math 13.9)
    delta = np.array([[c * lam * S[l, m] * (u[m] - ubar[l]) for m in range(L)] for l in range(L)])   # (math 13.20)
    return S, u, f, delta


def gradients(params, X, y, cfg: LiModelConfig) -> LiParams:
    """∇L for (W_Q, W_K, W_V) by the sums of docs/math.md (13.21)–(13.23). X: (n, L, d), y: (n,).

    Returns ``LiParams`` with shapes (m_k, d), (m_k, d), (2, m_v, d).
    """
    params, X, y = check_inputs(params, X, cfg, y)
    W_Q, W_K, W_V = params
    n, L, _ = X.shape
    c = cfg.c(L)
    m_k, m_v = W_Q.shape[0], W_V.shape[1]
    dW_Q, dW_K, dW_V = np.zeros_like(W_Q), np.zeros_like(W_K), np.zeros_like(W_V)
    for i in range(n):
        S, u, f, delta = sample_terms(params, X[i], cfg)
        g = -y[i] / (n * (1.0 + np.exp(y[i] * f)))          # g_i = ℓ'(y_i f_i) y_i / n  (math 13.13); tests stay safe
        # ∇_{w_{V,j,r}} L = j (c_L/m_v) Σ_i g_i Σ_l Σ_m S_{lm} x_m, the same for every r            (math 13.21)
        for jj, j in enumerate((+1.0, -1.0)):
            for r in range(m_v):
                for l in range(L):
                    for m in range(L):
                        dW_V[jj, r] += j * (c / m_v) * g * S[l, m] * X[i, m]
        for s in range(m_k):
            for l in range(L):
                for m in range(L):
                    # ∇_{w_{Q,s}} L = Σ_i g_i Σ_{l,m} δ_{lm} ⟨w_{K,s}, x_m⟩ x_l                         (math 13.22)
                    dW_Q[s] += g * delta[l, m] * (W_K[s] @ X[i, m]) * X[i, l]
                    # ∇_{w_{K,s}} L = Σ_i g_i Σ_{l,m} δ_{lm} ⟨w_{Q,s}, x_l⟩ x_m                         (math 13.23)
                    dW_K[s] += g * delta[l, m] * (W_Q[s] @ X[i, l]) * X[i, m]
    return LiParams(dW_Q, dW_K, dW_V)


def private_coordinate_entry(params, X, y, cfg: LiModelConfig, i: int, k: int) -> LiParams:
    """The gradient entries on coordinate k when only sample i has a non-zero there (docs/math.md (13.24)).

    Returns LiParams of shapes (m_k,), (m_k,), (2, m_v): the k-th column of each gradient block, from sample i alone.
    With p the noise token of sample i and ξ = x_{i,p}: [∇w_{Q,s}]_k = g_i ξ_k Σ_m δ_{pm} ⟨w_{K,s}, x_m⟩,
    [∇w_{K,s}]_k = g_i ξ_k Σ_l δ_{lp} ⟨w_{Q,s}, x_l⟩, [∇w_{V,j,r}]_k = j (c_L/m_v) g_i ξ_k Σ_l S_{lp}.
    """
    params, X, y = check_inputs(params, X, cfg, y)
    W_Q, W_K, W_V = params
    n, L, _ = X.shape
    S, u, f, delta = sample_terms(params, X[i], cfg)
    g = -y[i] / (n * (1.0 + np.exp(y[i] * f)))                                       # (math 13.13)
    p = int(np.flatnonzero(X[i, :, k])[0])                                           # the token holding coordinate k
    xk = X[i, p, k]
    dq = np.array([g * xk * sum(delta[p, m] * (W_K[s] @ X[i, m]) for m in range(L)) for s in range(W_Q.shape[0])])
    dk = np.array([g * xk * sum(delta[l, p] * (W_Q[s] @ X[i, l]) for l in range(L)) for s in range(W_K.shape[0])])
    col = cfg.c(L) / W_V.shape[1] * g * xk * S[:, p].sum()
    dv = np.array([[col] * W_V.shape[1], [-col] * W_V.shape[1]])
    return LiParams(dq, dk, dv)                                                      # (math 13.24)
