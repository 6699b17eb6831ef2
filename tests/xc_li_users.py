"""Numpy implementations of the second setting's model, each with one mistake a user makes, written here from the
contracts of docs/crosscheck.md and the per-row gradient sums of docs/math.md (13.21)–(13.23) (not from the
checker's ``LiVariant``, which follows the chain rule of §13.4), for tests/test_crosscheck_li.py.

``user(**mistake)`` returns (forward, grad, step, make_trainer); ``user()`` is a correct implementation. The
module-level ``forward``, ``grad``, ``step`` and ``make_trainer`` are the correct ones (for the command line).
"""
import numpy as np
from scipy.special import expit

# the name of each catalogued mistake -> the switch of ``user`` that makes it
MISTAKES = {
    "value_sign_swapped": dict(value_sign=-1.0),
    "softmax_over_queries": dict(softmax_axis=1),
    "c_L_swapped": dict(c_rule="swapped"),
    "c_L_ignored": dict(c_rule="ignored"),
    "value_rows_summed": dict(value_sum=True),
    "sqrt_mk_temperature": dict(temperature=True),
    "missing_1_over_N": dict(loss_sum=True),
    "value_grad_without_label": dict(value_no_label=True),
    "QK_gradients_swapped": dict(qk_swap=True),
    "sign_zero_is_plus_one": dict(sign_ge=True),
    "adam_no_bias_correction": dict(adam_bc=False),
    "adam_eps_inside_sqrt": dict(adam_eps_in=True),
    "frozen_blocks_trained": dict(train_frozen=True),
    "naive_logistic_overflow": dict(naive_loss=True),
    "softmax_without_max_shift": dict(no_shift=True),
}


def user(value_sign=1.0, softmax_axis=2, c_rule="given", value_sum=False, temperature=False, loss_sum=False,
         value_no_label=False, qk_swap=False, sign_ge=False, adam_bc=True, adam_eps_in=False, train_frozen=False,
         naive_loss=False, no_shift=False):
    def parts(W_Q, W_K, W_V, X, c_L):
        n, L, d = X.shape
        c = {"sum": 1.0, "mean": 1.0 / L}[c_L]
        if c_rule == "swapped":
            c = 1.0 / L if c_L == "sum" else 1.0
        elif c_rule == "ignored":
            c = 1.0
        Q = np.einsum("nld,sd->nls", X, W_Q)
        K = np.einsum("nld,sd->nls", X, W_K)
        A = np.einsum("nls,nms->nlm", Q, K) / (np.sqrt(W_Q.shape[0]) if temperature else 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            E = np.exp(A if no_shift else A - A.max(axis=softmax_axis, keepdims=True))
            S = E / E.sum(axis=softmax_axis, keepdims=True)
        agg = W_V.sum(axis=1) if value_sum else W_V.mean(axis=1)        # (2, d)
        v = value_sign * (agg[0] - agg[1])
        u = np.einsum("nmd,d->nm", X, v)
        return c * np.einsum("nlm,nm->n", S, u), (c, Q, K, S, u)

    def forward(W_Q, W_K, W_V, X, c_L):
        return parts(W_Q, W_K, W_V, X, c_L)[0]

    def grad(W_Q, W_K, W_V, X, y, c_L):
        f, (c, Q, K, S, u) = parts(W_Q, W_K, W_V, X, c_L)
        n = len(y)
        with np.errstate(over="ignore", invalid="ignore"):
            losses = np.log(1 + np.exp(-y * f)) if naive_loss else np.logaddexp(0, -y * f)
        k = 1 if loss_sum else n
        lp = -expit(-y * f) / k                                          # ℓ'(y f) / n
        g = lp * y                                                       # (13.13)
        tau = 1.0 / np.sqrt(W_Q.shape[0]) if temperature else 1.0
        # δ_lm = ∂f/∂a_lm: f = c Σ_l Σ_m S_lm u_m with S normalized along softmax_axis
        with np.errstate(invalid="ignore"):
            ubar = (S * u[:, None, :]).sum(axis=softmax_axis, keepdims=True)
            delta = tau * c * S * (u[:, None, :] - ubar)                 # (13.20)
        dW_Q = np.einsum("n,nlm,nms,nld->sd", g, delta, K, X)            # (13.22)
        dW_K = np.einsum("n,nlm,nls,nmd->sd", g, delta, Q, X)            # (13.23)
        if qk_swap:
            dW_Q, dW_K = dW_K, dW_Q
        gv = lp if value_no_label else g
        m_v = W_V.shape[1]
        row = value_sign * c / (1 if value_sum else m_v) * np.einsum("n,nlm,nmd->d", gv, S, X)   # (13.21)
        dW_V = np.stack([np.tile(row, (m_v, 1)), np.tile(-row, (m_v, 1))])
        return float(np.sum(losses) / k), dW_Q, dW_K, dW_V

    class Trainer:
        def __init__(self, W_Q, W_K, W_V, X, y, c_L, lr, optimizer, trained):
            self.p = [W_Q.copy(), W_K.copy(), W_V.copy()]
            self.args = (X, y, c_L)
            self.lr, self.opt = lr, optimizer
            self.train = [train_frozen or name in trained for name in ("W_Q", "W_K", "W_V")]
            self.m = [np.zeros_like(a) for a in self.p]
            self.s = [np.zeros_like(a) for a in self.p]
            self.t = 0

        def step(self, k):
            for _ in range(k):
                with np.errstate(all="ignore"):
                    gs = grad(*self.p, *self.args)[1:]
                self.t += 1
                for i, gi in enumerate(gs):
                    if not self.train[i]:
                        continue
                    if self.opt == "gd":
                        self.p[i] = self.p[i] - self.lr * gi
                    elif self.opt == "signgd":
                        self.p[i] = self.p[i] - self.lr * (np.where(gi >= 0, 1.0, -1.0) if sign_ge else np.sign(gi))
                    else:
                        self.m[i] = 0.9 * self.m[i] + 0.1 * gi
                        self.s[i] = 0.999 * self.s[i] + 0.001 * gi ** 2
                        mh = self.m[i] / (1 - 0.9 ** self.t) if adam_bc else self.m[i]
                        sh = self.s[i] / (1 - 0.999 ** self.t) if adam_bc else self.s[i]
                        den = np.sqrt(sh + 1e-8) if adam_eps_in else np.sqrt(sh) + 1e-8
                        self.p[i] = self.p[i] - self.lr * mh / den

        def params(self):
            return tuple(self.p)

    def step(*args):
        tr = Trainer(*args)
        tr.step(1)
        return tr.params()

    return forward, grad, step, Trainer


forward, grad, step, make_trainer = user()
