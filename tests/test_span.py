"""The span-coordinate trainer (docs/math.md §8) against the dense reference: same trajectory, exact test outputs.

Tolerance 1e-10 relative (the agreement criterion of the span trainer): the two paths differ only in the order of floating-point sums,
~1e-16 per operation; over 200 steps the measured gap is ~1e-14, so 1e-10 leaves four decades while a real error
(a missing Gram factor, a wrong scatter, a preconditioned step) shows at ≥1e-3 after a few steps.
"""
from __future__ import annotations

import numpy as np
import pytest

from refvit.jiang2024.config import DataConfig, ModelConfig, dynamics_setting, figure1_setting
from refvit.config import TrainConfig
from refvit.jiang2024.data import make_dataset
from refvit.streams import streams
import refvit.jiang2024.tokens as tokens_mod
from refvit.jiang2024.tokens import unique_tokens
from refvit.jiang2024.tracking import CoefficientTracker, span_decomposition, span_train
from refvit.gradcheck import rel_error
from refvit.jiang2024.init import init_params
from refvit.jiang2024.model import Params, forward, loss_and_grads, mean_loss
from refvit.jiang2024.span import SpanObjective
from refvit.jiang2024.objective import DenseObjective
from refvit.trainer import run
from refvit.jiang2024.train import train

TOL = 1e-10   # see module docstring


def problem(data_cfg: DataConfig, model_cfg: ModelConfig, seed: int = 0):
    rng = streams(seed, 5)
    data = make_dataset(data_cfg, rng.data, rng.test)
    return data, init_params(model_cfg, data_cfg.d, rng.init)


def dense_and_span(data, p0, cfg: TrainConfig):
    """Dense numpy run (with the coefficient tracker attached) and span run from the same data and init."""
    dense = CoefficientTracker(DenseObjective(p0, data.X, data.y, data.X_test, data.y_test, "numpy"),
                               data.X, data.y, cfg)
    pd, hd = run(dense, cfg)
    span = SpanObjective(p0, data.X, data.y, data.X_test, data.y_test)
    ps, hs = run(span, cfg.replace(coords="span"))
    return (pd, hd, dense), (ps, hs, span)


def assert_same_trajectory(dense, span, p0):
    (pd, hd, _), (ps, hs, _) = dense, span
    assert hd.steps == hs.steps and hd.status == hs.status
    for key in ("train_loss", "attn_signal", "attn_noise", "V_noise_s0", "qk_sig_noise_s0", "min_margin"):
        err = rel_error(hd[key], hs[key])
        assert err <= TOL, f"history {key}: rel error {err:.3g}"
    for name, a, b, a0 in zip(Params._fields, pd, ps, p0):
        err = rel_error(a, b)
        assert err <= TOL, f"final {name}: rel error {err:.3g}"
        # the movement itself, not only the weights (W(0) could hide a wrong increment)
        err = rel_error(a - a0, b - a0)
        assert err <= TOL or np.all(a == a0), f"{name}(t) − {name}(0): rel error {err:.3g}"
    assert abs(hd.final_test_loss - hs.final_test_loss) <= TOL * hd.final_test_loss


@pytest.fixture(scope="module")
def figure1_frozen():
    """The exact Figure-1 sizes (N=20, M=16, d=1024, d_h=d_v=512, ‖μ‖=80), 200 GD steps, w_O frozen."""
    data_cfg, model_cfg, train_cfg = figure1_setting(N=20, mu_norm=80.0)
    data, p0 = problem(data_cfg, model_cfg)
    cfg = train_cfg.replace(steps=200, loss_threshold=None)
    return data, p0, dense_and_span(data, p0, cfg)


def test_figure1_exact_sizes_w_O_frozen(figure1_frozen):
    data, p0, (dense, span) = figure1_frozen
    assert span[2].basis == "tokens" and span[2].P.shape[1] == 2 + 20 * 15   # μ± once, every other token once
    assert_same_trajectory(dense, span, p0)


def test_span_coordinates_equal_tracked_coefficients(figure1_frozen):
    """The rows of A are the tracked coefficients (docs/math.md §8, (7.10)); residual against the *dense* W(t)."""
    data, p0, (dense, span) = figure1_frozen
    signals = (data.mu_plus, data.mu_minus)
    tracked = dense[2].decomposition(signals, identify=False)
    own = span_decomposition(span[2], signals=signals, params=dense[0])
    for k in ("coef", "alpha", "beta", "A_V"):
        err = rel_error(getattr(tracked, k), getattr(own, k))
        assert err <= TOL, f"{k}: rel error {err:.3g}"
    for name, res in own.residual.items():
        assert res <= TOL, f"residual {name} = {res:.3g}"


