"""The catalogue of known mistakes: one small dtype-generic model (``Variant``) with a switch per mistake.

``Variant()`` with no switch is the reference itself (a second implementation, tested against ``refvit.jiang2024.model``);
each ``Mistake`` of ``CATALOGUE`` is a ``Variant`` with one switch set, run as a "mutant" on the inputs of a case
to see whether a failing implementation matches it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import expit

from ..jiang2024.model import Params


@dataclass(frozen=True)
class Variant:
    """The model of docs/math.md §2, §3 with switches; ``Variant()`` is the reference itself (in ``dtype``).

    temperature: logits divided by √d_h.      softmax_over: "keys" (correct) or "queries".
    causal: keys j > l masked out (a decoder's causal mask).
    softmax_eps: S = E / (Σ E + ε) (a "safe" denominator).   clamp_logits: logits clipped to ±clamp_logits.
    max_shift: subtract the row max before exp (False: the naive softmax, overflows to NaN for logits > 709).
    abar_over: "queries" (correct, ā_j = (1/M) Σ_l S_lj) or "keys" (the mean taken over the other axis of S,
        ā_l = (1/M) Σ_j S_lj ≡ 1/M).
    mean_over_queries: the 1/M of f.          mean_over_samples: the 1/n of the loss.
    loss: "logistic" (correct), "exponential" exp(−y f), "naive" log(1 + exp(−y f)) computed literally (inf for
        y f < −709; its gradient written stably), "clamped" −log(clip(σ(y f), 1e-7, 1 − 1e-7)) (a clamped
        probability, zero gradient where clipped).
    labels01: labels mapped to {0, 1} but used as ±1 in the margin y·f.
    query_weight: "W_Q" (correct) or "W_K" (queries computed with W_K).
    transpose_logits: Z[l, j] = x_jᵀ W_Q W_Kᵀ x_l instead of x_lᵀ W_Q W_Kᵀ x_j.
    step_scale: the GD step is θ − step_scale·lr·∇L.
    momentum, weight_decay, clip_norm: SGD extras (heavy ball v ← βv + g; g + λθ; g scaled to global norm ≤ c).
    flip_w_O: train w_O when it should be frozen, or vice versa.
    dtype: arithmetic precision.
    """
    temperature: bool = False
    softmax_over: str = "keys"
    causal: bool = False
    softmax_eps: float = 0.0
    clamp_logits: float = 0.0
    max_shift: bool = True
    abar_over: str = "queries"
    mean_over_queries: bool = True
    mean_over_samples: bool = True
    loss: str = "logistic"
    labels01: bool = False
    query_weight: str = "W_Q"
    transpose_logits: bool = False
    step_scale: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip_norm: float = 0.0
    flip_w_O: bool = False
    dtype: str = "float64"

    def _cast(self, params, X):
        dt = np.dtype(self.dtype)
        return Params(*(np.asarray(a, dtype=dt) for a in params)), np.asarray(X, dtype=dt)

    def forward(self, params, X):
        """f (n,) and what the backward needs."""
        (W_Q, W_K, W_V, w_O), X = self._cast(params, X)
        n, M, d = X.shape
        d_h = W_Q.shape[1]
        Xf = X.reshape(n * M, d)                                        # one matrix product, not n small ones
        Q = (Xf @ (W_K if self.query_weight == "W_K" else W_Q)).reshape(n, M, d_h)   # (n, M, d_h)
        K = (Xf @ W_K).reshape(n, M, d_h)                               # (n, M, d_h)
        tau = X.dtype.type(1.0 / math.sqrt(d_h) if self.temperature else 1.0)
        Z = tau * (Q @ K.transpose(0, 2, 1))                            # (n, M, M) Z[l, j] = q_l·k_j
        if self.transpose_logits:
            Z = Z.transpose(0, 2, 1)                                    # Z[l, j] = q_j·k_l
        clipped = np.ones_like(Z)
        if self.clamp_logits:
            clipped = (np.abs(Z) <= self.clamp_logits).astype(Z.dtype)
            Z = np.clip(Z, -self.clamp_logits, self.clamp_logits)
        if self.causal:
            Z = np.where(np.tril(np.ones((M, M), dtype=bool)), Z, -np.inf)
        axis = -1 if self.softmax_over == "keys" else -2
        with np.errstate(over="ignore", invalid="ignore"):
            E = np.exp(Z - Z.max(axis=axis, keepdims=True) if self.max_shift else Z)
            S = E / (E.sum(axis=axis, keepdims=True) + X.dtype.type(self.softmax_eps))
        m = M if self.mean_over_queries else 1
        abar = S.sum(axis=1 if self.abar_over == "queries" else 2) / X.dtype.type(m)   # (n, M)
        v = (Xf @ (W_V @ w_O)).reshape(n, M)                            # (n, M)
        return (abar * v).sum(axis=1), (Q, K, S, v, tau, axis, abar, m, clipped, Z)

    def loss_and_grads(self, params, X, y):
        """(loss, Params of gradients) by the chain rule through ``forward``."""
        f, (Q, K, S, v, tau, axis, abar, m, clipped, Z) = self.forward(params, X)
        (W_Q, W_K, W_V, w_O), X = self._cast(params, X)
        y = np.asarray(y, dtype=X.dtype)
        if self.labels01:
            y = (y + 1) / 2
        n, M, d = X.shape
        margins = y * f
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self.loss == "logistic":
                losses, dl = np.logaddexp(0, -margins), -expit(-margins)
            elif self.loss == "naive":
                losses, dl = np.log(1 + np.exp(-margins)), -expit(-margins)   # the gradient written stably
            elif self.loss == "clamped":
                eps = 1e-7
                p = expit(margins)
                pc = np.clip(p, eps, 1 - eps)
                losses = -np.log(pc)
                dl = np.where((p > eps) & (p < 1 - eps), -(1 - p), 0.0).astype(X.dtype)
            else:
                losses = np.exp(-margins)
                dl = -losses
        k = n if self.mean_over_samples else 1
        loss = losses.sum() / X.dtype.type(k)
        df = dl * y / X.dtype.type(k)                                   # (n,)
        dv = df[:, None] * abar                                         # (n, M)
        dA = (df[:, None] * v / X.dtype.type(m))                        # (n, M): ∂f/∂ā
        dS = np.broadcast_to(dA[:, None, :] if self.abar_over == "queries" else dA[:, :, None], S.shape)
        with np.errstate(invalid="ignore"):
            # softmax VJP along its axis; with S = E/(ΣE + ε) the Jacobian δ_jk S_j − S_j S_k keeps this form.
            # Masked (causal) entries have S = 0, hence dZ = 0; clamped logits pass no gradient.
            dZ = S * (dS - (S * dS).sum(axis=axis, keepdims=True)) * clipped
        if self.softmax_eps:
            # S_j = e^{Z_j − c} / (Σ_k e^{Z_k − c} + ε) depends on the shift c = max Z once ε ≠ 0:
            # ∂S_j/∂c = −S_j (1 − Σ_k S_k), added to the arg-max logit (as autograd does through max)
            top = Z == Z.max(axis=axis, keepdims=True)
            dZ = dZ - top * ((S * dS).sum(axis=axis, keepdims=True) * (1 - S.sum(axis=axis, keepdims=True)))
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

    def trajectory(self, params, X, y, lr: float, train_w_O: bool, steps: int):
        """The iterates after 1, …, ``steps`` steps (a generator), with this variant's gradient, step size,
        optimizer extras (momentum state carried across steps) and w_O rule."""
        p, _ = self._cast(params, X)
        eta = p.W_Q.dtype.type(self.step_scale * lr)
        train = train_w_O != self.flip_w_O
        velocity = None
        for _ in range(steps):
            _, g = self.loss_and_grads(p, X, y)
            g = list(g) if train else [*g[:3], np.zeros_like(g[3])]
            if self.weight_decay:
                g = [gi + p.W_Q.dtype.type(self.weight_decay) * pi for gi, pi in zip(g, p)]
                if not train:
                    g[3] = np.zeros_like(g[3])
            if self.clip_norm:
                norm = math.sqrt(sum(float(np.sum(gi.astype(np.float64) ** 2)) for gi in g))
                if norm > self.clip_norm:
                    g = [gi * p.W_Q.dtype.type(self.clip_norm / norm) for gi in g]
            if self.momentum:
                velocity = g if velocity is None else [p.W_Q.dtype.type(self.momentum) * vi + gi
                                                       for vi, gi in zip(velocity, g)]
                g = velocity
            p = Params(*(pi - eta * gi for pi, gi in zip(p, g)))
            yield p

    def step(self, params, X, y, lr: float, train_w_O: bool) -> Params:
        """One GD step with this variant's gradient, step size and w_O rule (no optimizer state yet)."""
        return next(self.trajectory(params, X, y, lr, train_w_O, 1))

    @property
    def step_only(self) -> bool:
        """True when the variant differs from the reference only in the update, not in f, loss or gradients."""
        return Variant(step_scale=self.step_scale, momentum=self.momentum, weight_decay=self.weight_decay,
                       clip_norm=self.clip_norm, flip_w_O=self.flip_w_O, dtype=self.dtype) == self


@dataclass(frozen=True)
class Mistake:
    """One catalogued mistake: its name (as reported), what goes wrong, the ``Variant`` that makes it, and when it
    can apply (e.g. ``w_O_trained`` only when the check expects w_O frozen)."""
    name: str
    description: str
    variant: Variant
    applies: Callable[[str, bool], bool] = lambda dtype, train_w_O: True   # (checked dtype, train_w_O) -> bool
    kind: str = "numbers"     # "numbers": run as a mutant; "shape": named from a wrong shape your function returns


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
    Mistake("mean_over_keys", "the 1/M mean of the attention taken over the other axis of S (ā_l = (1/M) Σ_j S_lj, "
            "which is 1/M for every l): f collapses to the mean value score (docs/math.md (2.5))",
            Variant(abar_over="keys")),
    Mistake("causal_mask", "a causal mask (keys j > l hidden, as in a decoder); this model attends to every token "
            "(docs/math.md (2.4))", Variant(causal=True)),
    Mistake("labels_01_as_pm1", "labels mapped to {0, 1} but the margin y·f written for ±1: the negative class "
            "contributes log 2 and no gradient (docs/math.md (3.3))", Variant(labels01=True)),
    Mistake("naive_logistic_overflow", "log(1 + exp(−y f)) computed literally: inf for y f < −709 (use "
            "logaddexp(0, −y f), docs/math.md (3.1))", Variant(loss="naive")),
    Mistake("clamped_probability", "σ(y f) clamped to [1e-7, 1 − 1e-7] before the log (a \"safe\" BCE): loss "
            "capped at 16.1 and no gradient for large margins (docs/math.md (3.1))", Variant(loss="clamped")),
    Mistake("softmax_without_max_shift", "exp of the raw logits without subtracting the row maximum: NaN once a "
            "logit exceeds 709 (docs/math.md (3.5))", Variant(max_shift=False)),
    Mistake("softmax_epsilon", "a \"safe\" softmax denominator Σ exp + ε (ε = 1e-6): every weight shrinks by "
            "≈ ε (docs/math.md (2.4))", Variant(softmax_eps=1e-6),
            lambda dtype, train_w_O: dtype == "float64"),
    Mistake("clamped_logits", "logits clipped to ±50 before the softmax: changes saturated attention and "
            "stops its gradient (docs/math.md (2.4))", Variant(clamp_logits=50.0)),
    Mistake("momentum", "SGD with momentum 0.9 (heavy ball) instead of plain GD (docs/math.md (6.1))",
            Variant(momentum=0.9)),
    Mistake("weight_decay", "weight decay λ = 0.01 added to the gradient (docs/math.md (6.1) has none)",
            Variant(weight_decay=0.01)),
    Mistake("gradient_clipping", "gradients clipped to global norm 1 (docs/math.md (6.1) has no clipping)",
            Variant(clip_norm=1.0)),
    Mistake("w_O_trained", "the GD step (or trainer) updates w_O although it is frozen in this setting "
            "(docs/math.md §3); pass "
            "train_w_O=True (--train-w-O) if you train it on purpose", Variant(flip_w_O=True),
            lambda dtype, train_w_O: not train_w_O),
    Mistake("w_O_frozen", "the GD step leaves w_O unchanged although train_w_O=True was asked for "
            "(e.g. requires_grad False)", Variant(flip_w_O=True), lambda dtype, train_w_O: train_w_O),
    Mistake("float32_accumulation", "arithmetic in float32 although float64 inputs were passed (a float32 tensor, "
            "default dtype, or accumulator): errors at the float32 level, matched with the float32 tolerances",
            Variant(dtype="float32"), lambda dtype, train_w_O: dtype == "float64"),
)
SHAPE_MISTAKES = (
    Mistake("squeeze_size_1", "an axis of size 1 dropped (e.g. .squeeze() without an axis): the output loses the "
            "sample axis at N = 1 or the token axis at M = 1; squeeze only the axis you mean (squeeze(-1))",
            Variant(), lambda dtype, train_w_O: False, kind="shape"),
    Mistake("transposed_gradient", "a gradient returned transposed (nn.Linear stores Wᵀ: return weight.grad.T)",
            Variant(), lambda dtype, train_w_O: False, kind="shape"),
)
MISTAKES = {m.name: m for m in CATALOGUE + SHAPE_MISTAKES}

