"""The gradients of the third setting written as the per-sample sums of docs/math.md §16.5 — the form a reader audits.

Deliberately independent of ``model.py``: no cache, no chain rule, no softmax Jacobian; explicit loops over samples i
and tokens m. Slow (O(n M d)); meant for tests and for reading.

Notation (docs/math.md §16.2–§16.5), per sample i: scores Z_m = ⟨p, x_m⟩, attention s_m = softmax_m(Z),
u_m = ⟨v, x_m⟩, ū = Σ_m s_m u_m, f = ū, g_i = ℓ'(y_i f_i) y_i / n = −y_i / (n (1 + e^{y_i f_i})).
"""
from __future__ import annotations

import numpy as np

from .config import MagenModelConfig
from .model import MagenParams, MagenQKParams, check_inputs


def sample_terms(p: np.ndarray, v: np.ndarray, Xi: np.ndarray):
    """For one sample Xi (M, d) and prompt p: attention s (M,), value scores u (M,), ū (scalar) = f."""
    M = Xi.shape[0]
    z = np.array([p @ Xi[m] for m in range(M)])                        # Z_m = ⟨p, x_m⟩        (math 16.7)
    e = np.exp(z - z.max())
    s = e / e.sum()                                                    # s_m                   (math 16.7)
    u = np.array([v @ Xi[m] for m in range(M)])                        # u_m = ⟨v, x_m⟩        (math 16.8)
    ubar = sum(s[m] * u[m] for m in range(M))                          # ū = f                 (math 16.9)
    return s, u, ubar


def gradients(params, X, y, cfg: MagenModelConfig):
    """∇L by the sums of docs/math.md (16.18)–(16.20). X: (n, M, d), y: (n,). Returns the form's params type."""
    params, X, y = check_inputs(params, X, cfg, y)
    n, M, d = X.shape
    if cfg.form == "prompt":
        p, v = params
    else:
        W_Q, W_K, q, v = params
        p = sum(W_K[h] * sum(W_Q[h, k] * q[k] for k in range(d)) for h in range(W_Q.shape[0]))   # (math 16.6)
    grad_p, grad_v = np.zeros(d), np.zeros(d)
    grad_WQ = grad_WK = grad_q = None
    if cfg.form == "query":
        grad_WQ, grad_WK, grad_q = np.zeros_like(W_Q), np.zeros_like(W_K), np.zeros(d)
        a = W_Q @ q
    for i in range(n):
        s, u, f = sample_terms(p, v, X[i])
        g = -y[i] / (n * (1.0 + np.exp(y[i] * f)))          # g_i = ℓ'(y_i f_i) y_i / n  (math 16.12); tests stay safe
        for m in range(M):
            # ∇_v L = Σ_i g_i Σ_m s_im x_im                                                  (math 16.18)
            grad_v += g * s[m] * X[i, m]
            # ∇_p L = Σ_i g_i Σ_m s_im (u_im − ū_i) x_im                                      (math 16.19)
            grad_p += g * s[m] * (u[m] - f) * X[i, m]
            if cfg.form == "query":
                c = g * s[m] * (u[m] - f)
                # ∇_{W_K} = Σ c_im (W_Q q) x_imᵀ, ∇_{W_Q} = Σ c_im (W_K x_im) qᵀ,
                # ∇_q = Σ c_im W_Qᵀ W_K x_im                                                 (math 16.20)
                grad_WK += c * np.outer(a, X[i, m])
                grad_WQ += c * np.outer(W_K @ X[i, m], q)
                grad_q += c * (W_Q.T @ (W_K @ X[i, m]))
    if cfg.form == "prompt":
        return MagenParams(grad_p, grad_v)
    return MagenQKParams(grad_WQ, grad_WK, grad_q, grad_v)


def first_gd_step(X, y, lr: float) -> MagenParams:
    """One GD step of step size η from p = v = 0 in closed form (docs/math.md (16.21)): the attention is uniform,
    f = 0 and ℓ'(0) = −1/2, so p₁ = 0 and v₁ = (η / (2nM)) Σ_i y_i Σ_m x_im. X: (n, M, d), y: (n,)."""
    X = np.asarray(X, dtype=np.float64)
    n, M, d = X.shape
    v1 = np.zeros(d)
    for i in range(n):
        for m in range(M):
            v1 += lr * y[i] * X[i, m] / (2.0 * n * M)
    return MagenParams(np.zeros(d), v1)