def test_dynamics_exact_sizes_w_O_trained():
    """The exact dynamics sizes (N=10, M=3, d=2048, d_h=1024, d_v=512), 200 GD steps, w_O trained."""
    data_cfg, model_cfg, train_cfg = dynamics_setting(mu_norm=1.0)
    data, p0 = problem(data_cfg, model_cfg)
    cfg = train_cfg.replace(steps=200, train_w_O=True)
    dense, span = dense_and_span(data, p0, cfg)
    assert span[2].P.shape[1] == 2 + 10 * 2
    assert rel_error(dense[0].w_O, p0.w_O) > 1e-6          # w_O did move, so this case is really exercised
    assert_same_trajectory(dense, span, p0)


def test_figure1_small_N_w_O_trained():
    """Figure-1 widths at N=4 (5× cheaper dense step), 200 steps with w_O trained and a weak-signal cell."""
    data_cfg, model_cfg, train_cfg = figure1_setting(N=4, mu_norm=30.0)
    data, p0 = problem(data_cfg, model_cfg, seed=1)
    dense, span = dense_and_span(data, p0, train_cfg.replace(steps=200, loss_threshold=None, train_w_O=True))
    assert_same_trajectory(dense, span, p0)


def test_dynamics_small_widths_w_O_frozen():
    """Dynamics data model (M=3, σ=1/0.05, ÷32, η=0.01) at d=512, d_h=256, d_v=128, benign ‖μ‖, w_O frozen."""
    data_cfg, model_cfg, train_cfg = dynamics_setting(mu_norm=15.0)
    data_cfg, model_cfg = data_cfg.replace(d=512), model_cfg.replace(d_h=256, d_v=128)
    data, p0 = problem(data_cfg, model_cfg, seed=2)
    dense, span = dense_and_span(data, p0, train_cfg.replace(steps=200))
    assert_same_trajectory(dense, span, p0)


# ---------------------------------------------------------------------------------------------------------------
# The step itself: P·Γ is the dense gradient at W(0) + P·A (not Pᵀ∇) (math 8.5, 8.7)
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("basis", ["tokens", "orthonormal"])
@pytest.mark.parametrize("other_tokens", ["weak_gaussian", "zero"])
@pytest.mark.parametrize("precompute_UWV0", [True, False])
def test_left_factor_times_basis_is_the_dense_gradient(basis, other_tokens, precompute_UWV0, monkeypatch):
    """At a random non-zero state A (O(1) logits), P·Γ must equal ∇_W L_S of the dense model at W(0) + P·A.

    Both value paths: with U·W_V(0) precomputed (few tokens) and without (many tokens)."""
    monkeypatch.setattr(SpanObjective, "VW0_MAX_TOKENS", 10**9 if precompute_UWV0 else 0)
    data_cfg = DataConfig(N=6, M=4, d=40, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3, other_tokens=other_tokens, n_test=4)
    data, p0 = problem(data_cfg, ModelConfig(d_h=5, d_v=3, init="gaussian", sigma0=0.3))
    obj = SpanObjective(p0, data.X, data.y, basis=basis)
    assert (obj.VW0 is not None) == precompute_UWV0
    rng = np.random.default_rng(7)
    state = [0.3 * rng.standard_normal(a.shape) / np.sqrt(a.shape[0]) for a in obj.state0[:3]] + [p0.w_O * 1.5]
    loss, grads, f, _ = obj.value_and_grad(state)
    W = obj.params(state)
    loss_ref, g_ref = loss_and_grads(W, data.X, data.y)
    assert abs(loss - loss_ref) <= 1e-13 * loss_ref      # same forward, different summation order only
    assert rel_error(f, forward(W, data.X)) <= 1e-12
    for k, name in enumerate(("W_Q", "W_K", "W_V")):
        err = rel_error(obj.P @ grads[k], g_ref[k])
        assert err <= 1e-12, f"P Γ_{name} vs dense ∇{name}: rel error {err:.3g}"
    assert rel_error(grads[3], g_ref.w_O) <= 1e-12
    if basis == "tokens":   # the pitfall: Pᵀ∇ = (PᵀP)Γ is a different vector (a preconditioned step)
        assert rel_error(obj.P.T @ g_ref.W_Q, grads[0]) > 1e-2


