"""Audit families for docs/math.md §4: the backward line by line and the gradients of L_S."""
from __future__ import annotations

import numpy as np
import scipy.special

from ..jiang2024 import _kernels, formulas, model
from .. import gradcheck
from ..jiang2024.model import Params
from .core import (H_FD, PAPER_FORM_MAX_M, TOL_FD, TOL_ROUND, TWO_PATHS, _row, _with, cotangent, dir_error, err,
                   fd_cotangent_grads, fd_loss_grads, ref_core, ref_forward, ref_G, ref_loss, ref_lprime)

# ---------------------------------------------------------------------------------------------------------------
# §4 gradients
# ---------------------------------------------------------------------------------------------------------------

def check_backward_steps(ctx) -> list:
    """(4.1)-(4.11): each chain-rule line of the code against finite differences of the independent forward."""
    e = {k: [] for k in ("4.1", "4.2", "4.3", "4.4V", "4.4w", "4.5", "4.6", "4.7", "4.8", "4.8f", "4.9",
                         "4.10", "4.11Q", "4.11K", "nbQK", "nbv")}
    for t, inst in enumerate(ctx["small"]):
        p, X, y = inst.p, inst.X, inst.y
        n, M, _ = X.shape
        r = ref_forward(p, X)
        # (4.1) c_i = ℓ'(y_i f_i) y_i / N  vs  ∂L/∂f by central differences of the independent loss
        c_code = model.logistic_loss_derivative(y * r.f) * y / n
        c_fd = gradcheck.numerical_grad(lambda f: ref_loss(f, y), r.f.copy(), H_FD)
        e["4.1"].append(err(c_code, c_fd))
        df = cotangent(inst, 40 + t)
        f_code, cache = model.forward_cache(p, X, "numpy")
        dQ, dK, dv = model.attention_backward(df, cache.S, cache.v, cache.Q, cache.K)
        # (4.2) dv vs FD of Σ df f(Q, K, v) in v
        fv = lambda v: float(df @ ref_core(r.Q, r.K, v).f)
        e["4.2"].append(err(dv, gradcheck.numerical_grad(fv, r.v.copy(), H_FD)))
        # (4.10) dQ, dK vs FD of the independent core in Q, K
        fq = lambda Q: float(df @ ref_core(Q, r.K, r.v).f)
        fk = lambda K: float(df @ ref_core(r.Q, K, r.v).f)
        e["4.10"] += [err(dQ, gradcheck.numerical_grad(fq, r.Q.copy(), H_FD)),
                      err(dK, gradcheck.numerical_grad(fk, r.K.copy(), H_FD))]
        # (4.5) ∂f/∂S = c v / M (closed form) vs FD of f = (1/M) Σ_lj S_lj v_j in S (the doc's claim)
        fS = lambda S: float(df @ (np.einsum("nlj,nj->n", S, r.v) / M))
        e["4.5"].append(err(np.broadcast_to((df[:, None] * r.v / M)[:, None, :], r.S.shape),
                            gradcheck.numerical_grad(fS, r.S.copy(), H_FD)))
        # (4.6) the softmax Jacobian of the code's softmax, by FD, vs s_lj(δ_jk − s_lk)
        z0 = r.Z[0, 0].copy()
        J = np.array([gradcheck.numerical_grad(lambda z: float(model.softmax(z)[j]), z0.copy(), H_FD)
                      for j in range(M)])
        s0 = r.S[0, 0]
        e["4.6"].append(err(J, np.diag(s0) - np.outer(s0, s0)))
        # FD of Σ df f in Z (the independent attention readout): = c G = dZ
        fz = lambda Z: float(df @ (np.einsum("nlj,nj->n", scipy.special.softmax(Z, axis=-1), r.v) / M))
        dZ_fd = gradcheck.numerical_grad(fz, r.Z.copy(), H_FD)
        if M == p.W_Q.shape[1]:
            # d_h = M: K_i is square, so the code's dZ is recovered exactly from dQ = dZ K
            dZ_code = np.linalg.solve(np.transpose(cache.K, (0, 2, 1)), np.transpose(dQ, (0, 2, 1)))
            dZ_code = np.transpose(dZ_code, (0, 2, 1))
            dS = np.broadcast_to((df[:, None] * r.v / M)[:, None, :], r.S.shape)
            # (4.7): JVP of the independent softmax applied to dS, by FD: ∂/∂Z ⟨dS, softmax(Z)⟩
            jvp = gradcheck.numerical_grad(lambda Z: float(np.sum(dS * scipy.special.softmax(Z, axis=-1))),
                                           r.Z.copy(), H_FD)
            e["4.7"].append(err(dZ_code, jvp))
            e["4.8"].append(err(dZ_code, df[:, None, None] * ref_G(r)))
            e["4.8f"].append(err(dZ_code, dZ_fd))
            e["4.9"].append(float(np.max(np.abs(dZ_code.sum(-1)))) / max(float(np.max(np.abs(dZ_code))), 1e-300))
        # (4.3), (4.4), (4.11): model.backward vs FD of Σ df f in each block
        g = model.backward(df, cache, p, X, "numpy")
        fdg = fd_cotangent_grads(p, X, df)
        e["4.11Q"].append(err(g.W_Q, fdg.W_Q))
        e["4.11K"].append(err(g.W_K, fdg.W_K))
        e["4.4V"].append(err(g.W_V, fdg.W_V))
        e["4.4w"].append(err(g.w_O, fdg.w_O))
        # du = dW_V w_O / ‖w_O‖² vs FD of Σ df f in u (independent core with v = X u)
        u0 = p.W_V @ p.w_O
        fu = lambda u: float(df @ ref_core(r.Q, r.K, np.einsum("nld,d->nl", X, u)).f)
        e["4.3"].append(err(g.W_V @ p.w_O / (p.w_O @ p.w_O), gradcheck.numerical_grad(fu, u0.copy(), H_FD)))
    # numba kernels vs the numpy core, on every instance
    for t, inst in enumerate(ctx["all"]):
        _, cache = model.forward_cache(inst.p, inst.X, "numpy")
        df = cotangent(inst, 60 + t)
        a = _kernels.attention_backward(df, cache.S, cache.v, cache.Q, cache.K)
        b = model.attention_backward(df, cache.S, cache.v, cache.Q, cache.K)
        e["nbQK"] += [err(a[0], b[0]), err(a[1], b[1])]
        e["nbv"].append(err(a[2], b[2]))
    F = TOL_FD, "central FD h=1e-5 in float64: ~1e-10 relative; saturated/large-margin instances need more"
    R = TWO_PATHS
    KINV = 1e-9, "K⁻¹ recovery loses ~cond(K) ≤ 1e3 digits on top of rounding"
    return [
        _row("4.1", "c_i = ℓ'(y_i f_i) y_i / N", "model:logistic_loss_derivative (loss_grads_cache)",
             "central FD of L_S in f", e["4.1"], *F),
        _row("4.2", "dv_j = c ā_j", "model:attention_backward", "central FD of the core in v", e["4.2"], *F),
        _row("4.2", "dv: numba = numpy", "_kernels:attention_backward", "model.attention_backward", e["nbv"], *R),
        _row("4.3", "du = Σ_i X_iᵀ dv_i", "model:backward", "central FD in u = W_V w_O", e["4.3"], *F),
        _row("4.4", "dW_V = du w_Oᵀ", "model:backward", "central FD in W_V", e["4.4V"], *F),
        _row("4.4", "dw_O = W_Vᵀ du", "model:backward", "central FD in w_O", e["4.4w"], *F),
        _row("4.5", "∂f/∂S_lj = c v_j / M (closed form used by the backward)", "model:attention_backward",
             "central FD of (1/M)𝟙ᵀSv in S", e["4.5"], *F),
        _row("4.6", "∂s_lj/∂z_lk = s_lj(δ_jk − s_lk)", "model:softmax", "central FD Jacobian", e["4.6"], *F),
        _row("4.7", "dZ = S ⊙ (dS − rowsum(S ⊙ dS)𝟙ᵀ)", "model:attention_backward (dZ = dQ K⁻¹, d_h = M)",
             "central FD of ⟨dS, softmax(Z)⟩", e["4.7"], *F),
        _row("4.8", "dZ = c G, G = (1/M) s(v − Σ s v)", "model:attention_backward (dZ = dQ K⁻¹)",
             "independent G", e["4.8"], *KINV),
        _row("4.8", "G = ∂f/∂Z", "model:attention_backward (dZ = dQ K⁻¹)", "central FD of f in Z", e["4.8f"], *F),
        _row("4.9", "Σ_j G_lj = 0", "model:attention_backward (dZ = dQ K⁻¹)", "row sums / max|dZ|", e["4.9"],
             *KINV),
        _row("4.10", "dQ = dZ K, dK = dZᵀ Q", "model:attention_backward", "central FD of the core in Q, K",
             e["4.10"], *F),
        _row("4.10", "dQ, dK: numba = numpy", "_kernels:attention_backward", "model.attention_backward",
             e["nbQK"], *R),
        _row("4.11", "dW_Q = Σ_i X_iᵀ dQ_i", "model:backward", "central FD in W_Q", e["4.11Q"], *F),
        _row("4.11", "dW_K = Σ_i X_iᵀ dK_i", "model:backward", "central FD in W_K", e["4.11K"], *F),
    ]


