"""Audit family for docs/math.md §16: the third setting, single-head prompt attention of Magen et al.

The independent side is this module's own: an einsum forward with ``scipy.special.softmax`` (``magen_ref_forward``),
the loss by ``np.logaddexp``, central finite differences of that forward, closed forms, and a third gradient
derivation (``magen_ref_grads``) used only to move parameters by a few GD steps. The code under audit is called
through its module attributes at call time (``mg_model.attention_backward``, ``mg_model.backward``,
``mg_formulas.gradients``, ...), so a test can break one and see which rows turn red.

The backward lines (16.13) and (16.15) are read off ``attention_backward`` by a probe: with one-hot tokens
x_im = e_{iM+m} in its last contraction, dv and dp return du and dZ themselves.

Instances (float64, explicit seeds): small Gaussian problems (M = 2 and 3, the query form, saturated scores) and the
data law at d = 12 at O(1) scores, after three GD steps from zero and in the query form with M = 3; the default sizes
(d = 2000, N = 40) get directional differences.
"""
from __future__ import annotations

import math

import numpy as np

from ..magen2025 import data as mg_data
from ..magen2025 import formulas as mg_formulas
from ..magen2025 import model as mg_model
from ..magen2025 import objective as mg_objective
from ..magen2025.config import MagenDataConfig, MagenModelConfig
from .core import ARITHMETIC, FD_RESOLVES, STAT_SIGMAS, TOL_EXACT, TOL_FD, TWO_PATHS, _row, dir_error, err
from .magen_core import fd, magen_instances, magen_ref_forward, ref_core, ref_g, ref_loss, with_block

FD = TOL_FD, "central FD h=1e-5 in float64 (directional ones relative to ‖grad‖): ~1e-10; saturated scores more"
ORTHO = 1e-13, "one projection of a Gaussian vector: a few ε relative to ‖ξ‖ρ"
STAT = STAT_SIGMAS, "a sample statistic is within 6 standard errors except with probability ~1e-9"


# ---------------------------------------------------------------------------------------------------------------
# §16.1 data and SNR
# ---------------------------------------------------------------------------------------------------------------

def _noise(X, pos):
    n, M, _ = X.shape
    return X[np.arange(M)[None, :] != pos[:, None]].reshape(n, M - 1, -1)


