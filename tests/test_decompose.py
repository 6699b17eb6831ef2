"""The signal/noise decomposition (docs/math.md §7): tracked (a) vs recovered (b), residuals, sign structure, edge
cases.

(a) replays the §5.2/§5.3 recursions from each step's forward cache; (b) solves the Gram system on the dense
weights. They share no code but the token bookkeeping, so their agreement checks both.

Tolerance 1e-10 relative (the agreement criterion of the span tests): (a) and (b) differ by rounding. On the measured runs the gap is
≤1e-13 (the token matrices have condition number ≤ 4, and ‖W(t)‖/‖W(t) − W(0)‖ ≤ 10); a wrong factor (‖w_O‖², ‖u‖²,
1/N) or a wrong token gives O(1).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refvit.jiang2024.config import DataConfig, ModelConfig, dynamics_setting, figure1_setting
from refvit.config import TrainConfig
from refvit.jiang2024.data import make_dataset
from refvit.streams import streams
from refvit.jiang2024.decompose import compare, recover, summaries
from refvit.jiang2024.tracking import CoefficientTracker, track_train
from refvit.gradcheck import rel_error
from refvit.jiang2024.init import init_params
from refvit.io import load_npz, save_npz
from refvit.jiang2024.model import Params, loss_and_grads
from refvit.jiang2024.objective import DenseObjective
from refvit.trainer import run

TOL = 1e-10   # see module docstring


def problem(data_cfg: DataConfig, model_cfg: ModelConfig, seed: int = 0):
    rng = streams(seed, 6)
    data = make_dataset(data_cfg, rng.data, rng.test)
    return data, init_params(model_cfg, data_cfg.d, rng.init), (data.mu_plus, data.mu_minus)


def tracked_and_recovered(data, p0, signals, cfg: TrainConfig, X=None):
    X = data.X if X is None else X
    params, hist, tracker = track_train(p0, X, data.y, config=cfg.replace(backend="numpy"))
    return params, hist, tracker, tracker.decomposition(signals, p0, params), recover(p0, params, X, signals)


def assert_agree(tracked, recovered, tol=TOL):
    """Equal where both are defined; the recovered ones may additionally be NaN (not identifiable), never the
    other way round (tracked values are NaN only where no token exists: zero tokens, absent signals)."""
    for k, err in compare(tracked, recovered).items():
        assert err <= tol, f"{tracked.source} vs {recovered.source}, {k}: rel error {err:.3g}"
    for name in ("gamma_plus", "gamma_minus", "rho", "rho_other"):
        x, y = np.asarray(getattr(tracked, name)), np.asarray(getattr(recovered, name))
        assert not np.any(np.isnan(x) & ~np.isnan(y)), name
        both = ~np.isnan(x) & ~np.isnan(y)
        assert rel_error(x[both], y[both]) <= tol, name


def test_figure1_tracked_equals_recovered():
    """Exact Figure-1 sizes, trained to loss < 0.01 (the heatmap's stopping rule), w_O frozen."""
    data_cfg, model_cfg, train_cfg = figure1_setting(N=20, mu_norm=80.0)
    data, p0, signals = problem(data_cfg, model_cfg)
    params, hist, _, tracked, recovered = tracked_and_recovered(data, p0, signals, train_cfg)
    assert hist.status == "converged" and hist.steps > 3
    assert recovered.identifiable.all() and recovered.rank == 2 + 20 * 15
    assert_agree(tracked, recovered)
    for dec in (tracked, recovered):
        for name, res in dec.residual.items():
            assert res <= TOL, f"{dec.source} residual {name} = {res:.3g}"
    assert recovered.out_of_span == 0.0                 # w_O frozen: u(t) − u(0) lies in the span exactly
    # W_V(t) − W_V(0) is rank one, b w_Oᵀ/‖w_O‖² (math 7.11): the recovered A_V must have that form
    rank_one = np.outer(recovered.b, p0.w_O) / (p0.w_O @ p0.w_O)
    assert rel_error(recovered.A_V, rank_one) <= TOL
    assert tracked.gamma_plus > 0 > tracked.gamma_minus


def test_w_O_trained_matrix_recursion_and_out_of_span():
    """docs/math.md (7.9)–(7.12) (w_O trained), noise projected off μ± so that V±(t) = μ±ᵀW_V(0)w_O(t) + γ± exactly."""
    data_cfg, model_cfg, train_cfg = dynamics_setting(mu_norm=10.0, project_noise=True)
    data_cfg, model_cfg = data_cfg.replace(d=256), model_cfg.replace(d_h=64, d_v=32)
    data, p0, signals = problem(data_cfg, model_cfg, seed=3)
    cfg = train_cfg.replace(steps=150, lr=0.05, train_w_O=True)
    params, _, _, tracked, recovered = tracked_and_recovered(data, p0, signals, cfg)
    assert_agree(tracked, recovered)
    for name, res in tracked.residual.items():
        assert res <= TOL, f"tracked residual {name} = {res:.3g}"
    expected_oos = np.linalg.norm(p0.W_V @ (params.w_O - p0.w_O)) / np.linalg.norm(
        params.W_V @ params.w_O - p0.W_V @ p0.w_O)
    # 1e-12: the same norm ratio computed from the same arrays in another order (rounding ~1e-15).
    assert recovered.out_of_span == pytest.approx(expected_oos, rel=1e-12) and recovered.out_of_span > 1e-3
    s = summaries(params, data.X, signals)
    mu = np.stack(signals)
    assert rel_error(s["V_signal"], mu @ p0.W_V @ params.w_O + [tracked.gamma_plus, tracked.gamma_minus]) <= TOL


def test_signal_value_moves_by_gamma_when_noise_is_projected():
    """With every other token orthogonal to μ± (project_noise=True), V±(t) − V±(0) = γ± (docs/math.md (7.8))."""
    data_cfg, model_cfg, train_cfg = figure1_setting(N=6, mu_norm=40.0, project_noise=True)
    data_cfg, model_cfg = data_cfg.replace(d=256, M=6), model_cfg.replace(d_h=32, d_v=16)
    data, p0, signals = problem(data_cfg, model_cfg, seed=4)
    params, _, _, tracked, recovered = tracked_and_recovered(data, p0, signals, train_cfg)
    dV = summaries(params, data.X, signals)["V_signal"] - summaries(p0, data.X, signals)["V_signal"]
    assert rel_error(dV, [recovered.gamma_plus, recovered.gamma_minus]) <= TOL
    assert rel_error(dV, [tracked.gamma_plus, tracked.gamma_minus]) <= TOL


# ---------------------------------------------------------------------------------------------------------------
# Sign structure under GD with w_O frozen (math 7.7): property tests on coefficients recovered at every step
# ---------------------------------------------------------------------------------------------------------------

@settings(max_examples=40)
@given(N=st.sampled_from([2, 4, 6]), M=st.integers(2, 4), extra_d=st.integers(1, 6), d_h=st.integers(1, 4),
       d_v=st.integers(1, 3), lr=st.sampled_from([0.05, 0.3, 1.0]), mu_norm=st.sampled_from([0.5, 2.0, 5.0]),
       seed=st.integers(0, 2**32 - 1))
def test_sign_structure_of_recovered_coefficients(N, M, extra_d, d_h, d_v, lr, mu_norm, seed):
    """γ₊ non-decreasing, γ₋ non-increasing, y_i ρ_i non-decreasing along GD, each *recovered from the weights*
    after every step of a plain GD loop on ``loss_and_grads`` (no tracker, no span trainer involved)."""
    d = 2 + N * (M - 1) + extra_d                                   # tokens generically independent
    data_cfg = DataConfig(N=N, M=M, d=d, mu_norm=mu_norm, sigma_p=1.0, sigma_w=0.3, n_test=2)
    rng = np.random.default_rng(seed)
    data = make_dataset(data_cfg, rng, rng)
    p0 = init_params(ModelConfig(d_h=d_h, d_v=d_v, init="gaussian", sigma0=0.5), d, rng)
    signals = (data.mu_plus, data.mu_minus)
    p, series = p0, []
    for _ in range(12):
        _, g = loss_and_grads(p, data.X, data.y)
        p = Params(p.W_Q - lr * g.W_Q, p.W_K - lr * g.W_K, p.W_V - lr * g.W_V, p.w_O)
        dec = recover(p0, p, data.X, signals)
        assert dec.identifiable.all()
        series.append((dec.gamma_plus, dec.gamma_minus, *(data.y * dec.rho)))
    series = np.vstack([np.zeros(2 + N), np.array(series)])        # coefficients start at 0
    # Every increment is strictly signed (ℓ' < 0, ā > 0), but may be tiny once the loss is small; recovery adds
    # rounding of order cond·ε·‖W(t)‖ in coefficient units, bounded here by 1e-9 of the largest coefficient.
    slack = 1e-9 * max(np.abs(series).max(), 1e-300)
    steps = np.diff(series, axis=0) * np.r_[1.0, -1.0, np.ones(N)]  # γ₋ must *decrease*
    assert steps.min() >= -slack, f"coefficient moved the wrong way: {steps.min():.3g} (slack {slack:.3g})"


def test_tracked_series_is_monotone_and_starts_at_zero():
    data_cfg, model_cfg, train_cfg = figure1_setting(N=4, mu_norm=30.0)
    data_cfg, model_cfg = data_cfg.replace(d=128, M=5), model_cfg.replace(d_h=16, d_v=8)
    data, p0, signals = problem(data_cfg, model_cfg)
    _, hist, tracker = track_train(p0, data.X, data.y, config=train_cfg.replace(coords="span", backend="numpy"))
    h = tracker.history(signals)
    assert h["coef"].shape[0] == hist.steps + 1 and not np.any(h["coef"][0])
    assert np.all(np.diff(h["gamma_plus"]) > 0) and np.all(np.diff(h["gamma_minus"]) < 0)
    assert np.all(np.diff(data.y * h["rho"], axis=0) > 0)
    # the recorded ā is the history's: token 0 = signal, 1 = noise. 1e-14: the same forward pass, only the mean's
    # summation order can differ.
    assert rel_error(h["abar"][:, :, 0].mean(axis=1), hist["attn_signal"]) <= 1e-14


# ---------------------------------------------------------------------------------------------------------------
# What can and cannot be recovered
# ---------------------------------------------------------------------------------------------------------------

def test_rank_deficient_tokens_flagged_and_rest_recovered():
    """One token made a combination of two others: those three are not identifiable; everything else is."""
    data_cfg = DataConfig(N=4, M=3, d=24, mu_norm=2.0, sigma_p=1.0, sigma_w=0.5, n_test=2)
    data, p0, signals = problem(data_cfg, ModelConfig(d_h=3, d_v=2, init="gaussian", sigma0=0.4))
    X = data.X.copy()
    X[2, 2] = X[0, 1] - 0.5 * X[1, 2]                                # dependent, but not a repeat
    _, _, tracker, tracked, recovered = tracked_and_recovered(data, p0, signals, TrainConfig(lr=0.5, steps=30), X=X)
    bad = ~recovered.identifiable
    dependent = {tracker.tokens.index[0, 1], tracker.tokens.index[1, 2], tracker.tokens.index[2, 2]}
    assert set(np.flatnonzero(bad)) == dependent
    assert "rank deficient" in recovered.message and "not identifiable" in recovered.message
    assert np.isnan(recovered.coef[bad]).all() and np.isnan(recovered.rho[0])
    assert_agree(tracked, recovered)                                # on the identifiable coefficients
    for name, res in {**tracked.residual, **recovered.residual}.items():
        assert res <= TOL, f"residual {name} = {res:.3g}"           # both still reconstruct W(t) exactly


def test_more_tokens_than_d_signal_still_identifiable_with_projected_noise():
    """2 + N(M−1) = 26 > d = 10: ρ's are not identifiable, but γ± are when every other token is ⟂ μ±."""
    data_cfg = DataConfig(N=6, M=5, d=10, mu_norm=2.0, sigma_p=1.0, sigma_w=0.5, project_noise=True, n_test=2)
    data, p0, signals = problem(data_cfg, ModelConfig(d_h=3, d_v=2, init="gaussian", sigma0=0.4))
    _, _, _, tracked, recovered = tracked_and_recovered(data, p0, signals, TrainConfig(lr=0.3, steps=30))
    assert "more than d" in recovered.message and recovered.rank == 10
    assert np.isfinite([recovered.gamma_plus, recovered.gamma_minus]).all() and np.isnan(recovered.rho).all()
    assert rel_error([tracked.gamma_plus, tracked.gamma_minus], [recovered.gamma_plus, recovered.gamma_minus]) <= TOL
    assert tracked.residual["W_Q"] <= TOL and tracked.residual["u"] <= TOL


def test_zero_and_repeated_tokens():
    data_cfg = DataConfig(N=4, M=4, d=16, mu_norm=2.0, sigma_p=1.0, other_tokens="zero", n_test=2)
    data, p0, signals = problem(data_cfg, ModelConfig(d_h=3, d_v=2, init="gaussian", sigma0=0.4))
    X = data.X.copy()
    X[3, 1] = X[1, 1]                                               # two samples share a noise token
    _, _, tracker, tracked, recovered = tracked_and_recovered(data, p0, signals, TrainConfig(lr=0.5, steps=20), X=X)
    assert tracker.tokens.n_unique == 2 + 3
    assert np.isnan(recovered.rho_other).all() and "8 zero tokens" in recovered.message
    assert "occur elsewhere" in recovered.message and recovered.rho[1] == recovered.rho[3]
    assert_agree(tracked, recovered)
    # μ₊ occurs in samples 0 and 2: its one coefficient is the sum of both samples' increments (math §7.5)
    assert tracker.tokens.counts[tracker.tokens.index[0, 0]] == 2


# ---------------------------------------------------------------------------------------------------------------
# Summaries, saving, validation
# ---------------------------------------------------------------------------------------------------------------

def test_summaries_match_direct_bilinear_forms_and_the_trained_logits():
    data_cfg = DataConfig(N=4, M=3, d=20, mu_norm=3.0, sigma_p=1.0, sigma_w=0.2, n_test=2)
    data, p0, signals = problem(data_cfg, ModelConfig(d_h=4, d_v=3, init="gaussian", sigma0=0.5))
    obj = CoefficientTracker(DenseObjective(p0, data.X, data.y), data.X, data.y, TrainConfig(lr=0.5, steps=10))
    params, _ = run(obj, TrainConfig(lr=0.5, steps=10))
    s = summaries(params, data.X, signals)
    W = params.W_Q @ params.W_K.T
    mu, xi, sig = np.stack(signals), data.X[:, 1], data.X[:, 0]
    # 1e-13: bilinear forms of O(1) vectors through d-dimensional products, summed in a different order from the
    # reference (rounding ~1e-15 relative); 1e-15 for a single product computed the same way.
    assert rel_error(s["qk_signal"], np.einsum("kd,de,ke->k", mu, W, mu)) <= 1e-13
    assert rel_error(s["qk_noise"], xi @ W @ xi.T) <= 1e-13
    assert rel_error(s["wq_noise"], xi @ params.W_Q) <= 1e-15
    z = obj.history()["Z2"][-1]                                     # logits of the last forward pass, (N, 2, 2)
    assert rel_error(s["qk_sig_noise"], z[:, 0, 1]) <= 1e-13 and rel_error(s["qk_noise_sig"], z[:, 1, 0]) <= 1e-13
    assert rel_error(np.diag(s["qk_noise"]), z[:, 1, 1]) <= 1e-13
    assert rel_error(np.einsum("id,de,ie->i", sig, W, sig), z[:, 0, 0]) <= 1e-13


def test_decomposition_saves_without_pickle(tmp_path):
    data_cfg = DataConfig(N=2, M=3, d=12, n_test=2)
    data, p0, signals = problem(data_cfg, ModelConfig(d_h=2, d_v=2, init="gaussian", sigma0=0.3))
    _, _, _, _, recovered = tracked_and_recovered(data, p0, signals, TrainConfig(lr=0.1, steps=3))
    save_npz(tmp_path / "dec.npz", **recovered.to_arrays("rec_"))
    back = load_npz(tmp_path / "dec.npz")
    assert np.array_equal(back["rec_coef"], recovered.coef) and str(back["rec_message"]) == recovered.message


def test_recover_rejects_mismatched_inputs():
    data_cfg = DataConfig(N=2, M=3, d=12, n_test=2)
    data, p0, signals = problem(data_cfg, ModelConfig(d_h=2, d_v=2))
    other = init_params(ModelConfig(d_h=3, d_v=2), 12, np.random.default_rng(0))
    with pytest.raises(ValueError, match="same shapes"):
        recover(p0, other, data.X, signals)
    with pytest.raises(ValueError, match="shape"):
        recover(p0, p0, data.X, (np.ones(5), np.ones(5)))


def test_coefficients_cli_train_weights_draw(tmp_path):
    """`refvit coefficients`: train+save, decompose saved weights, draw from the saved file alone."""
    from refvit.cli import main as refvit_main
    res, figs = str(tmp_path / "res"), str(tmp_path / "figs")
    assert refvit_main(["coefficients", "train", "--cell", "dynamics", "--mu", "30", "--steps", "8", "--results", res,
                    "--figures", figs]) == 0
    saved = load_npz(tmp_path / "res" / "coefficients_dynamics_mu30.npz")
    assert saved["h_gamma_plus"].shape == (9,) and saved["h_abar"].shape == (9, 10, 3)
    assert saved["tracked_gamma_plus"] == pytest.approx(float(saved["recovered_gamma_plus"]), rel=TOL)
    assert (tmp_path / "figs" / "coefficients_dynamics_mu30.png").stat().st_size > 10_000
    # a small weights file (the `train --save-weights` layout) decomposed without any time series
    data_cfg = DataConfig(N=4, M=3, d=24, mu_norm=3.0, sigma_p=1.0, n_test=2)
    data, p0, signals = problem(data_cfg, ModelConfig(d_h=3, d_v=2, init="gaussian", sigma0=0.4))
    params, _, _, _, recovered = tracked_and_recovered(data, p0, signals, TrainConfig(lr=0.5, steps=10))
    save_npz(tmp_path / "w.npz", **{f"{k}0": v for k, v in p0._asdict().items()}, **params._asdict(), X=data.X,
             y=data.y, mu_plus=data.mu_plus, mu_minus=data.mu_minus)
    assert refvit_main(["coefficients", "weights", str(tmp_path / "w.npz"), "--results", res, "--no-draw"]) == 0
    assert load_npz(tmp_path / "res" / "decomposed_w.npz")["recovered_gamma_plus"] == recovered.gamma_plus
    assert refvit_main(["coefficients", "draw", str(tmp_path / "res" / "decomposed_w.npz"), "--out", str(tmp_path / "d.png")]) == 0
    assert (tmp_path / "d.png").exists()
    assert refvit_main(["coefficients", "weights", str(tmp_path / "res" / "decomposed_w.npz"), "--results", res, "--no-draw"]) == 2


# --- naming the coefficients, and the coefficient command's sizes --------------------------------------------------

@pytest.mark.parametrize("first", ["minus", "plus"])
def test_a_signal_that_is_the_first_distinct_token_is_named(first):
    """Token 0 is a valid index: with sample 0 of the other class, μ₋ is the first distinct token U[0]."""
    from refvit.jiang2024.decompose import name_coefficients
    from refvit.jiang2024.tokens import unique_tokens
    e = np.eye(5)
    mu_plus, mu_minus, xi = 2 * e[0], 3 * e[1], [e[2], e[3], e[4]]
    a, b = (mu_minus, mu_plus) if first == "minus" else (mu_plus, mu_minus)
    X = np.stack([[a, xi[0]], [b, xi[1]], [a, xi[2]]])            # (3, 2, 5): tokens a, ξ0, b, ξ1, ξ2
    tokens = unique_tokens(X)
    coef = np.array([[10.0, 11, 12, 13, 14], [20, 21, 22, 23, 24]])   # (T=2, n_u): one value per token and step
    gp, gm, rho, other = name_coefficients(coef, tokens, (mu_plus, mu_minus))
    i_plus, i_minus = (2, 0) if first == "minus" else (0, 2)
    np.testing.assert_array_equal(gp, coef[:, i_plus])
    np.testing.assert_array_equal(gm, coef[:, i_minus])
    np.testing.assert_array_equal(rho, coef[:, [1, 3, 4]])
    assert other.shape == (2, 3, 0)
    gp, gm, _, _ = name_coefficients(coef, tokens, (mu_plus, 5 * e[4]))     # a signal absent from the tokens: NaN
    assert np.all(np.isnan(gm)) and np.array_equal(gp, coef[:, i_plus])


def test_the_coefficient_command_reads_the_sample_count_from_the_weights_file(tmp_path):
    """N is the first axis of X (N, M, d): a file with N, M and d all different tells the axes apart."""
    from refvit.jiang2024.coefficients import weights_and_save
    data_cfg = DataConfig(N=6, M=3, d=24, mu_norm=3.0, sigma_p=1.0, n_test=2)
    data, p0, signals = problem(data_cfg, ModelConfig(d_h=3, d_v=2, init="gaussian", sigma0=0.4))
    save_npz(tmp_path / "w.npz", **{f"{k}0": v for k, v in p0._asdict().items()}, **p0._asdict(), X=data.X,
             y=data.y, mu_plus=data.mu_plus, mu_minus=data.mu_minus)
    weights_and_save(tmp_path / "w.npz", tmp_path / "out.npz")
    summary = json.loads(str(load_npz(tmp_path / "out.npz")["summary"]))
    assert data.X.shape == (6, 3, 24) and summary["N"] == 6