def check_loss_gradients(ctx) -> list:
    """(4.12)-(4.18): the gradients of L_S against FD, the closed matrix forms and the paper-form sums."""
    e = {k: [] for k in ("4.12", "4.13Q", "4.13K", "4.13c", "4.14V", "4.14w", "4.14c",
                         "4.15", "4.16", "4.17", "4.18")}
    for t, inst in enumerate(ctx["all"]):
        p, X, y = inst.p, inst.X, inst.y
        _, g = model.loss_and_grads(p, X, y, "numpy")
        r = ref_forward(p, X)
        c = ref_lprime(y * r.f) * y / X.shape[0]
        A = np.einsum("n,nla,nlj,njb->ab", c, X, ref_G(r), X, optimize=True)
        gv = np.einsum("n,nj,njd->d", c, r.abar, X)
        e["4.13c"] += [err(g.W_Q, A @ p.W_K), err(g.W_K, A.T @ p.W_Q)]
        e["4.14c"] += [err(g.W_V, np.outer(gv, p.w_O)), err(g.w_O, p.W_V.T @ gv)]
        if inst.small:
            fdg = fd_loss_grads(p, X, y)
            e["4.13Q"].append(err(g.W_Q, fdg.W_Q))
            e["4.13K"].append(err(g.W_K, fdg.W_K))
            e["4.14V"].append(err(g.W_V, fdg.W_V))
            e["4.14w"].append(err(g.w_O, fdg.w_O))
            if p.W_Q.shape[0] == p.W_Q.shape[1]:
                # d = d_h: the code's A = ∇_W L for W = W_Q W_Kᵀ is recovered from ∇W_Q = A W_K
                A_code = np.linalg.solve(p.W_K.T, g.W_Q.T).T
                W0 = p.W_Q @ p.W_K.T

                def LW(W):   # L_S as a function of W = W_Q W_Kᵀ (factor W = W · I)
                    return ref_loss(ref_forward(Params(W, np.eye(W.shape[0]), p.W_V, p.w_O), X).f, y)
                e["4.12"].append(err(A_code, gradcheck.numerical_grad(LW, W0.copy(), H_FD)))
        else:
            rng = np.random.default_rng(70 + t)
            for k, key in ((0, "4.13Q"), (1, "4.13K"), (2, "4.14V"), (3, "4.14w")):
                fun = lambda a, k=k: ref_loss(ref_forward(_with(p, k, a), X).f, y)
                e[key].append(dir_error(fun, g[k], p[k], rng))
        if inst.small or X.shape[1] <= PAPER_FORM_MAX_M:
            gf = formulas.gradients(p, X, y)
            for k, key in ((0, "4.17"), (1, "4.18"), (2, "4.16"), (3, "4.15")):
                e[key].append(err(g[k], gf[k]))
    F = TOL_FD, "central FD h=1e-5 in float64 (directional ones relative to ‖grad‖): ~1e-10"
    R = TOL_ROUND, "two float64 code paths: summation order only (~1e-16 × M² terms)"
    return [
        _row("4.12", "A = Σ c_i X_iᵀ G_i X_i is ∇ of L_S in W = W_Q W_Kᵀ", "model:loss_and_grads (A = ∇W_Q W_K⁻¹)",
             "central FD of L_S in W", e["4.12"], 1e-6,
             "FD ~1e-10 amplified by the W_K⁻¹ recovery (cond ≤ 1e3)"),
        _row("4.13", "∇W_Q L_S = A W_K", "model:loss_and_grads", "FD (full small / directional paper)", e["4.13Q"],
             *F),
        _row("4.13", "∇W_K L_S = Aᵀ W_Q", "model:loss_and_grads", "FD (full small / directional paper)", e["4.13K"],
             *F),
        _row("4.13", "∇W_Q = A W_K, ∇W_K = Aᵀ W_Q", "model:loss_and_grads", "closed form, independent A",
             e["4.13c"], *R),
        _row("4.14", "∇W_V L_S = (Σ c_i X_iᵀ ā_i) w_Oᵀ", "model:loss_and_grads", "FD (full small / directional)",
             e["4.14V"], *F),
        _row("4.14", "∇w_O L_S = W_Vᵀ Σ c_i X_iᵀ ā_i", "model:loss_and_grads", "FD (full small / directional)",
             e["4.14w"], *F),
        _row("4.14", "∇W_V, ∇w_O closed forms", "model:loss_and_grads", "closed form, independent ā, c",
             e["4.14c"], *R),
        _row("4.15", "∇w_O as per-token sums", "formulas:gradients", "model.loss_and_grads", e["4.15"], *R),
        _row("4.16", "∇W_V as per-token sums", "formulas:gradients", "model.loss_and_grads", e["4.16"], *R),
        _row("4.17", "∇W_Q as per-token sums", "formulas:gradients", "model.loss_and_grads", e["4.17"], *R),
        _row("4.18", "∇W_K as per-token sums", "formulas:gradients", "model.loss_and_grads", e["4.18"], *R),
    ]


