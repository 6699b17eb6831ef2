"""The catalogue of known mistakes: one small dtype-generic model (``Variant``) with a switch per mistake.

``Variant()`` with no switch is the reference itself (a second implementation, tested against ``refvit.model``);
each ``Mistake`` of ``CATALOGUE`` is a ``Variant`` with one switch set, run as a "mutant" on the inputs of a case
to see whether a failing implementation matches it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import expit

from ..model import Params


@dataclass(frozen=True)
class Variant:
    """The model of docs/math.md §2, §3 with switches; ``Variant()`` is the reference itself (in ``dtype``).

    temperature: logits divided by √d_h.      softmax_over: "keys" (correct) or "queries".
    mean_over_queries: the 1/M of f.          mean_over_samples: the 1/n of the loss.
    loss: "logistic" (correct) or "exponential" exp(−y f).
    query_weight: "W_Q" (correct) or "W_K" (queries computed with W_K).
    transpose_logits: Z[l, j] = x_jᵀ W_Q W_Kᵀ x_l instead of x_lᵀ W_Q W_Kᵀ x_j.
    step_scale: the GD step is θ − step_scale·lr·∇L.
    flip_w_O: train w_O when it should be frozen, or vice versa.
    dtype: arithmetic precision.
    """
    temperature: bool = False
    softmax_over: str = "keys"
    mean_over_queries: bool = True
    mean_over_samples: bool = True
    loss: str = "logistic"
    query_weight: str = "W_Q"
    transpose_logits: bool = False
    step_scale: float = 1.0
    flip_w_O: bool = False
    dtype: str = "float64"

    def _cast(self, params, X):
        dt = np.dtype(self.dtype)
        return Params(*(np.asarray(a, dtype=dt) for a in params)), np.asarray(X, dtype=dt)

    def forward(self, params, X):
        """f (n,) and what the backward needs."""
        (W_Q, W_K, W_V, w_O), X = self._cast(params, X)
        M, d_h = X.shape[1], W_Q.shape[1]
        Q = X @ (W_K if self.query_weight == "W_K" else W_Q)           # (n, M, d_h)
        K = X @ W_K                                                     # (n, M, d_h)
        tau = X.dtype.type(1.0 / math.sqrt(d_h) if self.temperature else 1.0)
        Z = tau * (Q @ K.transpose(0, 2, 1))                            # (n, M, M) Z[l, j] = q_l·k_j
        if self.transpose_logits:
            Z = Z.transpose(0, 2, 1)                                    # Z[l, j] = q_j·k_l
        axis = -1 if self.softmax_over == "keys" else -2
        E = np.exp(Z - Z.max(axis=axis, keepdims=True))
        S = E / E.sum(axis=axis, keepdims=True)
        m = M if self.mean_over_queries else 1
        abar = S.sum(axis=1) / X.dtype.type(m)                          # (n, M)
        v = X @ (W_V @ w_O)                                             # (n, M)
        return (abar * v).sum(axis=1), (Q, K, S, v, tau, axis, abar, m)

    def loss_and_grads(self, params, X, y):
        """(loss, Params of gradients) by the chain rule through ``forward``."""
        f, (Q, K, S, v, tau, axis, abar, m) = self.forward(params, X)
        (W_Q, W_K, W_V, w_O), X = self._cast(params, X)
        y = np.asarray(y, dtype=X.dtype)
        n, M, d = X.shape
        margins = y * f
        if self.loss == "logistic":
            losses, dl = np.logaddexp(0, -margins), -expit(-margins)
        else:
            losses = np.exp(-margins)
            dl = -losses
        k = n if self.mean_over_samples else 1
        loss = losses.sum() / X.dtype.type(k)
        df = dl * y / X.dtype.type(k)                                   # (n,)
        dv = df[:, None] * abar                                         # (n, M)
        dS = np.broadcast_to((df[:, None] * v / X.dtype.type(m))[:, None, :], S.shape)
        dZ = S * (dS - (S * dS).sum(axis=axis, keepdims=True))          # softmax VJP along its axis
        if self.transpose_logits:
            dZ = dZ.transpose(0, 2, 1)
        dZ = tau * dZ
        dQ, dK = dZ @ K, dZ.transpose(0, 2, 1) @ Q                     # (n, M, d_h)
        Xf = X.reshape(n * M, d)
        dW_Q, dW_K = Xf.T @ dQ.reshape(n * M, -1), Xf.T @ dK.reshape(n * M, -1)
        if self.query_weight == "W_K":
            dW_Q, dW_K = np.zeros_like(dW_Q), dW_K + dW_Q
        du = Xf.T @ dv.reshape(n * M)                                   # (d,)
        return loss, Params(dW_Q, dW_K, np.outer(du, w_O), W_V.T @ du)

    def step(self, params, X, y, lr: float, train_w_O: bool) -> Params:
        """One GD step with this variant's gradient, step size and w_O rule."""
        _, g = self.loss_and_grads(params, X, y)
        p, _ = self._cast(params, X)
        eta = p.W_Q.dtype.type(self.step_scale * lr)
        train = train_w_O != self.flip_w_O
        return Params(p.W_Q - eta * g.W_Q, p.W_K - eta * g.W_K, p.W_V - eta * g.W_V,
                      p.w_O - eta * g.w_O if train else p.w_O.copy())