def _data_rows() -> list:
    e = {k: [] for k in ("1", "2", "2s", "3", "3s", "4", "5", "5s")}
    for sig, pos, M in (("coordinate", "random", 2), ("random", "fixed", 3), ("random", "random", 4)):
        dc = MagenDataConfig(N=9, d=30, M=M, rho=2.5, sigma=1.3, signals=sig, signal_position=pos, n_test=4,
                             flip_rate=0.3, flips="exact")
        ds = mg_data.make_dataset(dc, np.random.default_rng(41), np.random.default_rng(42))
        mu = ds.mu
        e["1"] += [err(mu @ mu.T, dc.rho ** 2 * np.eye(2)),
                   err(ds.X[np.arange(dc.N), ds.signal_pos], np.where((ds.y_clean > 0)[:, None], mu[0], mu[1]))]
        xi = _noise(ds.X, ds.signal_pos)
        e["2"].append(float(np.max(np.abs(xi @ mu.T) / (np.linalg.norm(xi, axis=-1, keepdims=True) * dc.rho))))
        xt = ds.X_test[np.arange(dc.n_test), ds.signal_pos_test]
        e["3"] += [abs(int(np.sum(ds.y != ds.y_clean)) - round(dc.flip_rate * dc.N)),
                   err(xt, np.where((ds.y_test > 0)[:, None], mu[0], mu[1]))]
        e["4"] += [err(dc.snr, dc.rho / (dc.sigma * math.sqrt(dc.d))),
                   err(MagenDataConfig.rho_for_snr(dc.snr, dc.d, dc.sigma), dc.rho)]
        e["5"].append(err(dc.norm_ratio, dc.snr * math.sqrt(dc.d / (dc.d - 2))))
    for sig in ("coordinate", "random"):
        dc = MagenDataConfig(N=20000, d=6, rho=2.0, sigma=1.5, signals=sig, n_test=1)
        ds = mg_data.make_dataset(dc, np.random.default_rng(43), np.random.default_rng(44))
        xi = _noise(ds.X, ds.signal_pos)[:, 0]
        P = np.eye(dc.d) - ds.mu.T @ ds.mu / dc.rho ** 2
        C = xi.T @ xi / dc.N                                            # s.e. of an entry ≤ σ²√2/√N
        e["2s"].append(float(np.max(np.abs(C - dc.sigma ** 2 * P))) / (dc.sigma ** 2 * math.sqrt(2 / dc.N)))
        sq = np.sum(xi ** 2, axis=1) / (dc.sigma ** 2 * (dc.d - 2))     # mean 1, variance 2/(d − 2)
        e["5s"].append(abs(sq.mean() - 1) / math.sqrt(2 / (dc.d - 2) / dc.N))
    dc = MagenDataConfig(N=40, d=5, flip_rate=0.2, n_test=1)            # iid flips over 200 data sets
    counts = np.array([np.sum((ds := mg_data.make_dataset(dc, np.random.default_rng(500 + r),
                                                          np.random.default_rng(1))).y != ds.y_clean)
                       for r in range(200)])
    e["3s"].append(abs(counts.mean() - 8.0) / math.sqrt(0.2 * 0.8 * 40 / 200))
    ex = TOL_EXACT, "exact: copies and counts"
    return [
        _row("16.1", "⟨μ₁, μ₂⟩ = 0, ‖μ_j‖ = ρ; the signal token is μ of the clean label", "magen2025.data:make_dataset",
             "Gram matrix, closed form", e["1"], 1e-14, "QR of a Gaussian pair: orthonormal to a few ε"),
        _row("16.2", "every noise token is orthogonal to μ₁ and μ₂", "magen2025.data:project_off",
             "max |⟨ξ, μ_j⟩| / (‖ξ‖ρ)", e["2"], *ORTHO),
        _row("16.2", "Cov ξ = σ²(I − μ₁μ₁ᵀ/ρ² − μ₂μ₂ᵀ/ρ²)", "magen2025.data:sample",
             "sample covariance in standard errors (n = 20000)", e["2s"], *STAT),
        _row("16.3", "exactly round(ηN) flips (exact); the test set is clean", "magen2025.data:flip",
             "count, closed form", e["3"], *ex),
        _row("16.3", "iid flips: mean count ηN", "magen2025.data:flip", "mean over 200 data sets in standard errors",
             e["3s"], *STAT),
        _row("16.4", "SNR = ρ/(σ√d); rho_for_snr inverts it", "magen2025.config:MagenDataConfig.snr", "closed form",
             e["4"], *ARITHMETIC),
        _row("16.5", "ρ/(σ√(d−2)) = SNR·√(d/(d−2))", "magen2025.config:MagenDataConfig.norm_ratio", "closed form",
             e["5"], *ARITHMETIC),
        _row("16.5", "E‖ξ‖² = σ²(d − 2)", "magen2025.data:sample", "sample mean in standard errors (n = 20000)",
             e["5s"], *STAT),
    ]


# ---------------------------------------------------------------------------------------------------------------
# §16.2–§16.3 model, init, loss
# ---------------------------------------------------------------------------------------------------------------