@pytest.mark.parametrize("other_tokens", ["weak_gaussian", "zero"])
def test_test_outputs_exact_on_first_and_cached_calls(other_tokens):
    """eval_every=1 uses the direct path once and the cached X_test·W(0), X_test·P afterwards: both exact. With
    eval_every=0 the one evaluation projects every test token, zero ones included (``tokens.all_tokens``)."""
    data_cfg = DataConfig(N=6, M=5, d=64, mu_norm=6.0, sigma_p=1.0, sigma_w=0.2, n_test=10, other_tokens=other_tokens)
    data, p0 = problem(data_cfg, ModelConfig(d_h=8, d_v=6, init="gaussian", sigma0=0.2))
    cfg = TrainConfig(lr=0.2, steps=15, eval_every=1, train_w_O=True)
    _, hd = train(p0, data.X, data.y, X_test=data.X_test, y_test=data.y_test, config=cfg.replace(backend="numpy"))
    ps, hs = train(p0, data.X, data.y, X_test=data.X_test, y_test=data.y_test, config=cfg.replace(coords="span"))
    assert rel_error(hd["test_loss"], hs["test_loss"]) <= TOL
    assert abs(hs.final_test_loss - mean_loss(forward(ps, data.X_test), data.y_test)) <= 1e-13
    # eval_every=0: the one evaluation at the end goes through W(t); a later call through the cached products
    obj = SpanObjective(p0, data.X, data.y, data.X_test, data.y_test)
    ps, hs = run(obj, cfg.replace(coords="span", eval_every=0))
    f_ref = forward(ps, data.X_test)
    assert hs.final_test_loss == pytest.approx(mean_loss(f_ref, data.y_test), rel=1e-13)
    assert rel_error(obj.test_outputs(obj.final_state), f_ref) <= 1e-12 and obj._test_calls == 2


# ---------------------------------------------------------------------------------------------------------------
# Token bookkeeping, rank deficiency, r > d, refusals
# ---------------------------------------------------------------------------------------------------------------

def test_all_tokens_keeps_repeats_and_leaves_out_zeros():
    """``all_tokens``: one row per non-zero position, repeats kept (μ± once per image), zero tokens at index -1 and
    not projected at all (a test set with zero other tokens would otherwise multiply mostly zero rows)."""
    data_cfg = DataConfig(N=6, M=4, d=16, other_tokens="zero", n_test=2)
    data, _ = problem(data_cfg, ModelConfig(d_h=2, d_v=2))
    tok = tokens_mod.all_tokens(data.X)
    assert tok.n_unique == 6 * 2 and np.all(tok.index[:, 2:] == -1)      # signal and noise token of each image
    assert np.array_equal(tok.U, data.X[:, :2].reshape(12, 16))          # in position order, repeats kept
    rebuilt = tok.gather(tok.U)
    assert np.array_equal(rebuilt, data.X)
    full = tokens_mod.all_tokens(data.X_test.copy() + 1.0)               # no zero token: U is a view of X
    assert full.n_unique == data.X_test.shape[0] * 4 and np.all(full.index.ravel() == np.arange(full.n_unique))


def test_unique_tokens_dedups_repeats_and_drops_zeros():
    data_cfg = DataConfig(N=6, M=4, d=16, other_tokens="zero", n_test=2)
    data, _ = problem(data_cfg, ModelConfig(d_h=2, d_v=2))
    X = data.X.copy()
    X[3, 1] = X[0, 1]                                   # a repeated noise token
    tok = unique_tokens(X)
    assert tok.n_unique == 2 + 6 - 1                    # μ₊, μ₋, five distinct ξ (zeros dropped)
    assert np.all(tok.index[:, 2:] == -1)
    assert tok.counts[tok.index[0, 0]] == 3 and tok.counts[tok.index[0, 1]] == 2
    rebuilt = np.where(tok.index[..., None] >= 0, tok.U[np.maximum(tok.index, 0)], 0.0)
    assert np.array_equal(rebuilt, X)
    D = np.random.default_rng(0).standard_normal((6, 4, 3))
    expected = np.zeros((tok.n_unique, 3))
    for i in range(6):
        for l in range(4):
            if tok.index[i, l] >= 0:
                expected[tok.index[i, l]] += D[i, l]
    assert np.allclose(tok.scatter(D), expected, rtol=0, atol=1e-14)   # sums of ≤3 O(1) terms


