"""Audit families for docs/math.md §1-§3: data and SNR, the forward pass, loss, softmax shift and initialisation."""
from __future__ import annotations

import math

import numpy as np
import scipy.special

from ..jiang2024 import _kernels, config, data, formulas, init, model
from ..jiang2024.config import DataConfig, ModelConfig
from ..jiang2024.train import train as train_fn
from .core import (H_FD, PAPER_FORM_MAX_M, STAT_SIGMAS, TOL_EXACT, TOL_FD, TOL_ROUND, TWO_PATHS, _row, err,
                   ref_forward, ref_loss, ref_lprime)

# ---------------------------------------------------------------------------------------------------------------
# §1 data and SNR
# ---------------------------------------------------------------------------------------------------------------

def check_data(ctx) -> list:
    rows = []
    dc = DataConfig(N=6, M=4, d=9, mu_norm=3.0, sigma_p=2.0, sigma_w=0.5, n_test=2)
    mp, mm = data.default_signals(dc)
    e1, e2 = np.eye(dc.d)[0], np.eye(dc.d)[1]
    rows.append(_row("1.2", "μ₊ = ‖μ‖e₁, μ₋ = ‖μ‖e₂, orthogonal", "data:default_signals", "closed form",
                     [err(mp, dc.mu_norm * e1), err(mm, dc.mu_norm * e2), abs(mp @ mm)], TOL_EXACT,
                     "exact: a coordinate vector times a float"))
    errs = []
    for other in ("weak_gaussian", "zero"):
        c = dc.replace(other_tokens=other)
        X, yc = data.sample(c, 6, np.random.default_rng(21))
        errs.append(err(X[:, 0], np.where(yc[:, None] > 0, mp, mm)))
        if other == "zero":
            errs.append(float(np.max(np.abs(X[:, 2:]))))
    rows.append(_row("1.3", "token 0 = μ_ỹ; tokens ≥ 2 are 0 with other_tokens='zero'", "data:sample",
                     "closed form", errs, TOL_EXACT, "exact: the tokens are copied, not computed"))
    X, _ = data.sample(dc.replace(project_noise=True), 6, np.random.default_rng(22))
    cos = [np.max(np.abs(X[:, 1:] @ mu) / (np.linalg.norm(X[:, 1:], axis=-1) * np.linalg.norm(mu))) for mu in (mp, mm)]
    rows.append(_row("1.4", "project_noise: ⟨μ±, x_l⟩ = 0 for l ≥ 1", "data:sample", "cosine with μ±", cos,
                     TOL_ROUND, "one projection in float64: cosine ~1e-16"))
    errs = []
    for rate in (0.0, 0.1, 0.3, 0.49):
        c = dc.replace(N=10, flip_rate=rate)
        ds = data.make_dataset(c, np.random.default_rng(23), np.random.default_rng(24))
        errs.append(abs(int(np.sum(ds.y != ds.y_clean)) - round(rate * c.N)))
        errs.append(float(np.max(np.abs(ds.X[:, 0] - np.where(ds.y_clean[:, None] > 0, ds.mu_plus, ds.mu_minus)))))
    rows.append(_row("1.5", "exactly round(pN) flips; the signal follows the clean label", "data:make_dataset",
                     "count", errs, TOL_EXACT, "exact: integer count"))
    errs6, errs7, errs8 = [], [], []
    for N, mu, sp, sa, d in ((20, 80.0, 4.0, 0.2, 1024), (10, 1.0, 1.0, 0.05, 2048), (3, 7.5, 2.5, 0.3, 17)):
        c = DataConfig(N=N, mu_norm=mu, sigma_p=sp, snr_axis_sigma=sa, d=d, M=3, labels="rademacher", n_test=3)
        errs6.append(err(c.snr, mu / (sp * math.sqrt(d))))
        errs7.append(err(c.snr_axis, mu / (sa * math.sqrt(d))))
        errs8.append(err(c.n_snr_axis2, (sp / sa) ** 2 * c.n_snr2))
    rows.append(_row("1.6", "SNR = ‖μ‖/(σ_p √d)", "config:DataConfig.snr", "closed form", errs6, TOL_ROUND,
                     "a few float64 operations"))
    rows.append(_row("1.7", "SNR_axis = ‖μ‖/(σ_axis √d)", "config:DataConfig.snr_axis", "closed form", errs7,
                     TOL_ROUND, "a few float64 operations"))
    rows.append(_row("1.8", "N·SNR_axis² = (σ_p/σ_axis)² N·SNR²", "config:DataConfig.n_snr_axis2", "closed form",
                     errs8, TOL_ROUND, "a few float64 operations"))
    dc1, _, _ = config.figure1_setting(N=10, mu_norm=64.0)       # N‖μ‖² = 40960
    e9 = [abs(config.boundary_n_snr2() - 2.5), abs(config.BOUNDARY_N_SNR2 - 2.5),
          err(dc1.n_snr2, 2.5), err(dc1.n_snr_axis2, 1000.0),
          err(config.boundary_n_snr2() * 16.0 * 1024.0, 40960.0)]
    rows.append(_row("1.9", "Figure 1: N·SNR_axis² = 1000 ⇔ N·SNR² = 2.5 ⇔ N‖μ‖² = 40960",
                     "config:boundary_n_snr2", "closed form (N=10, ‖μ‖=64)", e9, TOL_ROUND,
                     "1000/400 = 2.5 is exact; the SNR path has a sqrt and squares (~1e-16)"))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# §2 forward