def _model_rows(insts) -> list:
    e = {k: [] for k in ("6", "7", "8", "9", "10", "10s", "11")}
    for inst in insts:
        p, X, y = inst.p, inst.X, inst.y
        f, cache = mg_model.forward_cache(p, X)
        r = magen_ref_forward(p, X)
        e["6"].append(err(cache.p, r.p))
        e["7"] += [err(cache.Z, r.Z), err(cache.S, r.S), float(np.max(np.abs(cache.S.sum(-1) - 1.0)))]
        e["8"].append(err(cache.u, r.u))
        e["9"] += [err(f, r.f), err(mg_model.forward(p, X, inst.cfg), np.einsum("nmd,d,nm->n", X, p[-1], r.S))]
        e["11"].append(err(mg_model.loss_and_grads(p, X, y, inst.cfg)[0], ref_loss(r.f, y)))
    zero = mg_model.init_params(MagenModelConfig(), 7)
    e["10"] += [float(np.max(np.abs(a))) for a in zero]
    for seed, (form, d, s0) in enumerate((("prompt", 400, 0.3), ("query", 300, 0.2))):
        mc = MagenModelConfig(form=form, init="gaussian", sigma0=s0, d_h=5)
        p = mg_model.init_params(mc, d, np.random.default_rng(50 + seed))
        rng = np.random.default_rng(50 + seed)                          # the draw order of (16.10)
        if form == "prompt":
            want = [s0 * rng.standard_normal(d), s0 * rng.standard_normal(d)]
        else:
            WQ, WK, g = s0 * rng.standard_normal((5, d)), s0 * rng.standard_normal((5, d)), rng.standard_normal(d)
            want = [WQ, WK, g / math.sqrt(np.sum(g * g)), s0 * rng.standard_normal(d)]
        e["10"] += [err(a, b) for a, b in zip(p, want)]
        w = np.concatenate([a.ravel() for k, a in enumerate(p) if not (form == "query" and k == 2)]) / s0
        e["10s"].append(max(abs(w.std() - 1) * math.sqrt(2 * w.size), abs(w.mean()) * math.sqrt(w.size)))
    R = TWO_PATHS
    return [
        _row("16.6", "p = W_Kᵀ W_Q q (query form), p itself (prompt form)", "magen2025.model:prompt", "einsum",
             e["6"], *R),
        _row("16.7", "Z = X p, S = softmax over tokens (rows sum to 1)", "magen2025.model:forward_cache",
             "einsum, scipy.special.softmax", e["7"], *R),
        _row("16.8", "u = X v", "magen2025.model:forward_cache", "einsum", e["8"], *R),
        _row("16.9", "f = Σ_m s_m u_m = vᵀ Xᵀ softmax(X p)", "magen2025.model:forward", "einsum forward", e["9"], *R),
        _row("16.10", "zero init; Gaussian entries σ₀·N(0, 1) and q = g/‖g‖ in the draw order",
             "magen2025.model:init_params", "the same generator by hand", e["10"], 1e-15,
             "the same draws; q's norm by another formula: ~1 ulp"),
        _row("16.10", "Gaussian entries have mean 0 and std σ₀", "magen2025.model:init_params",
             "sample mean and std in standard errors", e["10s"], *STAT),
        _row("16.11", "L_S = mean logaddexp(0, −y f)", "magen2025.model:loss_and_grads",
             "np.logaddexp on the einsum f", e["11"], *R),
    ]


# ---------------------------------------------------------------------------------------------------------------
# §16.4 the backward line by line
# ---------------------------------------------------------------------------------------------------------------

def _probe(df, cache):
    """du, dZ (n, M) read off ``attention_backward`` with one-hot tokens in its last contractions."""
    n, M = cache.S.shape
    eye = np.eye(n * M).reshape(n, M, n * M)
    dZ, du = mg_model.attention_backward(df, cache, eye)
    return du.reshape(n, M), dZ.reshape(n, M)