# Causes named from what your numbers show rather than from a mutant's prediction (``overflow``, ``updates``).
CAUSES = {
    "overflow": "a NaN or inf in your outputs where the reference's are finite: something in your code overflows "
                "(the sentence for the case says what and where)",
    "mixed_precision": "one step of your float64 computation runs in float32 (a cast, a float32 softmax, an "
                       "autocast region): float64 outputs with errors of float32 size",
    "dropout_left_on": "your forward is not deterministic (dropout left on, training mode, a random draw): two "
                       "calls on the same inputs differ",
    "accumulation_not_divided": "gradients accumulated over k micro-batches without dividing by k: loss and "
                                "gradients k × the reference, f exact",
    "label_smoothing": "label smoothing (BCE targets ε/2 and 1 − ε/2): f exact, loss and gradients of "
                       "log(1 + e^{−y f}) + (ε/2)·y f",
    "extra_residual": "an extra residual connection around the attention (values added to its output)",
    "extra_layernorm": "an extra LayerNorm on the attention output before the head",
    "state_outside_optimizer": "your trainer keeps state outside its optimizer (an extra trained parameter, a "
                               "buffer, a cached tensor): the loss it differentiates changes from step to step, "
                               "so its updates are not −lr·∇L at its own iterates",
}
DESCRIPTIONS = {**{m.name: m.description for m in CATALOGUE + SHAPE_MISTAKES}, **CAUSES}