# ---------------------------------------------------------------------------------------------------------------

def check_forward(ctx) -> list:
    e = {k: [] for k in ("2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "2.7f", "rows", "nbf")}
    for inst in ctx["all"]:
        f, cache = model.forward_cache(inst.p, inst.X, "numpy")
        r = ref_forward(inst.p, inst.X)
        e["2.1"] += [err(cache.Q, r.Q), err(cache.K, r.K)]
        e["2.2"].append(err(cache.v, r.v))
        e["2.3"].append(err(cache.Z, r.Z))
        e["2.4"] += [err(cache.S, r.S), float(np.max(np.abs(cache.S.sum(-1) - 1.0)))]
        e["2.5"].append(err(cache.abar, r.abar))
        e["2.6"].append(err(f, r.f))
        e["2.7"].append(err(model.forward(inst.p, inst.X), r.f))
        if inst.small or inst.X.shape[1] <= PAPER_FORM_MAX_M:
            fp = np.array([formulas._sample_terms(inst.p, Xi)[3] for Xi in inst.X])
            e["2.7f"].append(err(model.forward(inst.p, inst.X), fp))
        nb = _kernels.attention_forward(cache.Q, cache.K, cache.v)
        npy = model.attention_forward(cache.Q, cache.K, cache.v)
        e["nbf"].append(max(err(a, b) for a, b in zip(nb, npy)))
    R = TWO_PATHS
    return [
        _row("2.1", "Q = X W_Q, K = X W_K", "model:forward_cache", "einsum", e["2.1"], *R),
        _row("2.2", "v = X (W_V w_O)", "model:forward_cache", "einsum (X W_V) w_O", e["2.2"], *R),
        _row("2.3", "Z = Q Kᵀ", "model:attention_forward", "einsum", e["2.3"], *R),
        _row("2.4", "S = row softmax of Z (rows sum to 1)", "model:softmax", "scipy.special.softmax", e["2.4"], *R),
        _row("2.5", "ā = (1/M) Sᵀ𝟙", "model:attention_forward", "einsum", e["2.5"], *R),
        _row("2.6", "f = Σ_j ā_j v_j", "model:attention_forward", "(1/M) 𝟙ᵀ S v by einsum", e["2.6"], *R),
        _row("2.6", "attention core: numba = numpy (Z, S, ā, f)", "_kernels:attention_forward",
             "model.attention_forward", e["nbf"], *R),
        _row("2.7", "f(X) of the whole model", "model:forward", "einsum forward", e["2.7"], *R),
        _row("2.7", "f(X) of the whole model", "model:forward", "formulas per-token loops", e["2.7f"], *R),
    ]


# ---------------------------------------------------------------------------------------------------------------
# §3 loss, stable primitives, initialisation
# ---------------------------------------------------------------------------------------------------------------

def check_loss(ctx) -> list:
    rows = []
    z = np.linspace(-30.0, 30.0, 241)
    big = np.linspace(40.0, 700.0, 67)
    e1 = [err(model.logistic_loss(z), np.log1p(np.exp(-z))),
          err(model.logistic_loss(big), np.exp(-big)),   # log1p(e^{-z}) = e^{-z}(1 − e^{-z}/2 …): rel 1e-18
          float(np.any(~np.isfinite(model.logistic_loss(np.array([-800.0, 800.0])))))]
    rows.append(_row("3.1", "ℓ(z) = logaddexp(0, −z)", "model:logistic_loss",
                     "log1p(exp(−z)) on |z| ≤ 30; e^{−z} for z ≥ 40", e1, 1e-14,
                     "log1p/exp are correctly rounded to ~1 ulp: ~1e-16 relative, ×100 margin"))
    zz = np.linspace(-20.0, 20.0, 81)
    fd = np.array([(np.logaddexp(0, -(t + H_FD)) - np.logaddexp(0, -(t - H_FD))) / (2 * H_FD) for t in zz])
    lp = model.logistic_loss_derivative(zz)
    rows.append(_row("3.2", "ℓ'(z) = −σ(−z)", "model:logistic_loss_derivative", "central FD of logaddexp",
                     [err(lp, fd)], TOL_FD, "FD h=1e-5: truncation ~h²/6 ≈ 2e-11, rounding ε/h ≈ 1e-11"))
    zs = np.concatenate([zz, [-700.0, 700.0]])
    lps = model.logistic_loss_derivative(zs)
    rows.append(_row("3.2", "ℓ'(z) = −1/(1+e^z) ∈ (−1, 0)", "model:logistic_loss_derivative",
                     "−exp(−logaddexp(0, z)); range", [err(lps, ref_lprime(zs)),
                     0.0 if np.all((lps >= -1) & (lps <= 0)) else math.inf], 1e-14,
                     "exp/log are correctly rounded to ~1 ulp: ~1e-16 relative, ×100 margin"))
    e3, e4 = [], []
    for inst in ctx["all"]:
        f = ref_forward(inst.p, inst.X).f
        e3.append(err(model.mean_loss(model.forward(inst.p, inst.X), inst.y), ref_loss(f, inst.y)))
        e3.append(err(model.loss_and_grads(inst.p, inst.X, inst.y)[0], ref_loss(f, inst.y)))
    for inst in ctx["small"][:3]:
        pt, hist = train_fn(inst.p, inst.X, inst.y, X_test=inst.X_test, y_test=inst.y_test, lr=0.1, steps=2,
                               backend="numpy")
        ft = ref_forward(pt, inst.X_test).f
        e4 += [err(hist.final_test_loss, ref_loss(ft, inst.y_test)),
               err(hist.final_test_error, np.mean(np.sign(ft) != inst.y_test))]
    rows.append(_row("3.3", "L_S = (1/N) Σ ℓ(y_i f_i)", "model:mean_loss, loss_and_grads", "logaddexp on einsum f",
                     e3, *TWO_PATHS))
    rows.append(_row("3.4", "test loss and test 0-1 error", "train:run (History.final_*)",
                     "logaddexp and sign on einsum f", e4, TOL_ROUND, "two float64 code paths"))
    rng = np.random.default_rng(31)
    Z = rng.standard_normal((3, 4, 5)) * 3
    e5 = [err(model.softmax(Z + c), scipy.special.softmax(Z, axis=-1)) for c in (-50.0, 7.0, 100.0)]
    Zs = np.array([[[1000.0, 0.0, -1000.0], [-800.0, 900.0, 0.0]]])
    e5.append(err(model.softmax(Zs), np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])))
    rows.append(_row("3.5", "softmax(z + c𝟙) = softmax(z); no overflow at |z| = 1000", "model:softmax",
                     "scipy softmax of the unshifted z; one-hot limit", e5, 1e-12,
                     "z + c rounds to ~|c|·ε ≈ 2e-14 (c ≤ 100), which moves s by the same relative amount"))
    # initialisation statistics
    d, dh, dv, s = 256, 32, 48, 16.0
    mc = ModelConfig(d_h=dh, d_v=dv, init_scale=s)
    pu = init.init_params(mc, d, np.random.default_rng(32))
    pg = init.init_params(mc.replace(init="gaussian", sigma0=1e-3), d, np.random.default_rng(33))
    e6, e7, e8 = [], [], []
    b = 1.0 / (s * math.sqrt(d))
    for W in pu[:3]:
        e6.append(abs(np.mean(W ** 2) / (b * b / 3) - 1) * math.sqrt(W.size) / 0.894)
        e6.append(0.0 if np.max(np.abs(W)) <= b else math.inf)
    for W in pg[:3]:
        e7.append(abs(np.mean(W ** 2) / 1e-6 - 1) * math.sqrt(W.size) / math.sqrt(2))
    wo = np.array([init.init_params(mc, 8, np.random.default_rng(34 + k)).w_O for k in range(40)])   # (40, d_v)
    e8.append(abs(np.mean(np.sum(wo ** 2, axis=1)) * 3 - 1) * math.sqrt(wo.size) / 0.894)
    e8.append(0.0 if np.max(np.abs(wo)) <= 1 / math.sqrt(dv) else math.inf)
    st = "sampling std of the second moment of n i.i.d. entries; six of them"
    rows.append(_row("3.6", "W ~ U(±1/√d)/s (range, variance b²/3)", "init:init_params",
                     "second moment in units of its sampling std", e6, STAT_SIGMAS, st))
    rows.append(_row("3.7", "W ~ N(0, σ₀²)", "init:init_params", "second moment in units of its sampling std",
                     e7, STAT_SIGMAS, st))
    rows.append(_row("3.8", "w_O ~ U(±1/√d_v), E‖w_O‖² = 1/3", "init:init_params",
                     "40 draws: ‖w_O‖² mean in units of its sampling std; range", e8, STAT_SIGMAS, st))
    return rows


