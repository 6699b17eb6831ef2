"""Audit family for docs/math.md §7-§8: the token span, the coefficients and span coordinates."""
from __future__ import annotations

import math

import numpy as np

from ..jiang2024 import decompose, model, span, tokens, tracking
from .. import gradcheck
from ..config import TrainConfig
from ..jiang2024.model import Params
from ..jiang2024.train import make_objective
from ..trainer import run as train_run
from ..jiang2024.train import train as train_fn
from .core import H_FD, TOL_EXACT, TOL_FD, TOL_TRAJ, _row, err, ref_forward, ref_loss

# ---------------------------------------------------------------------------------------------------------------
# §7 span and coefficients, §8 span coordinates
# ---------------------------------------------------------------------------------------------------------------

def _span_residual(D, U) -> float:
    """‖D − Π_U D‖ / ‖D‖ with Π_U the projector on the row space of U (n_u, d), by numpy's own QR."""
    Qm, _ = np.linalg.qr(U.T)
    nd = float(np.linalg.norm(D))
    return float(np.linalg.norm(D - Qm @ (Qm.T @ D))) / nd if nd > 0 else 0.0


def _dense_run(inst, steps, train_w_O=False) -> Params:
    return train_fn(inst.p, inst.X, inst.y, config=TrainConfig(lr=inst.lr, steps=steps, backend="numpy",
                                                                   train_w_O=train_w_O))[0]


