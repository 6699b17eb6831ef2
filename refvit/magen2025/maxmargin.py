"""The maximum-margin interpolator of the prompt form (docs/math.md (17.5)–(17.8)), and its certificate.

    minimize ½‖(p, v)‖²  subject to  y_i f(X_i; p, v) ≥ 1 for every training sample i          (math 17.5)

The problem is not convex (f is a softmax in p), so a solution is certified, not assumed: ``kkt`` measures its
primal feasibility, the stationarity residual θ = Σ_i λ_i y_i ∇f_i(θ) with λ ≥ 0 found by non-negative least squares,
and the complementary slackness λ_i (y_i f_i − 1) = 0 (math 17.6). ``max_margin`` solves the problem with SLSQP from
several starts and keeps the smallest feasible norm; the spread of the norms the starts reach is reported beside it.

Why the solver runs in k ≤ nM dimensions: every ∇f_i lies in the span of the training tokens (math 17.7), and the
part of (p, v) orthogonal to that span changes no training output, so a solution never has one. With an orthonormal
basis B (d, k) of the span, p = B a and v = B b, and the problem in (a, b) ∈ ℝ^{2k} is the same problem.

Shapes: n samples, M tokens, d token dimension, k span dimension.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize, nnls

from ..primitives import check_batch
from .model import MagenParams, forward_cache

ACTIVE_TOL = 1e-6          # a constraint with y_i f_i − 1 below this counts as active (SLSQP's ftol is 1e-10)


def sample_grads(p: np.ndarray, v: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f (n,), ∇_p f_i (n, d) and ∇_v f_i (n, d) for X (n, M, d): the rows of the constraints' Jacobian.

    ∇_v f_i = Σ_m s_im x_im and ∇_p f_i = Σ_m s_im (u_im − ū_i) x_im (docs/math.md (17.7); (16.13)–(16.16) with
    df = e_i)."""
    f, cache = forward_cache(MagenParams(p, v), X)
    S, u = cache.S, cache.u                                              # (n, M)
    Jv = np.einsum("nm,nmd->nd", S, X)                                   # (n, d)  (math 17.7)
    Jp = np.einsum("nm,nmd->nd", S * (u - f[:, None]), X)               # (n, d)  ū_i = f_i  (math 17.7)
    return f, Jp, Jv


class KKT(NamedTuple):
    """The certificate of docs/math.md (17.6) at θ = (p, v), each relative so that 0 is exact.

    margin : min_i y_i f_i (≥ 1 when feasible).  feasibility : max(0, 1 − margin).
    stationarity : ‖θ − Σ_i λ_i y_i ∇f_i‖ / ‖θ‖ with λ ≥ 0 by non-negative least squares over all constraints.
    slackness : Σ_i λ_i |y_i f_i − 1| / Σ_i λ_i (0 when λ lives on the active constraints only).
    n_active : constraints with y_i f_i − 1 < ``ACTIVE_TOL``.   lam : (n,) the multipliers.
    """
    margin: float
    feasibility: float
    stationarity: float
    slackness: float
    n_active: int
    lam: np.ndarray


def kkt(p: np.ndarray, v: np.ndarray, X, y) -> KKT:
    """The KKT certificate of (p, v) for the training set X (n, M, d), y (n,) (docs/math.md (17.6))."""
    X, y = check_batch(X, np.asarray(v).shape[0], y)
    p, v = np.asarray(p, dtype=np.float64), np.asarray(v, dtype=np.float64)
    f, Jp, Jv = sample_grads(p, v, X)
    G = y[:, None] * np.hstack([Jp, Jv])                                # (n, 2d)  rows y_i ∇f_i
    theta = np.concatenate([p, v])                                       # (2d,)
    lam, resid = nnls(G.T, theta, maxiter=50 * G.shape[0])              # min ‖Gᵀλ − θ‖, λ ≥ 0
    gap = y * f - 1.0                                                    # (n,)  ≥ 0 when feasible
    norm = float(np.linalg.norm(theta))
    return KKT(float(gap.min() + 1.0), float(max(0.0, -gap.min())), resid / norm if norm else float("nan"),
               float(lam @ np.abs(gap) / lam.sum()) if lam.sum() > 0 else float("nan"),
               int(np.sum(gap < ACTIVE_TOL)), lam)


