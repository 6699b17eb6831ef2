"""The third setting's experiments (refvit study single-head): two GD steps against the closed forms of docs/math.md
(16.21), (16.24); the noisy-label error against enumeration; the maximum-margin solver and its KKT certificate against
a problem whose solution is known; and a tiny study end to end (resumable, damaged files recomputed, tables equal to
the run files, figures equal to the tables)."""
import itertools
import json
import math

import numpy as np
import pytest

from refvit.analysis.fig_singlehead import mean_grid, part_fig, singlehead_figures
from refvit.analysis.summaries import singlehead_summary
from refvit.gradcheck import numerical_grad
from refvit.io import read_csv
from refvit.magen2025 import MagenDataConfig, MagenModelConfig, MagenParams, formulas, make_dataset
from refvit.magen2025 import experiment as mg_experiment
from refvit.magen2025.experiment import noisy_error, run_study, two_steps
from refvit.magen2025.maxmargin import kkt, max_margin, sample_grads
from refvit.magen2025.model import attention_backward, forward_cache
from refvit.magen2025.study import DATA, GOOD_ERROR, SingleHeadStudy, identity, specs
from refvit.magen2025.tables import benign, peak_snr, per_n_slope, probe_rule
from refvit.results import load_history
from refvit.streams import cell_key, streams


def dataset(n=10, d=60, snr=0.3, seed=0):
    cfg = DATA.replace(N=n, d=d, rho=MagenDataConfig.rho_for_snr(snr, d), n_test=40)
    rng = streams(seed, n, 1)
    return cfg, make_dataset(cfg, rng.data, rng.test)


# ---------------------------------------------------------------------------------------------------------------
# Two GD steps from zero
# ---------------------------------------------------------------------------------------------------------------

def closed_two_steps(X, y, lr):
    """v₁ of (16.21), the gradients (16.24) at (0, v₁) and ū at step 1, with plain numpy for X (n, M, d)."""
    n, M, _ = X.shape
    v1 = lr / (2 * n * M) * np.einsum("i,imd->d", y, X)                  # (16.21)
    u = X @ v1                                                           # (n, M) value scores at p = 0
    ubar = u.mean(axis=1)                                                # uniform attention: f = ū
    g = -y / (n * (1.0 + np.exp(y * ubar)))                              # ℓ'(y f) y / n
    grad_v = np.einsum("i,imd->d", g, X) / M                             # (16.24)
    grad_p = np.einsum("i,im,imd->d", g, u - ubar[:, None], X) / M      # (16.24)
    return v1, grad_p, grad_v, ubar


def plain_outputs(p, v, X):
    """f (n,) of X (n, M, d) by a per-sample softmax written here (docs/math.md (16.7)–(16.9))."""
    z = X @ p
    s = np.exp(z - z.max(axis=1, keepdims=True))
    return np.sum(s / s.sum(axis=1, keepdims=True) * (X @ v), axis=1)


def test_two_steps_equal_the_closed_forms_of_steps_one_and_two():
    """v₁ by (16.21), p₁ = 0; p₂ and v₂ by (16.24) at (0, v₁), all written here with plain numpy."""
    _, data = dataset()
    X, y, lr = data.X, data.y, 0.7
    v1, grad_p, grad_v, ubar = closed_two_steps(X, y, lr)
    params, hist = two_steps(data, lr)
    # 1e-12 relative: the same sums in another order (einsum against the model's chain rule), rounding only
    np.testing.assert_allclose(params.p, -lr * grad_p, rtol=1e-12, atol=1e-15 * np.abs(grad_p).max())
    np.testing.assert_allclose(params.v, v1 - lr * grad_v, rtol=1e-12, atol=1e-15 * np.abs(v1).max())
    assert list(hist.step) == [0, 1, 2]
    assert hist["train_error"][1] == np.mean(np.sign(ubar) != y)         # after step 1, from v₁ alone


def test_the_noisy_label_error_is_the_expectation_over_flips():
    """η + (1 − 2η)·err_clean against exact enumeration of every flip pattern of 5 test labels."""
    pred_right = np.array([1, 1, 0, 1, 0], dtype=bool)                   # clean error 2/5
    eta = 0.23
    expect = 0.0
    for flips in itertools.product([0, 1], repeat=5):
        f = np.array(flips, dtype=bool)
        prob = np.prod(np.where(f, eta, 1 - eta))
        expect += prob * np.mean(pred_right == f)                       # wrong against the flipped label
    # 1e-14: a sum of 32 products of O(1) numbers
    assert noisy_error(2 / 5, eta) == pytest.approx(expect, abs=1e-14)


