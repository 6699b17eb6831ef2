"""Audit family for docs/math.md §13: the second setting, the two-token transformer of Li et al. (ICLR 2025).

The independent side is this module's own: an einsum forward with ``scipy.special.softmax`` (``li_ref_forward``),
the loss by ``np.logaddexp``, central finite differences of that forward, closed forms, and a third gradient
derivation (``li_ref_grads``, einsum over δ of (13.20)) used only to move parameters by a few SignGD steps. The code
under audit is called through its module attributes at call time (``li_model.attention_backward``,
``li_model.backward``, ``li_formulas.gradients``, ...), so a test can break one and see which rows turn red.

Instances (float64, explicit seeds): small Gaussian problems (m_k = 2 so that K is square and dZ can be recovered
from dQ; c_L "sum" and "mean"; λ ≠ 1; saturated logits) and the data law at d = 40 at a tiny init, at O(1) logits and
after three SignGD steps; the default sizes (d = 2000, m_k = m_v = 10) get directional differences.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.special

from ..jiang2024 import config
from ..li2025 import data as li_data
from ..li2025 import formulas as li_formulas
from ..li2025 import model as li_model
from ..li2025.config import LiDataConfig, LiModelConfig
from ..li2025.model import LiParams
from .core import ARITHMETIC, FD_RESOLVES, STAT_SIGMAS, TOL_EXACT, TOL_FD, TWO_PATHS, _row, dir_error, err
from .li_core import _fd, _with, li_instances, li_ref_forward, ref_c, ref_core, ref_delta, ref_g, ref_loss, ref_v

# dZ recovered as dQ K⁻¹ / λ (m_k = L = 2): the inverse costs ~cond(K) ≤ 1e3 digits on top of rounding.
KINV = 1e-9, "dZ recovered through K⁻¹ (m_k = L = 2): rounding × cond(K) ≤ 1e3"
FD = TOL_FD, "central FD h=1e-5 in float64 (directional ones relative to ‖grad‖): ~1e-10; saturated logits more"
# Blocks below FD_RESOLVES·L_S (the tiny init's query/key blocks, ~σ₀² small) are checked through Σ df f in (13.19).
STEP = 1e-11, "p − η·sgn(g) rounds to ~1e-16·|p| per entry, relative to η‖ξ‖₁ ≥ 1e-3·|p|: ≤ ~1e-12"


# ---------------------------------------------------------------------------------------------------------------
# §13.1 data and SNR
# ---------------------------------------------------------------------------------------------------------------

def _data_rows() -> list:
    e = {k: [] for k in ("1", "2", "3", "4", "4s", "5")}
    for pos, noise, alpha in (("fixed", "sparse", 0.0), ("random", "sparse", 0.25), ("random", "dense", 0.0)):
        dc = LiDataConfig(N=9, d=30, s=4, mu_norm=2.0, alpha=alpha, noise=noise, signal_position=pos, n_test=3,
                          flip_rate=0.3)
        ds = li_data.make_dataset(dc, np.random.default_rng(41), np.random.default_rng(42))
        rows = np.arange(dc.N)
        xi, sig = ds.X[rows, 1 - ds.signal_pos], ds.X[rows, ds.signal_pos]
        e["1"] += [err(ds.mu, dc.mu_norm * np.eye(dc.d)[0]), err(sig, ds.y_clean[:, None] * ds.mu)]
        k = dc.s if noise == "sparse" else dc.d - 1
        e["2"] += [float(np.max(np.abs((xi[:, 1:] != 0).sum(axis=1) - k))),
                   err(xi @ ds.mu, -alpha * ds.y_clean * dc.mu_norm ** 2)]
        if noise == "sparse":
            e["2"] += [float(np.max(np.abs(np.flatnonzero(xi[i, 1:]) + 1 - ds.support[i]))) for i in rows]
        xt = ds.X_test[np.arange(dc.n_test), ds.signal_pos_test]
        e["3"] += [abs(int(np.sum(ds.y != ds.y_clean)) - round(dc.flip_rate * dc.N)),
                   err(xt, ds.y_test[:, None] * ds.mu)]
    for noise in ("sparse", "dense"):
        dc = LiDataConfig(N=4000, d=50, s=10, sigma_p=1.5, noise=noise, n_test=1)
        X = li_data.sample(dc, dc.N, np.random.default_rng(43)).X
        k = dc.s if noise == "sparse" else dc.d - 1
        sq = np.sum(X[:, 1] ** 2, axis=1) / (dc.sigma_p ** 2 * k)        # mean 1, variance 2/k (chi-square)
        e["4s"].append(abs(sq.mean() - 1) / math.sqrt(2 / k / dc.N))
        e["4"].append(err(dc.snr, dc.mu_norm / (dc.sigma_p * math.sqrt(k))))
        e["5"].append(err(dc.snr_first_setting, config.snr(dc.mu_norm, dc.sigma_p, dc.d)))
    ex = TOL_EXACT, "exact: copies, counts and one product of exact numbers"
    return [
        _row("13.1", "μ = ‖μ‖e₀; token p_i = ỹ_i μ, the other ξ_i", "li2025.data:make_dataset", "closed form",
             e["1"], *ex),
        _row("13.2", "s (or d−1) non-zeros off coordinate 0, in the support; ⟨μ, ξ_i⟩ = −α ỹ_i ‖μ‖²",
             "li2025.data:sample", "count, closed form", e["2"], *ex),
        _row("13.3", "exactly round(pN) flips; signal follows the clean label; test clean",
             "li2025.data:make_dataset", "count, closed form", e["3"], *ex),
        _row("13.4", "SNR = ‖μ‖/(σ_p √s) (sparse), ‖μ‖/(σ_p √(d−1)) (dense)", "li2025.config:LiDataConfig.snr",
             "closed form", e["4"], *ARITHMETIC),
        _row("13.4", "E‖ξ‖² = σ_p² s (sparse), σ_p² (d−1) (dense)", "li2025.data:sample",
             "sample mean in standard errors (n = 4000)", e["4s"], STAT_SIGMAS,
             "a sample mean is within 6 standard errors except with probability ~1e-9"),
        _row("13.5", "SNR·√(s/d) = ‖μ‖/(σ_p √d), the first setting's SNR",
             "li2025.config:LiDataConfig.snr_first_setting", "config.snr (1.6)", e["5"], *ARITHMETIC),
    ]


# ---------------------------------------------------------------------------------------------------------------
# §13.2–§13.3 model, init, loss
# ---------------------------------------------------------------------------------------------------------------

def _model_rows(insts) -> list:
    e = {k: [] for k in ("6", "7", "8", "9", "9m", "10", "11", "11s", "12")}
    for inst in insts:
        p, X, y, cfg = inst.p, inst.X, inst.y, inst.cfg
        f, cache = li_model.forward_cache(p, X, cfg)
        r = li_ref_forward(p, X, cfg)
        e["6"] += [err(cache.Q, r.Q), err(cache.K, r.K)]
        e["7"] += [err(cache.Z, cfg.logit_scale * r.a), err(cache.S, r.S),
                   float(np.max(np.abs(cache.S.sum(-1) - 1.0)))]
        e["8"].append(err(cache.u, r.u))
        e["9"].append(err(f, r.f))
        other = cfg.replace(c_L="mean" if cfg.c_L == "sum" else "sum")
        ratio = ref_c(cfg, 2) / ref_c(other, 2)
        e["9m"].append(err(f, ratio * li_model.forward_cache(p, X, other)[0]))
        # (13.10) by branch: F_j = c_L Σ_{l,m} S_lm ⟨w̄_{V,j}, x_m⟩, f = F_{+1} − F_{−1}
        F = [ref_c(cfg, 2) * np.einsum("nlm,nm->n", r.S, X @ p.W_V[j].mean(axis=0)) for j in (0, 1)]
        e["10"].append(err(li_model.forward(p, X, cfg), F[0] - F[1]))
        e["12"].append(err(li_model.loss_and_grads(p, X, y, cfg)[0], ref_loss(r.f, y)))
    for seed, (m_k, m_v, d, s0) in enumerate(((3, 2, 7, 0.5), (10, 10, 400, 1e-3))):
        mc = LiModelConfig(m_k=m_k, m_v=m_v, sigma0=s0)
        p = li_model.init_params(mc, d, np.random.default_rng(50 + seed))
        rng = np.random.default_rng(50 + seed)                          # the draw order W_Q, W_K, W_V
        want = [s0 * rng.standard_normal((m_k, d)), s0 * rng.standard_normal((m_k, d)),
                s0 * rng.standard_normal((2, m_v, d))]
        e["11"] += [err(a, b) for a, b in zip(p, want)]
        w = np.concatenate([a.ravel() for a in p]) / s0
        e["11s"].append(max(abs(w.std() - 1) * math.sqrt(2 * w.size), abs(w.mean()) * math.sqrt(w.size)))
    R = TWO_PATHS
    return [
        _row("13.6", "Q = X W_Qᵀ, K = X W_Kᵀ", "li2025.model:forward_cache", "einsum", e["6"], *R),
        _row("13.7", "Z = λ Q Kᵀ, S = softmax over keys (rows sum to 1)", "li2025.model:forward_cache",
             "einsum, scipy.special.softmax", e["7"], *R),
        _row("13.8", "v = w̄_{V,+1} − w̄_{V,−1}, u_m = ⟨v, x_m⟩", "li2025.model:value_direction",
             "np.add.reduce, einsum", e["8"], *R),
        _row("13.9", "f = c_L Σ_l Σ_m S_lm u_m", "li2025.model:forward_cache", "einsum forward", e["9"], *R),
        _row("13.9", "c_L = 1 (sum) or 1/L (mean)", "li2025.config:LiModelConfig.c", "f(mean)·2 = f(sum)",
             e["9m"], *R),
        _row("13.10", "f = F_{+1} − F_{−1}", "li2025.model:forward", "per-class branches", e["10"], *R),
        _row("13.11", "W_Q, W_K, W_V entries σ₀·N(0, 1), drawn in that order", "li2025.model:init_params",
             "the same generator by hand", e["11"], TOL_EXACT, "exact: the same draws times the same float"),
        _row("13.11", "entries have mean 0 and std σ₀", "li2025.model:init_params",
             "sample mean and std in standard errors", e["11s"], STAT_SIGMAS,
             "within 6 standard errors except with probability ~1e-9"),
        _row("13.12", "L_S = mean logaddexp(0, −y f)", "li2025.model:loss_and_grads", "np.logaddexp on the einsum f",
             e["12"], *R),
    ]


# ---------------------------------------------------------------------------------------------------------------
# §13.3–§13.4 the backward line by line
# ---------------------------------------------------------------------------------------------------------------

def _backward_rows(insts) -> list:
    e = {k: [] for k in ("13", "14", "15", "16", "17", "18", "19Q", "19K", "20", "25")}
    for t, inst in enumerate(insts):
        p, X, y, cfg = inst.p, inst.X, inst.y, inst.cfg
        c, lam = ref_c(cfg, X.shape[1]), cfg.logit_scale
        r = li_ref_forward(p, X, cfg)
        f, cache = li_model.forward_cache(p, X, cfg)
        # (13.13): the evaluation's gradients are the backward of g = ∂L/∂f (FD of the independent loss in f)
        g_fd = _fd(lambda ff: ref_loss(ff, y), r.f)
        e["13"].append(max(err(a, b) for a, b in zip(li_model.loss_grads_cache(p, X, y, cfg).grads,
                                                     li_model.backward(g_fd, cache, X, cfg))))
        df = np.random.default_rng(60 + t).standard_normal(X.shape[0])
        dQ, dK, du = li_model.attention_backward(df, cache, c, lam)
        if not inst.small:            # default sizes: directional differences of Σ df f in each block
            gb = li_model.backward(df, cache, X, cfg)
            rng = np.random.default_rng(70 + t)
            for k, key in ((0, "19Q"), (1, "19K"), (2, "15")):
                fun = lambda a, k=k: float(df @ li_ref_forward(_with(p, k, a), X, cfg).f)
                e[key].append(dir_error(fun, gb[k], p[k], rng))
            continue
        e["14"].append(err(du, _fd(lambda u: float(df @ ref_core(r.Q, r.K, u, c, lam).f), r.u)))
        e["18"] += [err(dQ, _fd(lambda Q: float(df @ ref_core(Q, r.K, r.u, c, lam).f), r.Q)),
                    err(dK, _fd(lambda K: float(df @ ref_core(r.Q, K, r.u, c, lam).f), r.K))]
        # (13.16) ∂(Σ df f)/∂S = df c_L u_m (closed form) vs FD of c_L Σ S u in S
        dS = np.broadcast_to((df[:, None] * c * r.u)[:, None, :], r.S.shape)
        e["16"].append(err(dS, _fd(lambda S: float(df @ (c * np.einsum("nlm,nm->n", S, r.u))), r.S)))
        gb = li_model.backward(df, cache, X, cfg)
        for k, key in ((0, "19Q"), (1, "19K"), (2, "15")):
            e[key].append(err(gb[k], _fd(lambda a, k=k: float(df @ li_ref_forward(_with(p, k, a), X, cfg).f), p[k])))
        if p.W_Q.shape[0] == 2:       # K square: the code's dZ = dQ K⁻¹ / λ exactly
            dZ = np.transpose(np.linalg.solve(np.transpose(cache.K, (0, 2, 1)), np.transpose(dQ, (0, 2, 1))),
                              (0, 2, 1)) / lam
            fz = lambda Z: float(df @ (c * np.einsum("nlm,nm->n", scipy.special.softmax(Z, axis=-1), r.u)))
            e["17"].append(err(dZ, _fd(fz, lam * r.a)))
            delta = lam * dZ / df[:, None, None]                        # ∂f/∂a = λ ∂f/∂Z
            scale = max(float(np.max(np.abs(delta))), 1e-300)
            e["20"] += [err(delta, ref_delta(r, c, lam)), float(np.max(np.abs(delta.sum(-1)))) / scale]
            s0 = r.S[:, :, 0]
            two = c * lam * s0 * (1 - s0) * (r.u[:, [0]] - r.u[:, [1]])   # (13.25)
            e["25"] += [err(delta[:, :, 0], two), err(delta[:, :, 1], -two)]
    return [
        _row("13.13", "the gradients are the backward of g_i = ℓ'(y_i f_i) y_i / n", "li2025.model:loss_grads_cache",
             "backward of central FD of L_S in f", e["13"], *FD),
        _row("13.14", "du_m = df c_L Σ_l S_lm", "li2025.model:attention_backward", "central FD of the core in u",
             e["14"], *FD),
        _row("13.15", "dw_{V,±1,r} = ±(1/m_v) Σ_i Σ_m du_im x_im", "li2025.model:backward",
             "FD in W_V (full small / directional default)", e["15"], *FD),
        _row("13.16", "∂f/∂S_lm = c_L u_m (closed form used by the backward)", "li2025.model:attention_backward",
             "central FD of c_L Σ S u in S", e["16"], *FD),
        _row("13.17", "dZ = S ⊙ (dS − rowsum(S ⊙ dS)) = df c_L S(u − ū)",
             "li2025.model:attention_backward (dZ = dQ K⁻¹/λ)", "central FD of the core in Z", e["17"], *FD),
        _row("13.18", "dQ = λ dZ K, dK = λ dZᵀ Q", "li2025.model:attention_backward",
             "central FD of the core in Q, K", e["18"], *FD),
        _row("13.19", "dW_Q = Σ_i dQ_iᵀ X_i", "li2025.model:backward", "FD in W_Q (full small / directional default)",
             e["19Q"], *FD),
        _row("13.19", "dW_K = Σ_i dK_iᵀ X_i", "li2025.model:backward", "FD in W_K (full small / directional default)",
             e["19K"], *FD),
        _row("13.20", "δ = c_L λ S(u − ū), Σ_m δ_lm = 0", "li2025.model:attention_backward (dZ = dQ K⁻¹/λ)",
             "independent δ; row sums / max|δ|", e["20"], *KINV),
        _row("13.25", "L = 2: δ_l0 = −δ_l1 = c_L λ S_l0 S_l1 (u_0 − u_1)",
             "li2025.model:attention_backward (dZ = dQ K⁻¹/λ)", "closed form on the independent S, u", e["25"],
             *KINV),
    ]


# ---------------------------------------------------------------------------------------------------------------
# §13.5–§13.6 the gradients of L_S, closed forms, and one SignGD step
# ---------------------------------------------------------------------------------------------------------------

def _gradient_rows(insts) -> list:
    e = {k: [] for k in ("21", "21r", "21f", "22", "22f", "23", "23f", "24", "26", "30")}
    for t, inst in enumerate(insts):
        p, X, y, cfg = inst.p, inst.X, inst.y, inst.cfg
        loss, g = li_model.loss_and_grads(p, X, y, cfg)
        resolved = [float(np.max(np.abs(b))) >= FD_RESOLVES * loss for b in g]
        if inst.small:
            fdg = [_fd(lambda a, k=k: ref_loss(li_ref_forward(_with(p, k, a), X, cfg).f, y), p[k]) for k in range(3)]
            for k, key in ((0, "22f"), (1, "23f"), (2, "21f")):
                if resolved[k]:
                    e[key].append(err(g[k], fdg[k]))
            # every row of a class has the same FD gradient, the −1 class its negative
            V = fdg[2]
            e["21r"].append(err(V, np.stack([np.tile(V[0, 0], (cfg.m_v, 1)), np.tile(-V[0, 0], (cfg.m_v, 1))])))
            gf = li_formulas.gradients(p, X, y, cfg)
            e["22"].append(err(g.W_Q, gf.W_Q))
            e["23"].append(err(g.W_K, gf.W_K))
            e["21"].append(err(g.W_V, gf.W_V))
        else:
            rng = np.random.default_rng(80 + t)
            for k, key in ((0, "22f"), (1, "23f"), (2, "21f")):
                fun = lambda a, k=k: ref_loss(li_ref_forward(_with(p, k, a), X, cfg).f, y)
                if resolved[k]:
                    e[key].append(dir_error(fun, g[k], p[k], rng))
        # (13.26) at W_Q = 0
        p0 = p._replace(W_Q=np.zeros_like(p.W_Q))
        _, g0 = li_model.loss_and_grads(p0, X, y, cfg)
        r0 = li_ref_forward(p0, X, cfg)
        c, lam, L = ref_c(cfg, X.shape[1]), cfg.logit_scale, X.shape[1]
        gi = ref_g(r0.f, y)
        rr = np.einsum("nm,nmd->nd", r0.u - r0.u.mean(axis=1, keepdims=True), X)
        xbar = X.mean(axis=1)
        dv = c / cfg.m_v * L * np.einsum("n,nd->d", gi, xbar)
        e["26"] += [err(g0.W_Q, lam * c * np.einsum("n,ns,nd->sd", gi, rr @ p.W_K.T, xbar)),
                    float(np.max(np.abs(g0.W_K))),
                    err(g0.W_V, np.stack([np.tile(dv, (cfg.m_v, 1)), np.tile(-dv, (cfg.m_v, 1))]))]
        if inst.noise is None:
            continue
        # private coordinates: non-zero in exactly one training token, not coordinate 0
        used = (X != 0).sum(axis=(0, 1))
        private = [np.flatnonzero((inst.noise[i] != 0) & (used == 1) & (np.arange(X.shape[2]) > 0))
                   for i in range(X.shape[0])]
        if inst.small:
            for i, P in enumerate(private):
                for k in P[:2]:
                    ent = li_formulas.private_coordinate_entry(p, X, y, cfg, i, int(k))
                    e["24"] += [err(g.W_Q[:, k], ent.W_Q), err(g.W_K[:, k], ent.W_K), err(g.W_V[:, :, k], ent.W_V)]
        # (13.28), (13.30): one SignGD step from the code's gradients
        eta = 0.01
        new = LiParams(*(a - eta * np.sign(b) for a, b in zip(p, g)))
        for i, P in enumerate(private):
            if P.size == 0:
                continue
            xi = inst.noise[i, P]
            l1 = float(np.abs(xi).sum())
            e["30"].append(abs(y[i] * (ref_v(new.W_V)[P] - ref_v(p.W_V)[P]) @ xi - 2 * eta * l1) / (eta * l1))
            for blk in (0, 1):
                moved = np.abs(y[i] * (new[blk][:, P] - p[blk][:, P]) @ xi)      # (m_k,) |Δ⟨w_s, y_i ξ_i⟩_P|
                e["30"].append(float(np.max(np.abs(moved - eta * l1))) / (eta * l1))
    R = TWO_PATHS
    return [
        _row("13.21", "∇w_{V,j,r} = j (c_L/m_v) Σ_i g_i Σ_{l,m} S_lm x_m", "li2025.formulas:gradients",
             "li2025.model.loss_and_grads", e["21"], *R),
        _row("13.21", "∇W_V L_S", "li2025.model:loss_and_grads", "FD of L_S (blocks ≥ 1e-3·L_S)", e["21f"],
             *FD),
        _row("13.21", "the same gradient for every value row of a class, the negative for the other class",
             "li2025.model:loss_and_grads", "central FD row by row", e["21r"], *FD),
        _row("13.22", "∇w_{Q,s} = Σ_i g_i Σ_{l,m} δ_lm ⟨w_{K,s}, x_m⟩ x_l", "li2025.formulas:gradients",
             "li2025.model.loss_and_grads", e["22"], *R),
        _row("13.22", "∇W_Q L_S", "li2025.model:loss_and_grads", "FD of L_S (blocks ≥ 1e-3·L_S)", e["22f"], *FD),
        _row("13.23", "∇w_{K,s} = Σ_i g_i Σ_{l,m} δ_lm ⟨w_{Q,s}, x_l⟩ x_m", "li2025.formulas:gradients",
             "li2025.model.loss_and_grads", e["23"], *R),
        _row("13.23", "∇W_K L_S", "li2025.model:loss_and_grads", "FD of L_S (blocks ≥ 1e-3·L_S)", e["23f"], *FD),
        _row("13.24", "private coordinate k of sample i: entries g_i ξ_ik × a per-row factor",
             "li2025.formulas:private_coordinate_entry", "column k of li2025.model.loss_and_grads", e["24"], *R),
        _row("13.26", "W_Q = 0: ∇W_Q = λ c_L Σ g_i (W_K r_i) x̄_iᵀ, ∇W_K = 0, ∇w_{V,j,r} = j (c_L/m_v) Σ g_i L x̄_i",
             "li2025.model:loss_and_grads", "closed form on the independent u", e["26"], *R),
        _row("13.30", "one SignGD step: |Δ⟨w_{Q,s}, y_iξ_i⟩_P| = |Δ⟨w_{K,s}, y_iξ_i⟩_P| = η‖ξ_P‖₁, "
             "Δ⟨v, y_iξ_i⟩_P = 2η‖ξ_P‖₁", "li2025.model:loss_and_grads (sgn of its gradient)", "closed form",
             e["30"], *STEP),
    ]


def check_li(ctx) -> list:
    """docs/math.md §13 (the second setting): data, model, loss, backward, gradients, closed forms, SignGD.

    ``ctx`` (the first setting's instances) is not used: this family builds its own instances (``li_instances``).
    """
    insts = li_instances()
    return _data_rows() + _model_rows(insts) + _backward_rows(insts) + _gradient_rows(insts)