def span_basis(X: np.ndarray) -> np.ndarray:
    """B (d, k): an orthonormal basis of the span of the tokens of X (n, M, d), k = its rank (docs/math.md (17.7))."""
    T = X.reshape(-1, X.shape[-1])                                       # (nM, d)
    U, s, _ = np.linalg.svd(T.T, full_matrices=False)                   # (d, nM)
    return U[:, s > s[0] * max(T.shape) * np.finfo(float).eps]


class MaxMargin(NamedTuple):
    """The best start's solution, its certificate and the agreement of the starts (docs/math.md (17.8)).

    p, v (d,); norm = ‖(p, v)‖; kkt : ``KKT``; norms (n_starts,) the norm each start reached, NaN where the
    solver failed or ended infeasible; n_ok : starts that ended feasible and converged; success : the best one did.
    """
    p: np.ndarray
    v: np.ndarray
    norm: float
    kkt: KKT
    norms: np.ndarray
    n_ok: int
    success: bool


def _starts(Xr: np.ndarray, y: np.ndarray, init: list, rng: np.random.Generator, n_random: int) -> list:
    """Starting points in the reduced coordinates (2k,): p = 0 with the least-norm v of y_i vᵀx̄_i = 1 (uniform
    attention), the given (p, v) pairs (already reduced), and ``n_random`` Gaussian points of that scale."""
    k = Xr.shape[-1]
    b, *_ = np.linalg.lstsq(Xr.mean(axis=1), y, rcond=None)             # (k,)  uniform attention: f = vᵀ x̄
    out = [np.concatenate([np.zeros(k), b])] + list(init)
    scale = np.linalg.norm(b) / np.sqrt(2 * k)
    out += [scale * rng.standard_normal(2 * k) for _ in range(n_random)]
    return out


def max_margin(X, y, rng: np.random.Generator, init=(), n_random: int = 2, maxiter: int = 500) -> MaxMargin:
    """Solve docs/math.md (17.5) with SLSQP from several starts; keep the smallest feasible norm.

    X (n, M, d), y (n,) ±1. init : (p, v) pairs of (d,) arrays to start from as well (e.g. the two-step GD
    solution with v rescaled to margin 1). rng : the random starts' generator. Returns a ``MaxMargin``.
    """
    X, y = check_batch(X, np.asarray(X).shape[-1], y)
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise ValueError(f"n_random must be a whole number >= 0, got {n_random!r}")
    B = span_basis(X)                                                    # (d, k)
    k = B.shape[1]
    Xr = X @ B                                                           # (n, M, k)  exact: p = B a, v = B b

    def cons(t):
        return y * forward_cache(MagenParams(t[:k], t[k:]), Xr)[0] - 1.0

    def cons_jac(t):
        _, Jp, Jv = sample_grads(t[:k], t[k:], Xr)
        return y[:, None] * np.hstack([Jp, Jv])

    reduced = [np.concatenate([B.T @ np.asarray(p, float), B.T @ np.asarray(v, float)]) for p, v in init]
    norms, best = [], None
    for t0 in _starts(Xr, y, reduced, rng, n_random):
        with np.errstate(over="ignore", invalid="ignore"):
            r = minimize(lambda t: 0.5 * t @ t, t0, jac=lambda t: t, method="SLSQP",
                         constraints=[{"type": "ineq", "fun": cons, "jac": cons_jac}],
                         options={"maxiter": maxiter, "ftol": 1e-12})
        ok = bool(r.success) and np.all(np.isfinite(r.x)) and cons(r.x).min() > -ACTIVE_TOL
        norms.append(float(np.linalg.norm(r.x)) if ok else np.nan)
        if ok and (best is None or norms[-1] < best[0]):
            best = (norms[-1], r.x)
    if best is None:                     # no start converged feasibly: report the first start's end as failed
        return MaxMargin(np.full(X.shape[-1], np.nan), np.full(X.shape[-1], np.nan), np.nan,
                         KKT(np.nan, np.nan, np.nan, np.nan, 0, np.full(len(y), np.nan)), np.array(norms), 0, False)
    p, v = B @ best[1][:k], B @ best[1][k:]                              # back to ℝ^d
    return MaxMargin(p, v, best[0], kkt(p, v, X, y), np.array(norms), int(np.sum(np.isfinite(norms))), True)