@dataclass(frozen=True)
class Mistake:
    """One catalogued mistake: its name (as reported), what goes wrong, the ``Variant`` that makes it, and when it
    can apply (e.g. ``w_O_trained`` only when the check expects w_O frozen)."""
    name: str
    description: str
    variant: Variant
    applies: Callable[[str, bool], bool] = lambda dtype, train_w_O: True   # (checked dtype, train_w_O) -> bool


CATALOGUE = (
    Mistake("sqrt_dh_temperature", "logits divided by √d_h (the usual transformer scaling; this model has none, "
            "docs/math.md (2.4))", Variant(temperature=True)),
    Mistake("softmax_over_queries", "softmax normalized over the queries l instead of the keys j; then Σ_l s_lj = 1 "
            "and f collapses to the mean value score (docs/math.md (2.4))", Variant(softmax_over="queries")),
    Mistake("missing_1_over_M", "the 1/M average over the M query rows is missing: f is M times too large "
            "(docs/math.md (2.5))", Variant(mean_over_queries=False)),
    Mistake("missing_1_over_N", "the loss is summed over samples instead of averaged: loss and gradients are n "
            "times too large (docs/math.md (3.3))", Variant(mean_over_samples=False)),
    Mistake("exponential_loss", "exp(−y f) instead of the logistic loss log(1 + exp(−y f)) (docs/math.md (3.1))",
            Variant(loss="exponential")),
    Mistake("W_K_as_W_Q", "W_K used in place of W_Q: logits x_lᵀ W_K W_Kᵀ x_j (docs/math.md (2.3))",
            Variant(query_weight="W_K")),
    Mistake("transposed_logits", "transposed attention matrix W = W_Q W_Kᵀ: logits x_jᵀ W_Q W_Kᵀ x_l, i.e. Zᵀ, "
            "or W_Q and W_K swapped (docs/math.md (2.3))", Variant(transpose_logits=True)),
    Mistake("doubled_step", "the GD step is 2·lr·∇L (update applied twice, or the gradient accumulated twice)",
            Variant(step_scale=2.0)),
    Mistake("w_O_trained", "the GD step updates w_O although it is frozen in this setting (docs/math.md §3); pass "
            "train_w_O=True (--train-w-O) if you train it on purpose", Variant(flip_w_O=True),
            lambda dtype, train_w_O: not train_w_O),
    Mistake("w_O_frozen", "the GD step leaves w_O unchanged although train_w_O=True was asked for "
            "(e.g. requires_grad False)", Variant(flip_w_O=True), lambda dtype, train_w_O: train_w_O),
    Mistake("float32_accumulation", "arithmetic in float32 although float64 inputs were passed (a float32 tensor, "
            "default dtype, or accumulator): errors at the float32 level, matched with the float32 tolerances",
            Variant(dtype="float32"), lambda dtype, train_w_O: dtype == "float64"),
)
MISTAKES = {m.name: m for m in CATALOGUE}
