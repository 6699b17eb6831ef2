"""Audit families for docs/math.md §5-§6: structural facts, training updates and stopping rules."""
from __future__ import annotations

import math

import numpy as np

from ..jiang2024 import model
from ..jiang2024.model import Params
from ..jiang2024.train import train as train_fn
from .core import TOL_EXACT, TOL_ROUND, _row, cotangent, err, ref_forward, ref_G, ref_lprime

# ---------------------------------------------------------------------------------------------------------------
# §5 structural facts
# ---------------------------------------------------------------------------------------------------------------

def _sym(a):
    return a + a.T


def check_structure(ctx) -> list:
    e = {k: [] for k in ("5.1", "5.2", "5.3f", "5.3G", "5.4", "5.5", "5.6", "5.6gd", "5.7V", "5.7Q",
                         "5.8", "5.9", "5.10", "5.10h")}
    v_ok = True
    for t, inst in enumerate(ctx["all"]):
        p, X, y = inst.p, inst.X, inst.y
        n, M, d = X.shape
        rng = np.random.default_rng(80 + t)
        perm = rng.permutation(M)
        e["5.1"].append(err(model.forward(p, X[:, perm]), model.forward(p, X)))
        _, g = model.loss_and_grads(p, X, y, "numpy")
        # (5.8) d/dt (W_QᵀW_Q − W_KᵀW_K) = −sym(W_Qᵀ∇_Q) + sym(W_Kᵀ∇_K) = 0 under the code's gradients
        a, b = _sym(p.W_Q.T @ g.W_Q), _sym(p.W_K.T @ g.W_K)
        e["5.8"].append(float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), 1e-300))
        # (5.9) with w_O trained: d/dt (W_VᵀW_V − w_O w_Oᵀ) = 0
        a, b = _sym(p.W_V.T @ g.W_V), _sym(np.outer(p.w_O, g.w_O))
        e["5.9"].append(float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), 1e-300))
        if not inst.small:
            continue
        d_h = p.W_Q.shape[1]
        R = rng.standard_normal((d_h, d_h)) + 3 * np.eye(d_h)
        e["5.2"].append(err(model.forward(Params(p.W_Q @ R, p.W_K @ np.linalg.inv(R).T, p.W_V, p.w_O), X),
                            ref_forward(Params(p.W_Q @ p.W_K.T, np.eye(d), np.zeros((d, 1)) + (p.W_V @ p.w_O)[:, None],
                                               np.ones(1)), X).f))
        _, cache = model.forward_cache(p, X, "numpy")
        cs = 2.5
        f1 = model.attention_forward(cache.Q, cache.K, cache.v)[3]
        f2 = model.attention_forward(cache.Q, cache.K, cache.v + cs)[3]
        e["5.3f"].append(err(f2, f1 + cs))
        df = cotangent(inst, 90 + t)
        b1 = model.attention_backward(df, cache.S, cache.v, cache.Q, cache.K)
        b2 = model.attention_backward(df, cache.S, cache.v + cs, cache.Q, cache.K)
        e["5.3G"] += [err(b2[0], b1[0]), err(b2[1], b1[1])]
        # (5.4)-(5.5) at W_Q = 0
        p0 = p._replace(W_Q=np.zeros_like(p.W_Q))
        xbar = X.mean(axis=1)                                   # (n, d)
        u = p.W_V @ p.w_O
        f0 = xbar @ u
        e["5.4"].append(err(model.forward(p0, X), f0))
        _, g0 = model.loss_and_grads(p0, X, y, "numpy")
        c = ref_lprime(y * f0) * y / n
        vv = X @ u                                              # (n, M)
        rr = np.einsum("nj,njd->nd", vv - vv.mean(1, keepdims=True), X)
        e["5.5"] += [err(g0.W_Q, np.einsum("n,na,nb->ab", c / M, xbar, rr) @ p.W_K),
                     err(g0.W_K, np.zeros_like(g0.W_K), zero=1e-300) if np.any(g0.W_K) else 0.0,
                     err(g0.W_V, np.outer(c @ xbar, p.w_O))]
        # (5.6) at W_Q = W_K = 0: zero gradients, W_V moves, GD keeps W_Q = W_K = 0
        p00 = p0._replace(W_K=np.zeros_like(p.W_K))
        _, g00 = model.loss_and_grads(p00, X, y, "numpy")
        e["5.6"].append(max(float(np.max(np.abs(g00.W_Q))), float(np.max(np.abs(g00.W_K)))))
        v_ok = v_ok and bool(np.any(g00.W_V != 0))
        pt, _ = train_fn(p00, X, y, lr=0.5, steps=3, backend="numpy")
        e["5.6gd"].append(max(float(np.max(np.abs(pt.W_Q))), float(np.max(np.abs(pt.W_K)))))
        # (5.7) Euler identities per sample, from the backward with df = e_i
        _, cache = model.forward_cache(p, X, "numpy")
        r = ref_forward(p, X)
        Gz = np.einsum("nlj,nlj->n", ref_G(r), r.Z)
        for i in range(n):
            gi = model.backward(np.eye(n)[i], cache, p, X, "numpy")
            e["5.7V"] += [err(np.sum(gi.W_V * p.W_V), r.f[i]), err(gi.w_O @ p.w_O, r.f[i])]
            e["5.7Q"] += [err(np.sum(gi.W_Q * p.W_Q), Gz[i], zero=1e-15 * abs(r.f[i])),
                          err(np.sum(gi.W_K * p.W_K), Gz[i], zero=1e-15 * abs(r.f[i]))]
        # (5.10) one GD step (train.run): C_{t+1} − C_t = η² (∇_Qᵀ∇_Q − ∇_Kᵀ∇_K)
        eta = 0.5
        p1, _ = train_fn(p, X, y, lr=eta, steps=1, backend="numpy")
        C = lambda q: q.W_Q.T @ q.W_Q - q.W_K.T @ q.W_K
        e["5.10"].append(err(C(p1) - C(p), eta ** 2 * (g.W_Q.T @ g.W_Q - g.W_K.T @ g.W_K),
                             zero=1e-14 * float(np.max(np.abs(C(p))))))
    # (5.10) O(η) drift over a fixed horizon: halving η halves it (one mid-size instance, horizon tη = 1)
    inst = ctx["small"][2]
    C = lambda q: q.W_Q.T @ q.W_Q - q.W_K.T @ q.W_K
    drift = []
    for eta, steps in ((0.05, 20), (0.025, 40)):
        pt, _ = train_fn(inst.p, inst.X, inst.y, lr=eta, steps=steps, backend="numpy")
        drift.append(float(np.linalg.norm(C(pt) - C(inst.p))))
    e["5.10h"].append(abs(drift[0] / drift[1] - 2.0) / 2.0 if drift[1] > 0 else math.inf)
    R = TOL_ROUND, "two float64 evaluations: rounding only"
    return [
        _row("5.1", "f(P_π X) = f(X)", "model:forward", "permuted tokens", e["5.1"], *R),
        _row("5.2", "f depends on W_Q W_Kᵀ and W_V w_O only", "model:forward", "W_QR, W_KR⁻ᵀ vs einsum F(W, u)",
             e["5.2"], 1e-10, "R⁻¹ and the regrouped products: rounding × cond(R) ≲ 1e2"),
        _row("5.3", "f(v + c𝟙) = f(v) + c", "model:attention_forward", "shifted value scores", e["5.3f"], *R),
        _row("5.3", "G(v + c𝟙) = G(v): dQ, dK unchanged", "model:attention_backward", "shifted value scores",
             e["5.3G"], 1e-9, "v_j − Σ s v cancels c = 2.5: loses log10(c/|v − s·v|) ≲ 4 digits"),
        _row("5.4", "W_Q = 0: f = x̄ᵀ W_V w_O", "model:forward", "closed form", e["5.4"], *R),
        _row("5.5", "W_Q = 0: ∇W_Q = (Σ c x̄ rᵀ/M) W_K, ∇W_K = 0, ∇W_V = (Σ c x̄) w_Oᵀ", "model:loss_and_grads",
             "closed form", e["5.5"], *R),
        _row("5.6", "W_Q = W_K = 0: ∇W_Q = ∇W_K = 0 exactly, ∇W_V ≠ 0", "model:loss_and_grads", "exact zero",
             e["5.6"], TOL_EXACT, "exact: every term is multiplied by an exact zero matrix", extra_ok=v_ok,
             note="" if v_ok else "∇W_V vanished"),
        _row("5.6", "GD keeps W_Q = W_K = 0 (3 steps, η = 0.5)", "train:run", "exact zero", e["5.6gd"],
             TOL_EXACT, "exact: 0 − η·0 = 0"),
        _row("5.7", "⟨∇W_V f, W_V⟩ = ⟨∇w_O f, w_O⟩ = f", "model:backward", "einsum f", e["5.7V"], *R),
        _row("5.7", "⟨∇W_Q f, W_Q⟩ = ⟨∇W_K f, W_K⟩ = Σ G z", "model:backward", "independent G, Z", e["5.7Q"],
             1e-10, "Σ G z cancels (Σ_j G_lj = 0): relative error grows by max|Gz|/|Σ Gz|"),
        _row("5.8", "d/dt (W_QᵀW_Q − W_KᵀW_K) = 0 under the flow", "model:loss_and_grads",
             "sym(W_Qᵀ∇_Q) − sym(W_Kᵀ∇_K) / max", e["5.8"], 1e-10,
             "two d_h×d_h products summing d terms each: ~1e-16·d ≤ 1e-12"),
        _row("5.9", "d/dt (W_VᵀW_V − w_O w_Oᵀ) = 0 (w_O trained)", "model:loss_and_grads",
             "sym(W_Vᵀ∇_V) − sym(w_O ∇_wᵀ) / max", e["5.9"], 1e-10,
             "two d_v×d_v products summing d terms each: ~1e-16·d ≤ 1e-12"),
        _row("5.10", "GD step: ΔC = η²(∇_Qᵀ∇_Q − ∇_Kᵀ∇_K)", "train:run", "closed form", e["5.10"], 1e-9,
             "ΔC is a difference of O(‖W‖²) matrices: cancellation ~1e-16‖W‖²/(η²‖∇‖²)"),
        _row("5.10", "drift O(η) over a fixed horizon: halving η halves it", "train:run",
             "|ratio/2 − 1| (η = 0.05 vs 0.025, tη = 1)", e["5.10h"], 0.1,
             "the O(η²) correction to the ratio at η = 0.05 is a few %"),
    ]