def check_span(ctx) -> list:
    e = {k: [] for k in ("7.2", "7.5", "7.6", "7.7", "7.9", "7.11", "7.12", "7.14", "7.19",
                         "8.5", "8.6t", "8.6o", "8.7", "8.8", "8.9")}
    pitfall = []
    steps = 4
    cases = [i for i in ctx["small"] if i.X.shape[1] > 1 and i.name != "margin"] + \
            [i for i in ctx["paper"] if i.name.endswith("init")]
    for inst in cases:
        p, X, y = inst.p, inst.X, inst.y
        U = tokens.unique_tokens(X).U
        cfg = TrainConfig(lr=inst.lr, steps=steps, backend="numpy")
        pd = _dense_run(inst, steps)
        # (7.2) dense GD increments stay in span(U)
        e["7.2"] += [_span_residual(pd[k] - p[k], U) for k in range(3)]
        # (7.5), (7.14): tracked coefficients vs recovered from the weights; (7.19) residuals
        pt, _, tr = tracking.track_train(p, X, y, config=cfg)
        dt = tr.decomposition(signals=inst.signals)
        dr = decompose.recover(p, pd, X, signals=inst.signals)
        cmp = decompose.compare(dt, dr)
        e["7.5"].append(cmp["coef"])
        e["7.14"] += [cmp["alpha"], cmp["beta"]]
        e["7.19"] += [dr.residual[k] for k in ("W_Q", "W_K", "W_V", "u")]
        if inst.signals is not None:
            e["7.6"] += [err(dt.gamma_plus, dr.gamma_plus), err(dt.gamma_minus, dr.gamma_minus),
                         err(dt.rho, dr.rho)]
            h = tr.history(inst.signals)
            e["7.7"] += [max(0.0, -float(np.min(np.diff(h["gamma_plus"])))),
                         max(0.0, float(np.max(np.diff(h["gamma_minus"])))),
                         max(0.0, -float(np.min(np.diff(y[None, :] * h["rho"], axis=0))))]
        ww = p.w_O @ p.w_O
        ok_rows = dr.identifiable          # non-identifiable coefficients are NaN by design (7.18)
        e["7.11"].append(err(dr.A_V[ok_rows], np.outer(dr.b[ok_rows], p.w_O) / ww))
        # (7.9), (7.10), (7.12): w_O trained
        cfg_w = cfg.replace(train_w_O=True)
        pdw = _dense_run(inst, steps, train_w_O=True)
        _, _, trw = tracking.track_train(p, X, y, config=cfg_w)
        drw = decompose.recover(p, pdw, X)
        cw = decompose.compare(trw.decomposition(), drw)
        e["7.9"] += [cw["A_V"], cw["coef"]]
        if np.all(drw.identifiable):       # (7.12) needs every b_u: full-rank token sets only
            tok = tokens.unique_tokens(X)
            e["7.12"].append(err(pdw.W_V @ pdw.w_O, p.W_V @ pdw.w_O + tok.U.T @ drw.b))
        # (8.6) span trainer = dense trainer, both bases; (8.8) w_O trained; (8.9) test outputs
        for basis, key in (("tokens", "8.6t"), ("orthonormal", "8.6o")):
            obj = make_objective(cfg.replace(coords="span"), p, X, y, inst.X_test, inst.y_test, basis=basis)
            ps, _ = train_run(obj, cfg.replace(coords="span"))
            e[key].append(max(err(ps[k] - p[k], pd[k] - p[k]) for k in range(3)))
            e["8.9"].append(err(obj.test_outputs(obj.final_state), ref_forward(pd, inst.X_test).f))
        objw = make_objective(cfg_w.replace(coords="span"), p, X, y, basis="tokens")
        psw, _ = train_run(objw, cfg_w.replace(coords="span"))
        e["8.8"].append(max(err(psw[k] - p[k], pdw[k] - p[k]) for k in range(4)))
        # (8.5) PΓ = ∇_W L_S at W(0) + P A for a non-zero state; (8.7) ∇_A = PᵀPΓ, and the pitfall
        obj = span.SpanObjective(p, X, y, basis="tokens")
        rng = np.random.default_rng(100)
        st = obj.state0
        st = st._replace(A_Q=1e-3 * rng.standard_normal(st.A_Q.shape) / np.linalg.norm(U, axis=1).max(),
                         A_K=1e-3 * rng.standard_normal(st.A_K.shape) / np.linalg.norm(U, axis=1).max())
        ev = obj.value_and_grad(st)
        W = Params(p.W_Q + obj.P @ st.A_Q, p.W_K + obj.P @ st.A_K, p.W_V + obj.P @ st.A_V, p.w_O)
        _, gd = model.loss_and_grads(W, X, y, "numpy")
        e["8.5"] += [err(obj.P @ ev.grads[k], gd[k]) for k in range(3)]
        if inst.small:
            A0 = st.A_Q.copy()
            fA = lambda A: ref_loss(ref_forward(W._replace(W_Q=p.W_Q + obj.P @ A), X).f, y)
            e["8.7"].append(err(obj.P.T @ obj.P @ ev.grads[0], gradcheck.numerical_grad(fA, A0, H_FD)))
            # the pitfall: a step on (PᵀP)Γ instead of Γ leaves the dense step
            eta = inst.lr
            dense_step = -eta * gd.W_Q
            pitfall.append(err(obj.P @ (-eta * obj.P.T @ obj.P @ ev.grads[0]), dense_step))
            e["8.7"].append(err(obj.P @ (-eta * ev.grads[0]), dense_step))
    pit_ok = bool(pitfall) and min(pitfall) > 1e3 * TOL_TRAJ
    T = TOL_TRAJ, "a few GD steps: per-step rounding × steps × cond(tokens) ≲ 1e3, on top of the ΔW cancellation"

    return [
        _row("7.2", "W(t) − W(0) ∈ span(tokens) (dense GD)", "train:run", "projection on numpy QR of Uᵀ",
             e["7.2"], 1e-10, "projection residual of an in-span matrix: ~1e-16·cond(U) ≤ 1e-12"),
        _row("7.5", "coef_u recursion (w_O frozen)", "tracking:CoefficientTracker", "decompose.recover of dense W(t)",
             e["7.5"], *T),
        _row("7.6", "γ±, ρ_i recursions", "tracking:CoefficientTracker", "decompose.recover of dense W(t)",
             e["7.6"], *T),
        _row("7.7", "y_i ρ_i and γ₊ non-decreasing, γ₋ non-increasing", "tracking:CoefficientTracker",
             "largest wrong-signed increment", e["7.7"], TOL_EXACT,
             "exact: each increment is −η‖w‖²‖u‖²·c·ā with a sign fixed by y"),
        _row("7.9", "A_V rows with w_O trained", "tracking:CoefficientTracker", "decompose.recover of dense W(t)",
             e["7.9"], *T),
        _row("7.11", "w_O frozen: A_V = b w_Oᵀ/‖w_O‖²", "decompose:recover", "rank-one closed form", e["7.11"], *T),
        _row("7.12", "u(t) = W_V(0) w_O(t) + Uᵀ b(t) (w_O trained)", "decompose:recover", "dense W_V(t) w_O(t)",
             e["7.12"], *T),
        _row("7.14", "α_u, β_u recursions", "tracking:CoefficientTracker", "decompose.recover of dense W(t)",
             e["7.14"], *T),
        _row("7.19", "recovery residual of in-span increments ≈ 0", "decompose:recover", "residual",
             e["7.19"], 1e-10, "least squares of an in-span matrix: ~1e-16·cond ≤ 1e-12"),
        _row("8.5", "∇_W L_S = P Γ", "span:SpanObjective.value_and_grad", "model.loss_and_grads at W(0)+PA",
             e["8.5"], 1e-10, "Gram products vs dense products: rounding × ‖P‖‖Γ‖/‖PΓ‖"),
        _row("8.6", "span trainer (token basis) = dense trainer, 4 steps", "span:SpanObjective",
             "train.run dense", e["8.6t"], *T),
        _row("8.6", "span trainer (orthonormal basis) = dense trainer, 4 steps", "span:SpanObjective",
             "train.run dense", e["8.6o"], *T),
        _row("8.7", "∇_A L = PᵀPΓ by FD; GD on A uses Γ, not PᵀPΓ", "span:SpanObjective.value_and_grad",
             "FD in A; dense GD step", e["8.7"], TOL_FD, "central FD h=1e-5: ~1e-10 relative",
             extra_ok=pit_ok, note=f"pitfall step on PᵀPΓ off by {min(pitfall) if pitfall else math.nan:.2e} "
                                   f"({'fails, as it must' if pit_ok else 'NOT DETECTED'})"),
        _row("8.8", "trained w_O: span trainer = dense trainer", "span:SpanObjective", "train.run dense",
             e["8.8"], *T),
        _row("8.9", "X_test W(t) = X_test W(0) + (X_test P) A(t)", "span:SpanObjective.test_outputs",
             "einsum f at the dense W(t)", e["8.9"], *T),
    ]


