"""Training with the coefficients recorded: the tracker, ``track_train``, and the span trainer's decomposition.

Two ways to get the signal/noise coefficients of a GD run while it trains (docs/math.md §7.2–§7.4, §8):
``CoefficientTracker`` wraps any objective and replays the coefficient recursions from each step's forward cache;
``span_train`` trains in token coordinates, where the coefficients *are* the state. Both hand the result to the
pure solver ``refvit.jiang2024.decompose``.
"""
from __future__ import annotations

import numpy as np

from ..config import TrainConfig, require_gd
from .decompose import Decomposition, from_token_coordinates, name_coefficients, recover_from_deltas, residuals
from .model import attention_core, logistic_loss_derivative
from .span import SpanObjective, SpanState
from .tokens import unique_tokens
from ..trainer import Objective, run
from .train import make_objective
from .objective import ViTObjective


class CoefficientTracker(ViTObjective):
    """Wrap a training objective and replay the coefficient recursions at every step (docs/math.md (7.5), (7.9),
    (7.14)).

    Use in place of the objective: ``run(CoefficientTracker(obj, X, y, cfg), cfg)``. At each call it first commits
    the increments of the previous call (the loop asks again only after taking that step), then computes the next
    ones from the new forward cache and f:
        ℓ'_i = ℓ'(y_i f_i),  c_i = ℓ'_i y_i / N,  g_u = Σ_{(i,j): x_{i,j} = u} c_i ā_{i,j}  (docs/math.md (4.1), (7.3))
        w_O frozen :  coef_u ← coef_u − η ‖w_O‖² ‖u‖² g_u                          (docs/math.md (7.5))
        w_O trained:  A_V[u] ← A_V[u] − η g_u w_O(t),  coef_u = ‖u‖² (A_V w_O(t))_u   (docs/math.md (7.9), (7.10))
        α_u ← α_u − η Σ_{(i,l): x_{i,l} = u} a_{i,l},  with a_{i,l} the rows of dQ_i = (c_i G_i) K_i and likewise
        β_u with dK_i = (c_i G_i)ᵀ Q_i                                 (docs/math.md (4.10), (7.14))
    The attention backward of ``model.attention_core`` gives dQ, dK from the cache (S, v, Q, K); the weights are
    never read. Recorded per call t (before update t): coef, ā (N, M), ℓ' (N,) and the logits Z[:, :2, :2].
    """

    def __init__(self, objective: Objective, X, y, config: TrainConfig, core: str = "numpy"):
        require_gd(config.optimizer, "the coefficient recursions (docs/math.md (7.2))")
        self.inner = objective
        self.state0, self.X, self.y = objective.state0, objective.X, objective.y
        self.X_test, self.y_test = objective.X_test, objective.y_test
        self.tokens = unique_tokens(np.asarray(X, dtype=np.float64))
        self.norm2 = np.sum(self.tokens.U ** 2, axis=1)
        self.lr, self.train_w_O = config.lr, config.train_w_O
        self._bwd = attention_core(core)[1]
        self.N = np.asarray(y).shape[0]
        self.alpha = self.beta = self.A_V = None
        self.coef = np.zeros(self.tokens.n_unique)
        self.w_O = None
        self._pending = None
        self.records = {"coef": [], "abar": [], "lprime": [], "Z2": []}

    def value_and_grad(self, state):
        if self._pending is not None:                  # the loop took the step computed at the previous call
            dA, dB, dV = self._pending
            self.alpha += dA
            self.beta += dB
            if self.train_w_O:
                self.A_V += dV
            else:
                self.coef += dV
        ev = self.inner.value_and_grad(state)
        f, cache = ev.f, ev.cache
        w_O = np.array(state.w_O, dtype=np.float64)
        if self.alpha is None:
            d_h, d_v = cache.Q.shape[2], w_O.shape[0]
            self.alpha, self.beta = np.zeros((self.tokens.n_unique, d_h)), np.zeros((self.tokens.n_unique, d_h))
            self.A_V = np.zeros((self.tokens.n_unique, d_v))
        self.w_O = w_O
        coef_now = self.norm2 * (self.A_V @ w_O) if self.train_w_O else self.coef.copy()   # (math 7.10)
        lp = logistic_loss_derivative(self.y * f)       # ℓ'_i ∈ (−1, 0)  (math 3.2)
        c = lp * self.y / self.N                        # c_i  (math 4.1)
        self.records["coef"].append(coef_now)
        self.records["abar"].append(cache.abar.copy())
        self.records["lprime"].append(lp)
        self.records["Z2"].append(cache.Z[:, :2, :2].copy())
        g = self.tokens.scatter(c[:, None] * cache.abar)                  # (n_u,) g_u (math 7.3)
        dQ, dK, _ = self._bwd(c, cache.S, cache.v, cache.Q, cache.K)     # left factors a_{i,l} (math 4.10, 7.14)
        eta = self.lr
        # w_O trained: rows of A_V (math 7.9); w_O frozen: the scalar recursion of coef (math 7.5)
        dV = -eta * np.outer(g, w_O) if self.train_w_O else -eta * (w_O @ w_O) * self.norm2 * g
        self._pending = (-eta * self.tokens.scatter(dQ), -eta * self.tokens.scatter(dK), dV)   # α, β (math 7.14)
        return ev

    def test_outputs(self, state):
        return self.inner.test_outputs(state)

    def params(self, state):
        return self.inner.params(state)

    def history(self, signals=None) -> dict:
        """Per-call arrays (T = number of calls = steps taken + 1): coef (T, n_u), abar (T, N, M), lprime (T, N),
        Z2 (T, N, 2, 2) logits among tokens 0, 1, and the named series gamma_plus, gamma_minus (T,), rho (T, N)."""
        h = {k: np.asarray(v) for k, v in self.records.items()}
        h["gamma_plus"], h["gamma_minus"], h["rho"], h["rho_other"] = name_coefficients(h["coef"], self.tokens,
                                                                                         signals)
        return h

    def decomposition(self, signals=None, params0=None, params=None, identify: bool = True) -> Decomposition:
        """The tracked ``Decomposition`` at the last committed step; residuals against (params0, params) if given."""
        if self.alpha is None:
            raise ValueError("nothing tracked yet: train with this tracker as the objective first")
        if self.train_w_O:
            A_V = self.A_V
        else:   # rank one: A_V[u] = (coef_u / (‖u‖² ‖w_O‖²)) w_Oᵀ  (math 7.11)
            A_V = np.outer(self.coef / self.norm2, self.w_O) / (self.w_O @ self.w_O)
        return from_token_coordinates(self.tokens, self.alpha, self.beta, A_V, self.w_O, source="tracked",
                                      signals=signals, params0=params0, params=params, identify=identify)


