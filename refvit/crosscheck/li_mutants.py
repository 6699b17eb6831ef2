"""The second setting's catalogue of typical mistakes: one small model (``LiVariant``) with a switch per mistake.

``LiVariant()`` with no switch is the reference itself (a second implementation of docs/math.md §13.2–§13.6,
tested against ``refvit.li2025.model`` and ``refvit.optimizers``); each ``Mistake`` of ``LI_CATALOGUE`` sets one
switch and is run as a mutant on the inputs of a failing case.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy.special import expit

from ..li2025.model import LiParams
from .li_cases import ADAM_BETAS, ADAM_EPS
from .mutants import SHAPE_MISTAKES, Mistake


@dataclass(frozen=True)
class LiVariant:
    """The model, loss and optimizers of docs/math.md §13 with switches; ``LiVariant()`` is the reference.

    value_sign: −1 swaps the class difference v = w̄_{V,−1} − w̄_{V,+1}.   softmax_over: "keys" or "queries".
    c_L_rule: "given" (1 for "sum", 1/L for "mean"), "swapped" (the other one), "always_sum" (the switch ignored).
    value_mean: the value rows averaged (True) or summed.                temperature: logits divided by √m_k.
    mean_over_samples: the 1/n of the loss.   loss: "logistic" or "naive" (log(1 + e^{−y f}) literally).
    max_shift: subtract the row max before exp.   value_grad_label: the label y_i in the value gradient's g_i.
    swap_qk_grads: dW_Q and dW_K returned in each other's place.
    sign_zero: sgn(0) in SignGD (0, correct; 1: g ≥ 0 → +1).   adam_bias_correction, adam_eps_inside (√(ŝ + ε)).
    train_all: every block trained, whatever the case's trained blocks.
    """
    value_sign: float = 1.0
    softmax_over: str = "keys"
    c_L_rule: str = "given"
    value_mean: bool = True
    temperature: bool = False
    mean_over_samples: bool = True
    loss: str = "logistic"
    max_shift: bool = True
    value_grad_label: bool = True
    swap_qk_grads: bool = False
    sign_zero: float = 0.0
    adam_bias_correction: bool = True
    adam_eps_inside: bool = False
    train_all: bool = False
    dtype: str = "float64"

    def c(self, c_L: str, L: int) -> float:
        mean = c_L == "mean"
        if self.c_L_rule == "swapped":
            mean = not mean
        elif self.c_L_rule == "always_sum":
            mean = False
        return 1.0 / L if mean else 1.0

    def forward(self, params, X, c_L: str):
        """f (n,) and what the backward needs; params (W_Q, W_K (m_k, d), W_V (2, m_v, d)), X (n, L, d)."""
        W_Q, W_K, W_V = (np.asarray(a, dtype=np.float64) for a in params)
        X = np.asarray(X, dtype=np.float64)
        L = X.shape[1]
        Q, K = X @ W_Q.T, X @ W_K.T                                       # (n, L, m_k)
        tau = 1.0 / math.sqrt(W_Q.shape[0]) if self.temperature else 1.0
        Z = tau * (Q @ K.transpose(0, 2, 1))                              # (n, L, L)
        axis = -1 if self.softmax_over == "keys" else -2
        with np.errstate(over="ignore", invalid="ignore"):
            E = np.exp(Z - Z.max(axis=axis, keepdims=True) if self.max_shift else Z)
            S = E / E.sum(axis=axis, keepdims=True)
        agg = (lambda R: R.mean(axis=0)) if self.value_mean else (lambda R: R.sum(axis=0))
        v = self.value_sign * (agg(W_V[0]) - agg(W_V[1]))                 # (d,)
        u = X @ v                                                         # (n, L)
        c = self.c(c_L, L)
        return c * np.einsum("nlm,nm->n", S, u), (Q, K, S, u, tau, axis, c)

    def loss_and_grads(self, params, X, y, c_L: str):
        """(loss, LiParams of gradients) by the chain rule through ``forward`` (docs/math.md §13.4)."""
        f, (Q, K, S, u, tau, axis, c) = self.forward(params, X, c_L)
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        n, L, d = X.shape
        m_v = np.shape(params[2])[1]
        z = y * f
        with np.errstate(over="ignore", invalid="ignore"):
            losses = np.logaddexp(0, -z) if self.loss == "logistic" else np.log(1 + np.exp(-z))
        k = n if self.mean_over_samples else 1
        dl = -expit(-z) / k                                               # ℓ'(y f) / n
        df = dl * y                                                       # (n,) g_i of (13.13)
        dfv = df if self.value_grad_label else dl                         # the value path's g_i
        du = dfv[:, None] * c * S.sum(axis=1)                             # (n, L)   (13.14)
        dS = np.broadcast_to((df[:, None] * c * u)[:, None, :], S.shape)  # (13.16)
        with np.errstate(invalid="ignore"):
            dZ = tau * S * (dS - (S * dS).sum(axis=axis, keepdims=True))  # (13.17)
        if self.softmax_over == "queries":
            # Σ_l S_lm = 1 makes f independent of the logits: dZ is 0 exactly, not the rounding noise of the
            # line above, whose signs a SignGD step would turn into moves of ±η
            dZ = np.zeros_like(dZ)
        dW_Q = np.einsum("nls,nld->sd", dZ @ K, X)                        # (13.18)-(13.19)
        dW_K = np.einsum("nms,nmd->sd", dZ.transpose(0, 2, 1) @ Q, X)
        if self.swap_qk_grads:
            dW_Q, dW_K = dW_K, dW_Q
        dv = self.value_sign * np.einsum("nm,nmd->d", du, X) / (m_v if self.value_mean else 1)
        dW_V = np.stack([np.broadcast_to(dv, (m_v, d)), np.broadcast_to(-dv, (m_v, d))])   # (13.15)
        return float(losses.sum() / k), LiParams(dW_Q, dW_K, dW_V)

    def trajectory(self, params, X, y, c_L: str, lr: float, optimizer: str, trained, steps: int):
        """The iterates after 1, …, ``steps`` updates (a generator) of ``optimizer`` on the ``trained`` blocks,
        Adam's moments carried across steps (docs/math.md (13.27)–(13.29))."""
        p = [np.array(a, dtype=np.float64) for a in params]
        names = LiParams._fields
        m, s = [np.zeros_like(a) for a in p], [np.zeros_like(a) for a in p]
        b1, b2 = ADAM_BETAS
        for t in range(steps):
            _, g = self.loss_and_grads(p, X, y, c_L)
            for k, gk in enumerate(g):
                if names[k] not in trained and not self.train_all:
                    continue
                if optimizer == "gd":
                    p[k] = p[k] - lr * gk
                elif optimizer == "signgd":
                    p[k] = p[k] - lr * np.where(gk == 0, self.sign_zero, np.sign(gk))
                else:
                    m[k] = b1 * m[k] + (1 - b1) * gk
                    s[k] = b2 * s[k] + (1 - b2) * gk * gk
                    mh, sh = (m[k] / (1 - b1 ** (t + 1)), s[k] / (1 - b2 ** (t + 1))) \
                        if self.adam_bias_correction else (m[k], s[k])
                    p[k] = p[k] - lr * mh / (np.sqrt(sh + ADAM_EPS) if self.adam_eps_inside else
                                             np.sqrt(sh) + ADAM_EPS)
            yield LiParams(*(a.copy() for a in p))

    @property
    def step_only(self) -> bool:
        """True when the variant differs from the reference only in the update."""
        update = {"sign_zero", "adam_bias_correction", "adam_eps_inside", "train_all"}
        return all(getattr(self, f.name) == f.default for f in fields(self) if f.name not in update)

    def bind(self, spec) -> "_Bound":
        return _Bound(self, spec)