def test_more_tokens_than_d_uses_orthonormal_basis_and_stays_exact():
    """2 + N(M−1) = 20 > d = 8: the token basis would be rank deficient; the QR basis has r = d rows."""
    data_cfg = DataConfig(N=6, M=4, d=8, mu_norm=2.0, sigma_p=1.0, sigma_w=0.5, n_test=4)
    data, p0 = problem(data_cfg, ModelConfig(d_h=3, d_v=2, init="gaussian", sigma0=0.3))
    cfg = TrainConfig(lr=0.3, steps=60)
    pd, hd = train(p0, data.X, data.y, X_test=data.X_test, y_test=data.y_test, config=cfg.replace(backend="numpy"))
    obj = SpanObjective(p0, data.X, data.y, data.X_test, data.y_test)
    ps, hs = run(obj, cfg.replace(coords="span"))
    assert obj.basis == "orthonormal" and obj.P.shape == (8, 8)
    assert np.allclose(obj.P.T @ obj.P, np.eye(8), rtol=0, atol=1e-14)   # QR's Q is orthonormal to rounding
    assert rel_error(hd["train_loss"], hs["train_loss"]) <= TOL
    for a, b in zip(pd, ps):
        assert rel_error(a, b) <= TOL
    dec = span_decomposition(obj, signals=(data.mu_plus, data.mu_minus), params=pd)
    assert "not tokens" in dec.source and "rank deficient" in dec.message
    assert not dec.identifiable.all() and np.isnan(dec.coef[~dec.identifiable]).all()


def test_span_refuses_sign_and_adam_updates():
    data, p0 = problem(DataConfig(N=2, M=2, d=4, n_test=2), ModelConfig(d_h=2, d_v=2))
    for opt in ("signgd", "adam"):
        with pytest.raises(ValueError, match="span.*gd.*leave the span"):
            TrainConfig(lr=0.1, steps=2, optimizer=opt, coords="span")
        with pytest.raises(ValueError, match="leave the span"):
            span_train(p0, data.X, data.y, config=TrainConfig(lr=0.1, steps=2, optimizer=opt))
        with pytest.raises(ValueError, match="leave the span of the training tokens"):
            CoefficientTracker(DenseObjective(p0, data.X, data.y), data.X, data.y,
                               TrainConfig(lr=0.1, steps=2, optimizer=opt))


def test_span_train_returns_its_decomposition():
    data_cfg, model_cfg, train_cfg = figure1_setting(N=2, mu_norm=60.0)
    data_cfg, model_cfg = data_cfg.replace(d=128, M=4), model_cfg.replace(d_h=16, d_v=8)
    data, p0 = problem(data_cfg, model_cfg)
    params, hist, dec = span_train(p0, data.X, data.y, X_test=data.X_test, y_test=data.y_test, config=train_cfg,
                                   signals=(data.mu_plus, data.mu_minus))
    assert hist.status == "converged"
    # with noise not projected, V₊ moves by γ₊ plus cross terms; the coefficient itself must have grown
    assert dec.gamma_plus > 0 > dec.gamma_minus and np.all(data.y * dec.rho > 0)


@pytest.mark.parametrize("n_repeated", [2, tokens_mod.REPEATED_MAX + 1])
def test_scatter_is_the_sparse_product_to_the_bit(n_repeated):
    """Few repeated tokens: rows gathered and summed in position order; many: the product with Eᵀ. Same bits."""
    data, _ = problem(DataConfig(N=40, M=3, d=16, n_test=2), ModelConfig(d_h=2, d_v=2))
    X = data.X.copy()
    for k in range(n_repeated - 2):                     # beyond μ±: noise tokens shared by samples k and k + 20
        X[k + 20, 1] = X[k, 1]
    tok = unique_tokens(X)
    assert int(np.sum(tok.counts > 1)) == n_repeated and (tok.first is None) == (n_repeated > tokens_mod.REPEATED_MAX)
    D = np.random.default_rng(1).standard_normal((40, 3, 5))
    assert np.array_equal(tok.scatter(D), np.asarray(tok.Et @ D.reshape(120, 5)))
    assert np.array_equal(tok.scatter(D[..., 0]), tok.Et @ D[..., 0].ravel())


def test_frozen_w_O_skips_its_gradient_without_changing_the_trajectory():
    data, p0 = problem(DataConfig(N=6, M=3, d=32, n_test=4), ModelConfig(d_h=4, d_v=4))
    cfg = TrainConfig(lr=0.5, steps=20, coords="span")
    runs = [run(SpanObjective(p0, data.X, data.y, grad_w_O=g), cfg) for g in (True, False)]
    for a, b in zip(runs[0][0], runs[1][0]):
        assert np.array_equal(a, b)
    assert np.array_equal(runs[0][1]["train_loss"], runs[1][1]["train_loss"])