def track_train(params, X, y, *, config: TrainConfig, X_test=None, y_test=None):
    """Train with ``config`` (dense or span coordinates) under a ``CoefficientTracker``.

    Returns (Params, History, tracker). The tracker's attention backward uses ``config.backend``'s core.
    """
    objective = make_objective(config, params, X, y, X_test, y_test)
    tracker = CoefficientTracker(objective, objective.X, objective.y, config, core=config.backend)
    params_t, history = run(tracker, config)
    return params_t, history, tracker




def span_decomposition(objective: SpanObjective, state: SpanState | None = None, signals=None,
                       params=None) -> Decomposition:
    """The ``Decomposition`` read from a span trainer's coordinates (default: the final state of its run).

    In the token basis the rows of A_Q, A_K are α_u, β_u and A_V w_O = b gives coef_u = ‖u‖² b_u
    (docs/math.md §8, (7.10)).
    In the orthonormal basis the rows name basis vectors; the per-token coefficients are then recovered from
    P·A by ``refvit.jiang2024.decompose`` where they are identifiable and reported as NaN where not.
    signals : (μ₊, μ₋), each (d,), to name γ₊ and γ₋; without it γ± are NaN.
    params : dense weights W(t) from another run (e.g. the dense trainer) to measure the reconstruction
        residual ‖W(t) − W(0) − Σ_u u·coef_u‖ / ‖W(t) − W(0)‖ against; without it the residual is NaN (against
        this trainer's own W(0) + P·A it would be zero by construction).
    """
    if state is None:
        if objective.final_state is None:
            raise ValueError("no final state yet: train first (refvit.trainer.run calls params() at the end)")
        state = objective.final_state
    A_Q, A_K, A_V, w_O = state
    if objective.basis == "tokens":
        return from_token_coordinates(objective.tokens, A_Q, A_K, A_V, w_O, source="span", signals=signals,
                                      params0=objective.params0, params=params)
    P = objective.P
    dec = recover_from_deltas(objective.tokens, P @ A_Q, P @ A_K, P @ A_V, w_O,
                              source="span (orthonormal basis: rows of A name basis vectors, not tokens)",
                              signals=signals)
    if params is not None:
        dec = dec._replace(residual=residuals(objective.tokens, dec, objective.params0, params))
    return dec


def span_train(params, X, y, *, X_test=None, y_test=None, config: TrainConfig, signals=None, basis: str = "auto"):
    """Train in span coordinates and also return the decomposition: (Params, History, Decomposition).

    ``config`` is a ``TrainConfig`` with optimizer "gd"; it is trained with coords="span" whatever its coords,
    and with the attention core ``config.backend``.
    """
    config = config.replace(coords="span")
    objective = make_objective(config, params, X, y, X_test, y_test, basis=basis)
    params_t, history = run(objective, config)
    return params_t, history, span_decomposition(objective, signals=signals)