class _Bound:
    """A ``LiVariant`` on one case's switches, with the call shapes the diagnosis uses for every setting."""

    def __init__(self, variant: LiVariant, spec):
        self.variant, self.spec = variant, spec
        self.step_only, self.dtype = variant.step_only, variant.dtype

    def forward(self, params, X):
        return self.variant.forward(params, X, self.spec.c_L)

    def loss_and_grads(self, params, X, y):
        return self.variant.loss_and_grads(params, X, y, self.spec.c_L)

    def trajectory(self, params, X, y, lr, train_w_O, steps):
        return self.variant.trajectory(params, X, y, self.spec.c_L, lr, self.spec.optimizer, self.spec.trained,
                                       steps)


LI_CATALOGUE = (
    Mistake("value_sign_swapped", "the class difference in the value weights taken the wrong way round, "
            "v = w̄_{V,−1} − w̄_{V,+1}: f has the opposite sign (docs/math.md (13.8))", LiVariant(value_sign=-1.0)),
    Mistake("softmax_over_queries", "softmax normalized over the queries l instead of the keys m: then "
            "Σ_l S_lm = 1, f no longer depends on W_Q, W_K and their gradients vanish (docs/math.md (13.7))",
            LiVariant(softmax_over="queries")),
    Mistake("c_L_swapped", "c_L = 1 and c_L = 1/L confused: \"sum\" read as the mean over the L queries and "
            "\"mean\" as the sum (docs/math.md (13.9))", LiVariant(c_L_rule="swapped")),
    Mistake("c_L_ignored", "the c_L switch ignored: c_L = 1 (\"sum\") even when \"mean\" (1/L) is asked "
            "(docs/math.md (13.9))", LiVariant(c_L_rule="always_sum")),
    Mistake("value_rows_summed", "the value rows of each class summed instead of averaged: v is m_v times too "
            "large (docs/math.md (13.8))", LiVariant(value_mean=False)),
    Mistake("sqrt_mk_temperature", "logits divided by √m_k (the usual transformer scaling; this model has λ = 1, "
            "docs/math.md (13.7))", LiVariant(temperature=True)),
    Mistake("missing_1_over_N", "the loss summed over samples instead of averaged: loss and gradients n times too "
            "large (docs/math.md (13.12))", LiVariant(mean_over_samples=False)),
    Mistake("value_grad_without_label", "the label y_i left out of the value gradient: g_i = ℓ'(y_i f_i)/n "
            "instead of ℓ'(y_i f_i) y_i/n in dW_V, so the negative class pushes v the wrong way "
            "(docs/math.md (13.13), (13.21))", LiVariant(value_grad_label=False)),
    Mistake("QK_gradients_swapped", "dW_Q and dW_K returned in each other's place (the query and key sums of "
            "docs/math.md (13.22), (13.23) exchanged)", LiVariant(swap_qk_grads=True)),
    Mistake("sign_zero_is_plus_one", "SignGD with sgn(0) = +1 (e.g. where(g >= 0, 1, −1)): entries whose "
            "gradient is exactly 0 move by −η although sgn 0 = 0 (docs/math.md (13.28))",
            LiVariant(sign_zero=1.0)),
    Mistake("adam_no_bias_correction", "Adam without bias correction: m/(√s + ε) instead of m̂/(√ŝ + ε), the "
            "first step ≈ 3.2 η instead of η (docs/math.md (13.29))", LiVariant(adam_bias_correction=False)),
    Mistake("adam_eps_inside_sqrt", "Adam's ε inside the square root, m̂/√(ŝ + ε) instead of m̂/(√ŝ + ε): "
            "differs where |G| is not large against √ε = 1e-4 (docs/math.md (13.29))",
            LiVariant(adam_eps_inside=True)),
    Mistake("frozen_blocks_trained", "blocks the case leaves frozen (not in trained) updated anyway "
            "(docs/math.md §13.6: only the trained blocks move)", LiVariant(train_all=True)),
    Mistake("naive_logistic_overflow", "log(1 + exp(−y f)) computed literally: inf for y f < −709 (use "
            "logaddexp(0, −y f), docs/math.md (13.12))", LiVariant(loss="naive")),
    Mistake("softmax_without_max_shift", "exp of the raw logits without subtracting the row maximum: NaN once a "
            "logit exceeds 709 (docs/math.md (13.7))", LiVariant(max_shift=False)),
)
LI_MISTAKES = {m.name: m for m in LI_CATALOGUE + SHAPE_MISTAKES}