# ---------------------------------------------------------------------------------------------------------------
# §6 training
# ---------------------------------------------------------------------------------------------------------------

def check_training(ctx) -> list:
    e = {k: [] for k in ("6.1", "6.2", "6.3", "6.5", "6.6")}
    for inst in ctx["small"][:3]:
        p, X, y = inst.p, inst.X, inst.y
        _, g = model.loss_and_grads(p, X, y, "numpy")
        lr = 0.3
        for opt, key, step in (("gd", "6.1", lambda gk: lr * gk), ("signgd", "6.2", lambda gk: lr * np.sign(gk)),
                               ("adam", "6.3", lambda gk: lr * ((1 - 0.9) * gk / (1 - 0.9)) /
                                (np.sqrt((1 - 0.999) * gk * gk / (1 - 0.999)) + 1e-8))):
            p1, _ = train_fn(p, X, y, lr=lr, steps=1, optimizer=opt, backend="numpy")
            want = Params(*(p[k] - step(g[k]) if k < 3 else p[k] for k in range(4)))
            e[key].append(max(err(a, b) for a, b in zip(p1, want)))
        # stopping rules (6.4)-(6.6): pick τ between L(θ_{k−1}) and L(θ_k), k = 3
        _, h = train_fn(p, X, y, lr=lr, steps=6, backend="numpy")
        L = h["train_loss"]
        if not np.all(np.diff(L[:4]) < 0):
            continue
        tau = 0.5 * (L[2] + L[3])
        pf, hf = train_fn(p, X, y, lr=lr, steps=6, loss_threshold=tau, stop_rule="first_below", backend="numpy")
        pa, ha = train_fn(p, X, y, lr=lr, steps=6, loss_threshold=tau, stop_rule="authors", backend="numpy")
        p3, _ = train_fn(p, X, y, lr=lr, steps=3, backend="numpy")
        p4, h4 = train_fn(p, X, y, lr=lr, steps=4, backend="numpy")
        e["6.5"] += [abs(hf.steps - 3), max(err(a, b) for a, b in zip(pf, p3))]
        e["6.6"] += [abs(ha.steps - 4), max(err(a, b) for a, b in zip(pa, p4)),
                     err(ha["train_loss"][3], L[3])]
    R = TOL_ROUND, "the same float64 arithmetic written twice: rounding only"
    return [
        _row("6.1", "θ ← θ − η∇L_S (w_O frozen)", "train:run", "θ − η·model.loss_and_grads", e["6.1"], *R),
        _row("6.2", "SignGD θ ← θ − η sign(∇L_S)", "train:run", "closed form", e["6.2"], *R),
        _row("6.3", "Adam, first step with bias correction", "train:run", "closed form", e["6.3"], 1e-9,
             "the same expression as the code: √(g²) = |g| up to 1 ulp, so rounding only"),
        _row("6.5", "first_below: return θ_{t*}, steps = t* (t* = 3)", "train:run", "3 plain steps",
             e["6.5"], TOL_EXACT, "exact: the same operations in the same order"),
        _row("6.6", "authors: return θ_{t*+1}, steps = t* + 1", "train:run", "4 plain steps", e["6.6"],
             TOL_EXACT, "exact: the same operations in the same order"),
    ]


