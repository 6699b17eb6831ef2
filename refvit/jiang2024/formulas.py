"""The four gradients of L_S written as the per-sample, per-token sums of docs/math.md §4.3 — the form a reader audits.

Deliberately independent of ``model.py``: no cache, no chain rule, explicit loops over samples i and token pairs
(l, j). Slow (O(N M² d d_h)); meant for tests and for reading. The paper does not give its own gradient formulas
(docs/math.md §4.3, last sentence); these are the forms docs/math.md §4 derives, which any correct statement
must equal up to notation.

Notation (docs/math.md §4.3): for sample i, s_{i,lj} = softmax_j(x_{i,l}ᵀ W_Q W_Kᵀ x_{i,j}), v_{i,j} = x_{i,j}ᵀ W_V w_O,
ā_{i,j} = (1/M) Σ_l s_{i,lj}, ℓ'_i = ℓ'(y_i f_i) = -1/(1 + e^{y_i f_i}) (docs/math.md (2.4), (2.2), (2.5), (3.2)).
"""
from __future__ import annotations

import numpy as np

from .model import Params, check_inputs


def _sample_terms(params: Params, Xi: np.ndarray):
    """For one image Xi (M, d): attention s (M, M), value scores v (M,), ā (M,), f (scalar), G (M, M)."""
    W_Q, W_K, W_V, w_O = params
    M = Xi.shape[0]
    z = np.array([[Xi[l] @ W_Q @ W_K.T @ Xi[j] for j in range(M)] for l in range(M)])  # x_lᵀ W_Q W_Kᵀ x_j (math 2.3)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    s = e / e.sum(axis=1, keepdims=True)                 # s_{lj}  (math 2.4)
    v = np.array([Xi[j] @ W_V @ w_O for j in range(M)])  # v_j     (math 2.2)
    abar = s.mean(axis=0)                                # ā_j     (math 2.5)
    f = abar @ v                                         # f       (math 2.6)
    # G_{lj} = (1/M) s_{lj} (v_j − Σ_k s_{lk} v_k) = ∂f/∂z_{lj}                                  (math 4.8)
    G = np.array([[s[l, j] * (v[j] - s[l] @ v) / M for j in range(M)] for l in range(M)])
    return s, v, abar, f, G


def gradients(params, X, y) -> Params:
    """∇L_S for (W_Q, W_K, W_V, w_O) by the sums of docs/math.md (4.15)–(4.18). X: (N, M, d), y: (N,).

    Returns ``Params``.
    """
    params, X, y = check_inputs(params, X, y)
    W_Q, W_K, W_V, w_O = params
    N, M, _ = X.shape
    dW_Q, dW_K = np.zeros_like(W_Q), np.zeros_like(W_K)
    dW_V, dw_O = np.zeros_like(W_V), np.zeros_like(w_O)
    for i in range(N):
        s, v, abar, f, G = _sample_terms(params, X[i])
        lp = -1.0 / (1.0 + np.exp(y[i] * f))                   # ℓ'_i  (math 3.2); tests stay in a safe range
        coef = lp * y[i] / N                                    # c_i = ℓ'_i y_i / N  (math 4.1)
        for j in range(M):
            # ∇_{w_O} L_S = (1/N) Σ_i ℓ'_i y_i Σ_j ā_{i,j} W_Vᵀ x_{i,j}                            (math 4.15)
            dw_O += coef * abar[j] * (W_V.T @ X[i, j])
            # ∇_{W_V} L_S = (1/N) Σ_i ℓ'_i y_i Σ_j ā_{i,j} x_{i,j} w_Oᵀ                            (math 4.16)
            dW_V += coef * abar[j] * np.outer(X[i, j], w_O)
        for l in range(M):
            for j in range(M):
                # ∇_{W_Q} L_S = (1/(NM)) Σ_i ℓ'_i y_i Σ_{l,j} s_{lj}(v_j − Σ_k s_{lk} v_k) x_l x_jᵀ W_K  (math 4.17)
                dW_Q += coef * G[l, j] * np.outer(X[i, l], X[i, j] @ W_K)
                # ∇_{W_K} L_S = (1/(NM)) Σ_i ℓ'_i y_i Σ_{l,j} s_{lj}(v_j − Σ_k s_{lk} v_k) x_j x_lᵀ W_Q  (math 4.18)
                dW_K += coef * G[l, j] * np.outer(X[i, j], X[i, l] @ W_Q)
    return Params(dW_Q, dW_K, dW_V, dw_O)
