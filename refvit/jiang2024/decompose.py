"""Signal/noise decomposition of the trained weights (docs/math.md §7), computed two independent ways.

    W_V(t) = W_V(0) + [γ₊ μ₊/‖μ‖² + γ₋ μ₋/‖μ‖² + Σ_i ρ_i ξ_i/‖ξ_i‖² + Σ_{i,l≥3} ρ_{i,l} x_{i,l}/‖x_{i,l}‖²] w_Oᵀ/‖w_O‖²
                                                                                            (docs/math.md (7.4))
    W_Q(t) = W_Q(0) + Σ_u u α_uᵀ,    W_K(t) = W_K(0) + Σ_u u β_uᵀ    (u over the training tokens; docs/math.md (7.13))

(a) ``refvit.jiang2024.tracking.CoefficientTracker`` — *tracked*: wraps the objective of any backend and replays the GD
    recursions of docs/math.md (7.5), (7.6) (γ, ρ from ā and ℓ' of each step) and (7.14) (α_u, β_u from the
    per-token left factors of each step), using only that step's forward cache. It never reads the weights.
(b) ``recover`` — *recovered*: from saved W(0), W(t) and the training tokens alone, by solving the Gram system
    (TᵀT) b = Tᵀ ΔW of docs/math.md (7.16). We solve it through an SVD of the unit-norm tokens (docs/math.md (7.17)),
    which gives the same solution without squaring the condition number.

This module is the pure solver: weights (or coordinates) in, coefficients out. Both return a ``Decomposition``
indexed by the *unique non-zero* training tokens (``refvit.jiang2024.tokens.TokenSet``):
coef_u = ‖u‖²·b_u, where b is the token coordinate vector of (W_V(t) − W_V(0))·w_O(t) (docs/math.md (7.10)).

What can be recovered, and what cannot (never a silent wrong answer; docs/math.md §7.5, (7.18)):
- repeated tokens (μ± is in every image of its class) are one token with one coefficient: GD only ever sees their
  sum, and no weight can tell the copies apart. γ₊ is that coefficient of μ₊.
- zero tokens have no direction: they carry no coefficient (NaN in ρ_{i,l}) and never move any weight.
- linearly dependent tokens (rank deficiency; always when there are more than d of them): the weights determine
  the coefficients only modulo the null space of the token matrix. ``identifiable[u]`` says whether coef_u is
  unique (its unit vector has no null-space component); (b) reports NaN for the others, while (a) still has the
  exact coefficients GD accumulated — they reproduce W(t), but so would others.
- ``cond`` is the condition number of the unit-norm token matrix: recovered coefficients lose about log10(cond)
  digits to rounding on top of the ‖W(t)‖/‖W(t) − W(0)‖ lost in forming the difference.
- with w_O trained (docs/math.md §7.3): W_V(t) − W_V(0) is still exactly in the span, so A_V and
  b = A_V w_O(t) are exact; γ, ρ are no longer sums of per-step increments (each move of w_O re-weights them) and
  lose their monotonicity; u(t) − u(0) leaves the span by W_V(0)(w_O(t) − w_O(0)), reported as ``out_of_span``
  (docs/math.md (7.12)).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..gradcheck import rel_error
from .model import check_inputs, check_params
from .tokens import TokenSet, unique_tokens

# A unit token vector whose squared null-space component exceeds this is not identifiable (math 7.18). Independent
# tokens give
# ~1e-15 (rounding); a genuine dependency among k tokens gives components of order 1/k, far above.
NULL_TOL = 1e-8


class Decomposition(NamedTuple):
    """Coefficients of the weights on the unique non-zero training tokens (n_u of them).

    Equations: docs/math.md (7.13) alpha, beta; (7.9) A_V; (7.10) b, coef; (7.6) gamma_*, rho*; (7.19) residual;
    (7.12) out_of_span; (7.17), (7.18) cond, identifiable.

    source : "tracked", "recovered", "span", ...     message : what could not be recovered, and why.
    rank, cond : rank and condition number of the unit-norm token matrix.
    identifiable : (n_u,) bool, coef_u determined uniquely by the weights.
    token_index : (N, M) unique index of every training token, -1 for zero tokens.  token_norm2 : (n_u,) ‖u‖².
    alpha, beta : (n_u, d_h) rows α_u, β_u of W_Q(t) − W_Q(0) = Σ_u u α_uᵀ and of W_K (docs/math.md (7.13)).
    A_V : (n_u, d_v) W_V(t) − W_V(0) = Σ_u u A_V[u]ᵀ.     b : (n_u,) coordinates of (W_V(t) − W_V(0)) w_O(t).
    coef : (n_u,) ‖u‖² b_u.   gamma_plus, gamma_minus : coef of μ₊, μ₋.   rho : (N,) coef of ξ_i (token 1).
    rho_other : (N, M−2) coef of x_{i,l}, l ≥ 2 (NaN for zero tokens).
    residual : ‖ΔW − Uᵀ·coefficients‖/‖ΔW‖ for "W_Q", "W_K", "W_V" and "u" (ΔW_V w_O(t) vs Uᵀ b); NaN if the
        weights were not supplied.
    out_of_span : ‖W_V(0)(w_O(t) − w_O(0))‖ / ‖u(t) − u(0)‖, 0 with w_O frozen, NaN without weights.
    """
    source: str
    message: str
    rank: int
    cond: float
    identifiable: np.ndarray
    token_index: np.ndarray
    token_norm2: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    A_V: np.ndarray
    b: np.ndarray
    coef: np.ndarray
    gamma_plus: float
    gamma_minus: float
    rho: np.ndarray
    rho_other: np.ndarray
    residual: dict
    out_of_span: float

    def to_arrays(self, prefix: str = "") -> dict:
        """Flat dict of numpy arrays for ``refvit.io.save_npz`` (strings as 0-d unicode arrays)."""
        out = {}
        for k, v in self._asdict().items():
            if k == "residual":
                out.update({f"{prefix}residual_{n}": np.array(x) for n, x in v.items()})
            else:
                out[prefix + k] = np.array(v)
        return out


# ---------------------------------------------------------------------------------------------------------------
# Identifiability and the Gram-system solve
# ---------------------------------------------------------------------------------------------------------------

class TokenSolver:
    """Least-squares solves ΔW ≈ Uᵀ B on the unique tokens U (n_u, d), through the SVD of the unit tokens Ûᵀ.

    B = argmin ‖Uᵀ B − ΔW‖ with minimum norm, the solution of the Gram system (UUᵀ) B = U ΔW when U has full row
    rank (docs/math.md (7.15), (7.16)); the SVD avoids forming UUᵀ, whose condition number is the square of Uᵀ's.
    """

    def __init__(self, U: np.ndarray):
        self.norms = np.linalg.norm(U, axis=1)
        L, s, Rt = np.linalg.svd((U / self.norms[:, None]).T, full_matrices=False)   # Ûᵀ = L diag(s) Rt (math 7.17)
        # rank tolerance as numpy.linalg.matrix_rank (math 7.17)
        self.rank = int(np.sum(s > s[0] * max(U.shape) * np.finfo(float).eps))
        self.L, self.s, self.Rt = L[:, :self.rank], s[:self.rank], Rt[:self.rank]
        self.cond = float(s[0] / s[self.rank - 1])   # (math 7.17)
        # e_u lies in the row space of Rt iff Σ_j Rt[j, u]² = 1; the rest is its null-space component (math 7.18)
        null2 = 1.0 - np.sum(self.Rt ** 2, axis=0)
        self.identifiable = null2 < NULL_TOL         # (math 7.18)

    def solve(self, D: np.ndarray) -> np.ndarray:
        """B (n_u, ...) with Uᵀ B ≈ D (d, ...): min-norm least squares; rows ‖u‖·B[u] are the unit-token ones."""
        Bhat = self.Rt.T @ ((self.L.T @ D) / self.s.reshape((-1,) + (1,) * (D.ndim - 1)))   # (math 7.17)
        return Bhat / self.norms.reshape((-1,) + (1,) * (D.ndim - 1))


def _rel(residual: np.ndarray, ref: np.ndarray) -> float:
    n = np.linalg.norm(ref)
    return float(np.linalg.norm(residual) / n) if n > 0 else float(np.linalg.norm(residual))


def residuals(tokens: TokenSet, dec: Decomposition, params0, params) -> dict:
    """‖ΔW − Uᵀ·coefficients‖ / ‖ΔW‖ for W_Q, W_K, W_V and for u = (W_V(t) − W_V(0)) w_O(t) (math 7.19)."""
    p0, p = check_params(params0), check_params(params)
    U = tokens.U
    dV = p.W_V - p0.W_V
    return {
        "W_Q": _rel(p.W_Q - p0.W_Q - U.T @ dec.alpha, p.W_Q - p0.W_Q),
        "W_K": _rel(p.W_K - p0.W_K - U.T @ dec.beta, p.W_K - p0.W_K),
        "W_V": _rel(dV - U.T @ dec.A_V, dV),
        "u": _rel(dV @ p.w_O - U.T @ dec.b, dV @ p.w_O),
    }


def _out_of_span(params0, params) -> float:
    p0, p = check_params(params0), check_params(params)
    du = p.W_V @ p.w_O - p0.W_V @ p0.w_O
    return _rel(p0.W_V @ (p.w_O - p0.w_O), du)   # (math 7.12)


# ---------------------------------------------------------------------------------------------------------------
# Naming the coefficients: γ₊, γ₋, ρ_i, ρ_{i,l}
# ---------------------------------------------------------------------------------------------------------------

def _signal_rows(tokens: TokenSet, signals) -> tuple[int, int]:
    """Unique-token indices of μ₊ and μ₋ (-1 if absent from the training set or no signals given)."""
    if signals is None:
        return -1, -1
    out = []
    for mu in signals:
        mu = np.asarray(mu, dtype=np.float64)
        if mu.shape != tokens.U.shape[1:]:
            raise ValueError(f"signals must be two vectors of shape (d,) = {tokens.U.shape[1:]}, got {mu.shape}")
        hit = np.flatnonzero(np.all(tokens.U == mu, axis=1))
        out.append(int(hit[0]) if hit.size else -1)
    return out[0], out[1]


def name_coefficients(coef: np.ndarray, tokens: TokenSet, signals=None):
    """Split coef (..., n_u) into γ₊ (...), γ₋ (...), ρ (..., N) and ρ_other (..., N, M−2); NaN where undefined."""
    coef = np.asarray(coef, dtype=np.float64)
    padded = np.concatenate([coef, np.full(coef.shape[:-1] + (1,), np.nan)], axis=-1)   # index -1 -> NaN
    ip, im = _signal_rows(tokens, signals)
    gp = padded[..., ip] if ip >= 0 else np.full(coef.shape[:-1], np.nan)
    gm = padded[..., im] if im >= 0 else np.full(coef.shape[:-1], np.nan)
    idx = np.where(tokens.index < 0, coef.shape[-1], tokens.index)
    return gp, gm, padded[..., idx[:, 1]], padded[..., idx[:, 2:]]   # γ₊, γ₋, ρ, ρ_other (math 7.6)


def _message(tokens: TokenSet, solver: TokenSolver | None, signals, extra: str = "") -> str:
    notes = []
    n_zero = int(np.sum(tokens.index < 0))
    if n_zero:
        notes.append(f"{n_zero} zero tokens carry no coefficient (NaN in rho_other)")
    shared = tokens.counts[tokens.index[:, 1][tokens.index[:, 1] >= 0]] > 1
    if np.any(shared):
        notes.append(f"{int(shared.sum())} noise tokens xi_i also occur elsewhere: their rho_i is the coefficient "
                     "of the shared token")
    ip, im = _signal_rows(tokens, signals)
    if signals is not None and (ip < 0 or im < 0):
        notes.append("a signal vector does not occur among the training tokens: its gamma is NaN")
    if solver is not None:
        n_bad = int(np.sum(~solver.identifiable))
        if n_bad:
            notes.append(f"token set rank deficient (rank {solver.rank} < {tokens.n_unique} unique tokens"
                         f"{', more than d' if tokens.n_unique > tokens.U.shape[1] else ''}): {n_bad} coefficients "
                         "are not identifiable from the weights (NaN when recovered; tracked values are one exact "
                         "representation among many)")
        notes.append(f"token matrix condition number {solver.cond:.3g}")
    if extra:
        notes.append(extra)
    return "; ".join(notes) if notes else "all coefficients identifiable"


def _build(source, tokens, solver, alpha, beta, A_V, b, signals, residual, out_of_span, extra="") -> Decomposition:
    coef = b * np.sum(tokens.U ** 2, axis=1)    # coef_u = ‖u‖² b_u (math 7.10)
    gp, gm, rho, rho_other = name_coefficients(coef, tokens, signals)
    nan = float("nan")
    return Decomposition(
        source=source, message=_message(tokens, solver, signals, extra),
        rank=solver.rank if solver else -1, cond=solver.cond if solver else nan,
        identifiable=solver.identifiable if solver else np.ones(tokens.n_unique, dtype=bool),
        token_index=tokens.index, token_norm2=np.sum(tokens.U ** 2, axis=1),
        alpha=alpha, beta=beta, A_V=A_V, b=b, coef=coef, gamma_plus=float(gp), gamma_minus=float(gm),
        rho=rho, rho_other=rho_other, residual=residual, out_of_span=out_of_span)


# ---------------------------------------------------------------------------------------------------------------
# (b) Recovered from saved weights
# ---------------------------------------------------------------------------------------------------------------

def recover_from_deltas(tokens: TokenSet, dW_Q, dW_K, dW_V, w_O, *, source: str = "recovered", signals=None,
                        solver: TokenSolver | None = None) -> Decomposition:
    """Decompose given increments ΔW_Q, ΔW_K (d, d_h), ΔW_V (d, d_v) and the current w_O (d_v,) on ``tokens``.

    Non-identifiable coefficients (rank-deficient token set) are NaN; the residual is that of the min-norm
    least-squares solution, which is ~ rounding whenever ΔW lies in the token span.
    """
    solver = solver or TokenSolver(tokens.U)
    alpha, beta, A_V = solver.solve(dW_Q), solver.solve(dW_K), solver.solve(dW_V)   # (math 7.15)
    b = solver.solve(dW_V @ w_O)                       # the Gram system (math 7.15, 7.16) for ΔW_V w_O(t)
    U = tokens.U
    residual = {"W_Q": _rel(dW_Q - U.T @ alpha, dW_Q), "W_K": _rel(dW_K - U.T @ beta, dW_K),
                "W_V": _rel(dW_V - U.T @ A_V, dW_V), "u": _rel(dW_V @ w_O - U.T @ b, dW_V @ w_O)}   # (math 7.19)
    bad = ~solver.identifiable
    for a in (alpha, beta, A_V, b):
        a[bad] = np.nan                                # never report a coefficient the weights do not determine
    return _build(source, tokens, solver, alpha, beta, A_V, b, signals, residual, float("nan"))


def recover(params0, params, X, signals=None) -> Decomposition:
    """(b): the decomposition recovered from W(0) = ``params0``, W(t) = ``params`` and the training tokens X (N, M, d).

    signals : (μ₊, μ₋), each (d,), to name γ₊ and γ₋ (e.g. ``(data.mu_plus, data.mu_minus)``).
    """
    p0, X = check_inputs(params0, X)
    p = check_params(params)
    if any(a.shape != b.shape for a, b in zip(p0, p)):
        raise ValueError("params0 and params must have the same shapes (the same model before and after training)")
    tokens = unique_tokens(X)
    dec = recover_from_deltas(tokens, p.W_Q - p0.W_Q, p.W_K - p0.W_K, p.W_V - p0.W_V, p.w_O, signals=signals)
    return dec._replace(out_of_span=_out_of_span(p0, p))


def from_token_coordinates(tokens: TokenSet, A_Q, A_K, A_V, w_O, *, source: str, signals=None, params0=None,
                           params=None, identify: bool = True) -> Decomposition:
    """Decomposition from coefficient rows on the unique tokens (span trainer in the token basis, or tracker).

    Residuals are measured against (params0, params) when both are given. ``identify`` runs the SVD that says
    which coefficients the weights alone would determine (it does not change the values).
    """
    solver = TokenSolver(tokens.U) if identify else None
    b = A_V @ w_O                                  # (math 7.10)
    residual = {k: float("nan") for k in ("W_Q", "W_K", "W_V", "u")}
    oos = float("nan")
    dec = _build(source, tokens, solver, np.asarray(A_Q), np.asarray(A_K), np.asarray(A_V), b, signals, residual,
                 oos)
    if params0 is not None and params is not None:
        dec = dec._replace(residual=residuals(tokens, dec, params0, params), out_of_span=_out_of_span(params0, params))
    return dec


def compare(a: Decomposition, b: Decomposition) -> dict:
    """Relative differences max|a − b| / max(|a|, |b|) of coef, alpha, beta, A_V on the coefficients both define."""
    out = {}
    for k in ("coef", "alpha", "beta", "A_V"):
        x, y = getattr(a, k), getattr(b, k)
        ok = np.isfinite(x) & np.isfinite(y)
        out[k] = rel_error(np.where(ok, x, 0.0), np.where(ok, y, 0.0))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Summaries read from the weights: per-neuron inner products and the bilinear forms (math §7.4)
# ---------------------------------------------------------------------------------------------------------------

def summaries(params, X, signals) -> dict:
    """Per-neuron projections and attention logits between token types, from the weights (docs/math.md §7.4).

    params: ``Params``; X: (N, M, d) training images (token 0 = signal μ_{y_i}, token 1 = noise ξ_i);
    signals: (μ₊, μ₋). With W := W_Q W_Kᵀ, returns
        wq_signal, wk_signal (2, d_h): ⟨w_{Q,s}, μ±⟩, ⟨w_{K,s}, μ±⟩;   wq_noise, wk_noise (N, d_h): ⟨w_{·,s}, ξ_i⟩
        V_signal (2,): μ±ᵀ W_V w_O;   V_noise (N,): ξ_iᵀ W_V w_O   (docs/math.md (7.8))
        qk_signal (2,): μ±ᵀ W μ±; qk_sig_noise, qk_noise_sig (N,): μ_{y_i}ᵀ W ξ_i, ξ_iᵀ W μ_{y_i}  (docs/math.md (2.3))
        qk_noise (N, N): ξ_iᵀ W ξ_{i'} (diagonal: own noise; off-diagonal: cross-sample)
    """
    p, X = check_inputs(params, X)
    mu = np.stack([np.asarray(s, dtype=np.float64) for s in signals])          # (2, d)
    if mu.shape != (2, X.shape[2]):
        raise ValueError(f"signals must be (μ₊, μ₋), each of shape ({X.shape[2]},)")
    sig, xi = X[:, 0], X[:, 1]                                                 # (N, d) μ_{y_i}, ξ_i
    u = p.W_V @ p.w_O
    qs, ks = mu @ p.W_Q, mu @ p.W_K                                            # (2, d_h)
    qn, kn = xi @ p.W_Q, xi @ p.W_K                                            # (N, d_h)
    qi, ki = sig @ p.W_Q, sig @ p.W_K                                          # (N, d_h) per-sample signal
    return {
        "wq_signal": qs, "wk_signal": ks, "wq_noise": qn, "wk_noise": kn,
        "V_signal": mu @ u, "V_noise": xi @ u,
        "qk_signal": np.sum(qs * ks, axis=1),
        "qk_sig_noise": np.sum(qi * kn, axis=1), "qk_noise_sig": np.sum(qn * ki, axis=1),
        "qk_noise": qn @ kn.T,
    }


__all__ = ["Decomposition", "TokenSolver", "recover", "recover_from_deltas", "from_token_coordinates", "residuals",
           "compare", "name_coefficients", "summaries"]