def _backward_rows(insts) -> list:
    e = {k: [] for k in ("12", "13", "14", "15", "16", "17", "17z")}
    for t, inst in enumerate(insts):
        p, X, y = inst.p, inst.X, inst.y
        r = magen_ref_forward(p, X)
        f, cache = mg_model.forward_cache(p, X)
        # (16.12): the evaluation's gradients are the backward of g = ∂L/∂f (FD of the independent loss in f)
        g_fd = fd(lambda ff: ref_loss(ff, y), r.f)
        e["12"].append(max(err(a, b) for a, b in zip(mg_model.loss_grads_cache(p, X, y).grads,
                                                     mg_model.backward(g_fd, cache, X, p))))
        df = np.random.default_rng(60 + t).standard_normal(X.shape[0])
        gb = mg_model.backward(df, cache, X, p)
        keys = ("16", "14") if len(p) == 2 else ("17", "17", "17", "14")
        if not inst.small:            # default sizes: directional differences of Σ df f in each block
            rng = np.random.default_rng(70 + t)
            for k, key in enumerate(keys):
                fun = lambda a, k=k: float(df @ magen_ref_forward(with_block(p, k, a), X).f)
                e[key].append(dir_error(fun, gb[k], p[k], rng))
            continue
        du, dZ = _probe(df, cache)
        e["13"].append(err(du, fd(lambda u: float(df @ ref_core(r.Z, u)[1]), r.u)))
        e["15"].append(err(dZ, fd(lambda Z: float(df @ ref_core(Z, r.u)[1]), r.Z)))
        for k, key in enumerate(keys):
            e[key].append(err(gb[k], fd(lambda a, k=k: float(df @ magen_ref_forward(with_block(p, k, a), X).f), p[k])))
        if len(p) == 4:               # W_Q = W_K = 0 is stationary for the query/key blocks
            z = p._replace(W_Q=np.zeros_like(p.W_Q), W_K=np.zeros_like(p.W_K))
            gz = mg_model.backward(df, mg_model.forward_cache(z, X)[1], X, z)
            e["17z"] += [float(np.max(np.abs(gz.W_Q))), float(np.max(np.abs(gz.W_K)))]
    return [
        _row("16.12", "the gradients are the backward of g_i = ℓ'(y_i f_i) y_i / n",
             "magen2025.model:loss_grads_cache", "backward of central FD of L_S in f", e["12"], *FD),
        _row("16.13", "du_m = df s_m", "magen2025.model:attention_backward (one-hot probe)",
             "central FD of the core in u", e["13"], *FD),
        _row("16.14", "dv = Σ_i Σ_m du_im x_im", "magen2025.model:backward",
             "FD in v (full small / directional default)", e["14"], *FD),
        _row("16.15", "dZ = s ⊙ (ds − Σ s ds) = df s (u − ū)", "magen2025.model:attention_backward (one-hot probe)",
             "central FD of the core in Z", e["15"], *FD),
        _row("16.16", "dp = Σ_i Σ_m dZ_im x_im", "magen2025.model:backward",
             "FD in p (full small / directional default)", e["16"], *FD),
        _row("16.17", "dW_K = a dpᵀ, dW_Q = (W_K dp) qᵀ, dq = W_Qᵀ W_K dp", "magen2025.model:backward",
             "FD in W_Q, W_K, q (full small / directional default)", e["17"], *FD),
        _row("16.17", "W_Q = W_K = 0: dW_Q = dW_K = 0", "magen2025.model:backward", "exact zero", e["17z"],
             TOL_EXACT, "products with exact zeros"),
    ]


# ---------------------------------------------------------------------------------------------------------------
# §16.5–§16.6 the gradients of L_S, the first GD step, what training records, closed forms
# ---------------------------------------------------------------------------------------------------------------