# ---------------------------------------------------------------------------------------------------------------
# The maximum-margin interpolator and its certificate
# ---------------------------------------------------------------------------------------------------------------

def test_per_sample_gradients_equal_the_backward_pass_and_finite_differences():
    _, data = dataset(n=5, d=20, snr=1.0)
    rng = np.random.default_rng(3)
    p, v = rng.standard_normal(20), rng.standard_normal(20)             # O(1) scores: attention far from uniform
    _, Jp, Jv = sample_grads(p, v, data.X)
    f, cache = forward_cache(MagenParams(p, v), data.X)
    for i in range(5):
        dp, dv = attention_backward(np.eye(5)[i], cache, data.X)        # the chain rule with df = e_i
        # 1e-12 relative: two orders of the same sums
        np.testing.assert_allclose(Jp[i], dp, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(Jv[i], dv, rtol=1e-12, atol=1e-14)
        num = numerical_grad(lambda q: forward_cache(MagenParams(q, v), data.X[i:i + 1])[0][0], p.copy())
        # 1e-6 relative: central differences at h = 1e-5 are accurate to ~1e-10 on O(1) problems
        np.testing.assert_allclose(Jp[i], num, rtol=1e-6, atol=1e-8)


def known_problem():
    """Each sample's two tokens equal x_i (orthogonal rows): attention is uniform whatever p, f_i = vᵀx_i, and the
    maximum-margin solution is p = 0, v = Σ y_i x_i/‖x_i‖² with multipliers λ_i = 1/‖x_i‖² (all active)."""
    rng = np.random.default_rng(7)
    Q, _ = np.linalg.qr(rng.standard_normal((9, 4)))
    x = Q.T * np.array([1.0, 2.0, 0.5, 3.0])[:, None]                 # (4, 9) orthogonal, norms 1, 2, 0.5, 3
    X = np.stack([x, x], axis=1)                                        # (4, 2, 9)
    y = np.array([1.0, -1.0, -1.0, 1.0])
    v = (y / np.sum(x ** 2, axis=1)) @ x
    return X, y, np.zeros(9), v, 1 / np.sum(x ** 2, axis=1)


def test_the_certificate_of_a_known_solution_is_zero_and_of_a_wrong_point_is_not():
    X, y, p, v, lam = known_problem()
    c = kkt(p, v, X, y)
    # 1e-12: exact arithmetic up to rounding of O(1) quantities
    assert c.margin == pytest.approx(1.0, abs=1e-12) and c.feasibility <= 1e-12
    assert c.stationarity <= 1e-12 and c.slackness <= 1e-12 and c.n_active == 4
    np.testing.assert_allclose(c.lam, lam, rtol=1e-10)
    assert kkt(p, 1.2 * v, X, y).slackness == pytest.approx(0.2, rel=1e-9)     # every margin 1.2, λ > 0
    assert kkt(p, 0.9 * v, X, y).feasibility == pytest.approx(0.1, rel=1e-9)
    other = np.linalg.svd(X[:, 0].T)[0][:, -1]                          # a direction orthogonal to every token
    assert kkt(p, v + 0.5 * other, X, y).stationarity > 0.1


def test_the_solver_finds_the_known_solution_from_every_start():
    X, y, p, v, _ = known_problem()
    mm = max_margin(X, y, np.random.default_rng(0), n_random=3)
    # 1e-6: SLSQP's tolerance (ftol 1e-12 on ½‖θ‖²) leaves ~1e-6 relative in θ
    assert mm.success and mm.n_ok == 4
    np.testing.assert_allclose(mm.v, v, atol=1e-6 * np.linalg.norm(v))
    np.testing.assert_allclose(mm.p, p, atol=1e-6)
    np.testing.assert_allclose(mm.norms, np.linalg.norm(v), rtol=1e-6)


def test_the_smallest_feasible_norm_is_kept_and_failed_starts_are_nan(monkeypatch):
    """A stand-in solver returns the known solution scaled by 1.5, 1.0, 2.0 (all feasible) and one failure: the
    kept solution is the one of norm 1.0·‖v*‖, and the failed start's norm is NaN."""
    from types import SimpleNamespace
    from refvit.magen2025 import maxmargin
    X, y, p, v, _ = known_problem()
    ends = iter([(1.5, True), (1.0, True), (None, False), (2.0, True)])

    def fake(fun, t0, **kw):
        scale, ok = next(ends)
        k = t0.size // 2
        B = maxmargin.span_basis(X)
        t = np.concatenate([np.zeros(k), B.T @ v]) * (scale or 1.0)
        return SimpleNamespace(x=t, success=ok)

    monkeypatch.setattr(maxmargin, "minimize", fake)
    mm = maxmargin.max_margin(X, y, np.random.default_rng(0), n_random=3)
    # 1e-12: exact arithmetic on the basis change
    assert mm.norm == pytest.approx(np.linalg.norm(v), rel=1e-12) and mm.n_ok == 3
    assert np.isnan(mm.norms[2]) and mm.norms[0] == pytest.approx(1.5 * np.linalg.norm(v), rel=1e-12)


def test_on_the_data_law_the_starts_agree_and_the_solution_is_certified():
    _, data = dataset(n=12, d=80, snr=0.4)
    gd, _ = two_steps(data, 0.1)
    f = forward_cache(gd, data.X)[0]
    assert np.all(data.y * f > 0)
    start = (gd.p, gd.v / np.min(data.y * f))                           # feasible: margin exactly 1
    mm = max_margin(data.X, data.y, np.random.default_rng(1), init=[start], n_random=2)
    # 1e-5 stationarity and 1e-9 feasibility: SLSQP's tolerances on a problem with O(1) norms
    assert mm.success and mm.kkt.stationarity < 1e-5 and mm.kkt.feasibility < 1e-9
    assert np.nanmax(mm.norms) / np.nanmin(mm.norms) - 1 < 1e-5
    assert mm.norm <= math.hypot(np.linalg.norm(start[0]), np.linalg.norm(start[1])) + 1e-9   # a feasible point


# ---------------------------------------------------------------------------------------------------------------
# A tiny study, end to end
# ---------------------------------------------------------------------------------------------------------------

def tiny(**changes) -> SingleHeadStudy:
    """Tenths of a second per run: d = 120, 40 test samples."""
    base = dict(runs=2, data=DATA.replace(d=120, n_test=40), ns=(8, 16), snrs=(0.1, 0.3, 0.9),
                probe_lrs=(0.005, 0.05), mm_random=1, long_steps=30, long_step_size=0.02, tokens=4,
                query_steps=20, query_step_size=0.02)
    return SingleHeadStudy("tiny", **{**base, **changes})


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    run_study(tiny(), out, workers=0, progress=False)
    return out


def test_every_run_is_saved_with_its_identity_and_the_tables_are_its_summaries(done):
    study = tiny()
    for part in ("twostep", "maxmargin", "probe", "longrun", "tokens", "query"):
        rows = read_csv(done / f"{part}.csv")
        files = [s for s in specs(study) if s[0] == part]
        assert len(rows) == len(files)
        for row, (p, n, rho, r, lr, fname) in zip(rows, files):
            summary, _ = load_history(done / part / "runs" / fname)
            assert {k: summary[k] for k in identity(study, p, n, rho, r, lr)} == identity(study, p, n, rho, r, lr)
            assert (row["n"], row["repeat"], row["test_error"]) == (summary["n"], summary["repeat"],
                                                                     summary["test_error"])
            fitted = p == "maxmargin" or summary["train_error"] == 0
            assert row["benign"] == (summary["status"] in ("converged", "max_steps") and fitted
                                     and summary["test_error"] <= GOOD_ERROR)


def test_a_two_step_file_holds_what_an_independent_rerun_gives(done):
    study = tiny()
    p, n, rho, r, lr, fname = next(s for s in specs(study) if s[0] == "twostep")
    summary, _ = load_history(done / "twostep" / "runs" / fname)
    cfg = study.data.replace(N=n, rho=rho)
    from refvit.streams import cell_key
    rng = streams(study.seed, *cell_key(n, rho, r))
    data = make_dataset(cfg, rng.data, rng.test)
    assert summary["eta"] == lr * n                                     # step_scaling "n": η = η₀·n (17.1)
    params, _ = two_steps(data, lr * n)
    f_test = forward_cache(params, data.X_test)[0]
    assert summary["test_error"] == np.mean(np.sign(f_test) != data.y_test)
    assert summary["n_flipped"] == round(cfg.flip_rate * n)             # "exact" flips


def test_a_long_run_file_holds_what_an_independent_loop_gives(done):
    """30 plain GD steps written here with the model's loss_and_grads, against the saved long run."""
    from refvit.magen2025 import MagenModelConfig, loss_and_grads
    from refvit.streams import cell_key
    study = tiny()
    p, n, rho, r, lr, fname = [s for s in specs(study) if s[0] == "longrun"][-1]
    summary, _ = load_history(done / "longrun" / "runs" / fname)
    rng = streams(study.seed, *cell_key(n, rho, r))
    data = make_dataset(study.data.replace(N=n, rho=rho), rng.data, rng.test)
    params = MagenParams(np.zeros(study.data.d), np.zeros(study.data.d))
    for _ in range(30):
        _, g = loss_and_grads(params, data.X, data.y, MagenModelConfig())
        params = MagenParams(params.p - lr * n * g.p, params.v - lr * n * g.v)
    f, f_test = forward_cache(params, data.X)[0], forward_cache(params, data.X_test)[0]
    assert summary["test_error"] == np.mean(np.sign(f_test) != data.y_test)
    assert summary["train_error"] == np.mean(np.sign(f) != data.y)
    # 1e-12 relative: the same 30 updates, summed in the same order up to the trainer's bookkeeping
    assert summary["margin_min"] == pytest.approx(np.min(data.y * f), rel=1e-12)


def test_the_edges_split_each_n_at_its_best_snr():
    rows = [{"n": 8, "snr": s, "test_error": e} for s, e in ((0.1, 0.4), (0.2, 0.0), (0.3, 0.0), (0.4, 0.0),
                                                             (0.5, 0.3))]
    assert peak_snr(rows) == 0.3                                        # the middle of three equal minima
    assert not benign({"part": "twostep", "status": "max_steps", "train_error": 0.05, "test_error": 0.0})
    assert benign({"part": "maxmargin", "status": "converged", "test_error": GOOD_ERROR})


def test_the_step_size_rule_and_the_per_n_slope_on_hand_made_rows():
    probe = [{"lr": lr, "benign": b} for lr, b in ((0.1, True), (0.1, True), (0.02, True), (0.02, False),
                                                      (0.05, True), (0.05, True), (0.5, False))]
    assert probe_rule(probe) == 0.05                                    # 2 benign at 0.05 and 0.1: the smaller
    assert math.isnan(probe_rule([]))
    nan = math.nan
    edges = [{"n": n, "threshold": 3.0 * n ** -0.5, "bracket_lo": nan, "bracket_hi": nan} for n in (10, 40)]
    edges.append({"n": 160, "threshold": nan, "bracket_lo": 0.5 * 3.0 / 160 ** 0.5, "bracket_hi": 2 * 3.0 / 160 ** 0.5})
    # 1e-12: a least-squares line through three points on an exact power law (the bracket's geometric middle)
    assert per_n_slope(edges) == pytest.approx(-0.5, abs=1e-12)
    assert math.isnan(per_n_slope(edges[:1]))


def test_a_rerun_computes_nothing_and_a_damaged_or_foreign_file_is_recomputed(done, monkeypatch, capsys):
    calls = []
    real = mg_experiment.run_cell
    monkeypatch.setattr(mg_experiment, "run_cell", lambda *a: calls.append(a) or real(*a))
    tables = {p: read_csv(done / f"{p}.csv") for p in ("twostep", "maxmargin", "edges", "boundary")}
    run_study(tiny(), done, workers=0, progress=False)
    assert calls == []
    names = [s[5] for s in specs(tiny()) if s[0] == "maxmargin"]
    runs = done / "maxmargin" / "runs"
    before = (runs / names[0]).read_bytes()
    (runs / names[0]).write_bytes(before[:100])                         # truncated
    (runs / names[1]).write_bytes((runs / names[2]).read_bytes())       # another run copied into place
    run_study(tiny(), done, workers=0, progress=False)
    assert len(calls) == 2
    assert "holds the run" in capsys.readouterr().err
    assert len(list((done / "maxmargin" / "quarantine").iterdir())) == 2
    for p, rows in tables.items():             # the same numbers after recomputing (the solver is deterministic)
        assert [_comparable(r) for r in read_csv(done / f"{p}.csv")] == [_comparable(r) for r in rows], p


def _comparable(row: dict) -> dict:
    """A table row without its timing, NaN written as a string so that equal rows compare equal."""
    return {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items() if k != "cpu_seconds"}


def test_a_study_with_other_settings_is_refused_in_the_same_folder(done):
    with pytest.raises(ValueError, match="different settings"):
        run_study(tiny(step_size=0.3), done, workers=0, progress=False)


def test_the_figure_and_summary_show_the_tables(done, tmp_path):
    rows = read_csv(done / "twostep.csv")
    ns, snrs, G = mean_grid(rows, "test_error")
    by_hand = np.mean([r["test_error"] for r in rows if r["n"] == ns[1] and r["snr"] == snrs[2]])
    assert G[2, 1] == by_hand
    paths = singlehead_figures(done, *(tmp_path / f"{k}.png" for k in ("t", "m", "l", "k", "q")))
    assert all(p.stat().st_size > 0 for p in paths)
    text = singlehead_summary(done, "cmd")
    n_good = sum(r["benign"] for r in rows)
    assert text.startswith("cmd\n") and f"two GD steps: {n_good}/{len(rows)} runs benign" in text


@pytest.mark.parametrize("change, match", [
    (dict(snrs=(0.5, 0.5)), "snrs must be distinct"), (dict(runs=0), "runs must be"),
    (dict(ns=(1,)), "ns must be"), (dict(step_size=-1.0), "lr"), (dict(probe_lrs=()), "probe_lrs"),
    (dict(data=DATA.replace(M=3)), "M = 2"), (dict(mm_random=-1), "mm_random"),
    (dict(step_scaling="sqrt"), "step_scaling"), (dict(long_steps=-1), "long_steps"),
    (dict(tokens=2), "tokens must be 0"), (dict(tokens=-1), "tokens"), (dict(query_steps=-3), "query_steps"),
    (dict(query_model=MagenModelConfig()), "form='query'"), (dict(tokens_step_size=0.0), "lr"),
    (dict(query_step_size=float("nan")), "lr"),
])
def test_a_bad_design_is_refused_in_one_line(change, match):
    with pytest.raises(ValueError, match=match):
        tiny(**change)


def test_a_saved_design_reads_back_equal(done):
    saved = json.loads((done / "study.json").read_text())
    assert SingleHeadStudy.from_dict(saved) == tiny()
    assert saved["settings_hash"] == tiny().settings_hash()


# ---------------------------------------------------------------------------------------------------------------
# Beyond the paper: M > 2 tokens and trained W_Q, W_K, each against an independent computation
# ---------------------------------------------------------------------------------------------------------------

def _cell_data(study, part, M=2):
    """The data of the last run of ``part``, drawn here from the cell's streams."""
    p, n, rho, r, lr, fname = [s for s in specs(study) if s[0] == part][-1]
    rng = streams(study.seed, *cell_key(n, rho, r))
    data = make_dataset(study.data.replace(N=n, rho=rho, M=M), rng.data, rng.test)
    return n, lr, fname, data, rng


def test_a_tokens_run_is_two_closed_form_steps_on_m_tokens(done):
    """M = 4 tokens, η = η₀·n·M/2 (17.12): v₁ by (16.21) and the second step by (16.24), in plain numpy here."""
    study = tiny()
    n, lr, fname, data, _ = _cell_data(study, "tokens", M=4)
    summary, _ = load_history(done / "tokens" / "runs" / fname)
    assert data.X.shape == (n, 4, study.data.d) and summary["M"] == 4
    eta = lr * n * 4 / 2
    assert summary["eta"] == pytest.approx(eta, rel=1e-15)             # one product of floats
    v1, grad_p, grad_v, ubar = closed_two_steps(data.X, data.y, eta)
    p2, v2 = -eta * grad_p, v1 - eta * grad_v
    f, f_test = plain_outputs(p2, v2, data.X), plain_outputs(p2, v2, data.X_test)
    assert summary["test_error"] == np.mean(np.sign(f_test) != data.y_test)
    assert summary["train_error"] == np.mean(np.sign(f) != data.y)
    assert summary["train_error_step1"] == np.mean(np.sign(ubar) != data.y)
    # 1e-10 relative: the same two steps, summed in another order (einsum here, the chain rule there)
    assert summary["margin_min"] == pytest.approx(np.min(data.y * f), rel=1e-10)
    z = data.X @ p2
    s = np.exp(z - z.max(axis=1, keepdims=True))
    att = (s / s.sum(axis=1, keepdims=True))[np.arange(n), data.signal_pos]
    clean = data.y == data.y_clean
    assert summary["attn_signal_clean"] == pytest.approx(att[clean].mean(), rel=1e-10)


def test_a_query_run_is_plain_gd_on_w_q_w_k_v_by_the_per_sample_sums(done):
    """20 GD steps of (W_Q, W_K, v) from a Gaussian init drawn here in the documented order (W_Q, W_K, q, v), q
    fixed, with the gradients of ``formulas.gradients`` (per-sample loops, no chain rule), against the saved run."""
    study = tiny()
    n, lr, fname, data, rng = _cell_data(study, "query")
    summary, _ = load_history(done / "query" / "runs" / fname)
    qm, d = study.query_model, study.data.d
    g = rng.init
    W_Q, W_K = qm.sigma0 * g.standard_normal((qm.d_h, d)), qm.sigma0 * g.standard_normal((qm.d_h, d))
    q = g.standard_normal(d)
    q /= np.linalg.norm(q)
    v = qm.sigma0 * g.standard_normal(d)
    eta = lr * n
    for _ in range(study.query_steps):
        gr = formulas.gradients((W_Q, W_K, q, v), data.X, data.y, qm)
        W_Q, W_K, v = W_Q - eta * gr.W_Q, W_K - eta * gr.W_K, v - eta * gr.v     # q stays
    p = W_K.T @ (W_Q @ q)
    f, f_test = plain_outputs(p, v, data.X), plain_outputs(p, v, data.X_test)
    assert summary["steps"] == study.query_steps and summary["eta"] == eta
    assert summary["test_error"] == np.mean(np.sign(f_test) != data.y_test)
    assert summary["train_error"] == np.mean(np.sign(f) != data.y)
    # 1e-9 relative: 20 steps of the same updates summed in other orders (loops here, matrix products there);
    # rounding ~1e-15 per step, amplified by at most the steps' Lipschitz factor, stays far below
    assert summary["margin_min"] == pytest.approx(np.min(data.y * f), rel=1e-9)
    assert abs(summary["attn_signal_clean"] - 0.5) > 1e-3           # attention has left uniform: W_Q, W_K moved


def test_the_beyond_figures_draw_their_own_tables(done):
    for part in ("longrun", "tokens", "query"):
        fig = part_fig(done, part)
        mesh = next(c for c in fig.axes[0].collections if c.get_gid() == f"heat {part}")
        _, _, G = mean_grid(read_csv(done / f"{part}.csv"), "test_error")
        np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(G.shape), G)
        clean = [ln for ln in fig.axes[1].lines if ln.get_gid() == "clean n=16"][0]
        rows = [r for r in read_csv(done / f"{part}.csv") if r["n"] == 16]
        x = sorted({r["snr_sqrt_n"] for r in rows})
        np.testing.assert_array_equal(clean.get_ydata(), [np.mean([r["attn_signal_clean"] for r in rows
                                                                   if r["snr_sqrt_n"] == v]) for v in x])
        title = {"longrun": "30 small GD steps from zero (η = 0.02·n)",
                 "tokens": "two GD steps from zero on M = 4 tokens (η = 0.002·n·M/2)",
                 "query": "20 GD steps of trained W_Q, W_K, v (η = 0.02·n)"}[part]
        assert fig.texts[0].get_text() == f"Beyond the paper: {title}"


def test_the_summary_counts_the_beyond_parts(done):
    text = singlehead_summary(done, "cmd")
    for part, head in (("tokens", "two GD steps on M = 4 tokens"), ("query", "20 GD steps of trained W_Q, W_K, v")):
        rows = read_csv(done / f"{part}.csv")
        n_fit = sum(r["train_error"] == 0 for r in rows)
        assert f"{head}" in text
        assert f"{sum(r['benign'] for r in rows)}/{len(rows)} runs benign, {n_fit} interpolated" in text


def test_a_study_without_the_beyond_parts_has_no_such_runs_and_says_so(tmp_path):
    study = tiny(tokens=0, query_steps=0, long_steps=0)
    assert {s[0] for s in specs(study)} == {"twostep", "maxmargin", "probe"}
    fig = part_fig(tmp_path, "tokens")
    assert "tokens = 0" in fig.axes[0].texts[0].get_text()