def _gradient_rows(insts) -> list:
    e = {k: [] for k in ("18", "18f", "19", "19f", "20", "20f", "21", "21f", "22", "23", "24")}
    for t, inst in enumerate(insts):
        p, X, y, cfg = inst.p, inst.X, inst.y, inst.cfg
        loss, g = mg_model.loss_and_grads(p, X, y, cfg)
        prompt = len(p) == 2
        fkeys = ("19f", "18f") if prompt else ("20f", "20f", "20f", "18f")
        rng = np.random.default_rng(80 + t)
        for k, key in enumerate(fkeys):
            if float(np.max(np.abs(g[k]))) < FD_RESOLVES * loss:
                continue
            fun = lambda a, k=k: ref_loss(magen_ref_forward(with_block(p, k, a), X).f, y)
            e[key].append(err(g[k], fd(fun, p[k])) if inst.small else dir_error(fun, g[k], p[k], rng))
        if inst.small:
            gf = mg_formulas.gradients(p, X, y, cfg)
            e["18"].append(err(g.v, gf.v))
            if prompt:
                e["19"].append(err(g.p, gf.p))
            else:
                e["20"] += [err(a, b) for a, b in zip(g[:3], gf[:3])]
        r = magen_ref_forward(p, X)
        n, M, _ = X.shape
        if inst.data is not None:     # (16.22): the recorded attention on the signal token and the margins
            ds = inst.data
            obj = mg_objective.MagenObjective(p, ds, cfg, test=False)
            row = obj.record(loss, *mg_model.forward_cache(p, X))
            att = r.S[np.arange(n), ds.signal_pos]
            clean = ds.y == ds.y_clean
            e["22"] += [err(row["attn_signal_clean"], att[clean].mean()),
                        err(row["attn_signal_flipped"], att[~clean].mean()),
                        err(row["margin_min"], np.min(y * r.f)),
                        err(row["margin_flipped_min"], np.min((y * r.f)[~clean]))]
        if not prompt:
            continue
        gi = ref_g(r.f, y)
        if M == 2:                    # (16.23) the sigmoid form
            diff = X[:, 0] - X[:, 1]
            s0 = 1.0 / (1.0 + np.exp(-diff @ p.p))
            f2 = s0 * r.u[:, 0] + (1 - s0) * r.u[:, 1]
            dp2 = np.einsum("n,nd->d", gi * s0 * (1 - s0) * (r.u[:, 0] - r.u[:, 1]), diff)
            e["23"] += [err(mg_model.forward(p, X, cfg), f2), err(g.p, dp2)]
        # (16.24) at p = 0, and (16.21) the first GD step from p = v = 0
        p0 = p._replace(p=np.zeros_like(p.p))
        _, g0 = mg_model.loss_and_grads(p0, X, y, cfg)
        r0 = magen_ref_forward(p0, X)
        gi0 = ref_g(r0.f, y)
        e["24"] += [err(g0.v, np.einsum("n,nmd->d", gi0, X) / M),
                    err(g0.p, np.einsum("n,nm,nmd->d", gi0, r0.u - r0.u.mean(axis=1, keepdims=True), X) / M)]
        eta = 2.5
        zero = type(p)(np.zeros_like(p.p), np.zeros_like(p.v))
        _, gz = mg_model.loss_and_grads(zero, X, y, cfg)
        v1 = eta / (2 * n * M) * np.einsum("n,nmd->d", y, X)
        e["21"] += [float(np.max(np.abs(gz.p))), err(-eta * gz.v, v1)]
        e["21f"].append(err(mg_formulas.first_gd_step(X, y, eta).v, v1))
    R = TWO_PATHS
    return [
        _row("16.18", "∇_v L_S = Σ_i g_i Σ_m s_im x_im", "magen2025.formulas:gradients",
             "magen2025.model.loss_and_grads", e["18"], *R),
        _row("16.18", "∇_v L_S", "magen2025.model:loss_and_grads", "FD of L_S (blocks ≥ 1e-3·L_S)", e["18f"], *FD),
        _row("16.19", "∇_p L_S = Σ_i g_i Σ_m s_im (u_im − ū_i) x_im", "magen2025.formulas:gradients",
             "magen2025.model.loss_and_grads", e["19"], *R),
        _row("16.19", "∇_p L_S", "magen2025.model:loss_and_grads", "FD of L_S (blocks ≥ 1e-3·L_S)", e["19f"], *FD),
        _row("16.20", "∇W_K, ∇W_Q, ∇q as sums of c_im", "magen2025.formulas:gradients",
             "magen2025.model.loss_and_grads", e["20"], *R),
        _row("16.20", "∇W_Q, ∇W_K, ∇q L_S", "magen2025.model:loss_and_grads", "FD of L_S (blocks ≥ 1e-3·L_S)",
             e["20f"], *FD),
        _row("16.21", "from p = v = 0: ∇_p = 0, v₁ = η/(2nM) Σ y_i Σ_m x_im", "magen2025.model:loss_and_grads",
             "closed form", e["21"], *R),
        _row("16.21", "the first GD step written out", "magen2025.formulas:first_gd_step", "closed form (einsum)",
             e["21f"], *R),
        _row("16.22", "recorded attention on the signal token (clean, flipped) and margins",
             "magen2025.objective:MagenObjective.record", "independent S and f", e["22"], *R),
        _row("16.23", "M = 2: f = σ(pᵀ(x₀−x₁)) u₀ + (1−σ) u₁, ∇_p = Σ g s(1−s)(u₀−u₁)(x₀−x₁)",
             "magen2025.model:loss_and_grads", "closed form on the independent u", e["23"], *R),
        _row("16.24", "p = 0: ∇_v = (1/M) Σ g_i Σ_m x_im, ∇_p = (1/M) Σ g_i Σ_m (u_im − ū_i) x_im",
             "magen2025.model:loss_and_grads", "closed form on the independent u", e["24"], *R),
    ]


def check_magen(ctx) -> list:
    """docs/math.md §16 (the third setting): data, model, loss, backward, gradients, closed forms.

    ``ctx`` (the first setting's instances) is not used: this family builds its own instances (``magen_instances``).
    """
    insts = magen_instances()
    return _data_rows() + _model_rows(insts) + _backward_rows(insts) + _gradient_rows(insts)
