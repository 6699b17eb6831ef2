"""The sharpness study (docs/math.md §12.1–§12.3): the rate rule and the SNR grid, the step bound against a finite
difference of the real loss, its refusal, the width on labels simulated from a known transition, and a tiny study
end to end with runs that fail counted and never fitted."""
import math
import zlib

import numpy as np
import pytest

from refvit.analysis import fig_sharpness, summaries
from refvit.jiang2024.config import figure1_setting
from refvit.jiang2024.experiment import draw_cell
from refvit.fit import fit_boundary, fit_width
from refvit.io import load_json, read_csv
from refvit.jiang2024.model import forward, forward_cache, mean_loss
from refvit.jiang2024.studies import VARIANTS, SharpnessStudy, run_sharpness
from refvit.jiang2024.studies.sharpness import condition_row, mu_grid, snr_grid, step_curvature


def test_rate_rule_keeps_eta_times_noise_norm_fixed_and_the_snr_grid_covers_the_same_range():
    s = SharpnessStudy("t", (256, 1024, 4096), (2, 4), snr_grid(0.3, 1.2, 6), 1, variants=())
    sigma_p = s.data.sigma_p
    # (12.1): η σ_p² d is the Figure-1 value 0.1·16·1024 at every d (exact: powers of two)
    assert {s.lr(d) * sigma_p ** 2 * d for d in s.ds} == {0.1 * 16 * 1024}
    for d in s.ds:
        mus = np.array(mu_grid(s.snrs, sigma_p, d))
        snr = mus / (sigma_p * math.sqrt(d))
        # rounding ‖μ‖ to an integer moves the SNR by at most 0.5/(σ_p √d), 1/128 at d = 256
        assert abs(snr.min() - 0.3) <= 0.5 / (sigma_p * math.sqrt(d)) + 1e-12
        assert abs(snr.max() - 1.2) <= 0.5 / (sigma_p * math.sqrt(d)) + 1e-12
    fixed = SharpnessStudy("t", (256, 1024), (2, 4), (0.3, 0.6), 1, variants=(), lr_scaling="fixed")
    assert fixed.lr(256) == fixed.lr(1024) == 0.1


@pytest.mark.parametrize("d, N, mu, variant", [(256, 2, 40.0, "authors"), (1024, 8, 60.0, "authors"),
                                                (1024, 4, 100.0, "projected"), (1024, 16, 50.0, "zero_tokens")])
def test_step_curvature_is_the_curvature_of_the_real_loss_at_init(d, N, mu, variant):
    """(12.3) against the second difference of the training loss along the top direction of the W_V block.

    f is linear in W_V (attention does not depend on it), so the loss restricted to W_V is a logistic regression on
    the attention-weighted tokens x̄_i = Σ_j ā_ij x_ij, with exact curvature (‖w_O‖²/N) λ_max(Σ_i ℓ''_i x̄_i x̄_iᵀ).
    """
    data, model, _ = figure1_setting(N=N, mu_norm=mu)
    data = data.replace(d=d, **VARIANTS.get(variant, {}))
    ds, p = draw_cell(data, model, 0, (N, int(mu), 0))
    f, cache = forward_cache(p, ds.X)
    s = 1 / (1 + np.exp(-ds.y * f))
    B = np.einsum("ij,ijk->ik", cache.abar, ds.X) * np.sqrt(s * (1 - s))[:, None]   # rows √ℓ''_i x̄_i, (N, d)
    lam, U = np.linalg.eigh(B @ B.T)                          # the non-zero eigenvalues of BᵀB = Σ ℓ''_i x̄_i x̄_iᵀ
    u = B.T @ U[:, -1]
    u /= np.linalg.norm(u)                                    # its top eigenvector
    D = np.outer(u, p.w_O / np.linalg.norm(p.w_O))            # unit direction in W_V (Frobenius norm 1)
    h = 1e-2

    def L(t):
        return mean_loss(forward(p._replace(W_V=p.W_V + t * D), ds.X), ds.y)
    fd = (L(h) - 2 * L(0.0) + L(-h)) / h ** 2
    exact = np.dot(p.w_O, p.w_O) * lam[-1] / N
    # a central second difference: O(h²) relative error from the fourth derivative (~1e-5 here) plus rounding
    # ε·L/h² ~ 1e-12; 1e-4 covers both
    assert fd == pytest.approx(exact, rel=1e-4)
    # the bound takes expected norms, uniform attention and ℓ'' = 1/4; this draw's ‖w_O‖² (±4 %), token norms
    # (±5 % at d = 256), attention (logits of std ~0.5 at init, by (12.2)) and class block move the exact value by
    # up to ~20 % at N = 2: 30 % is the margin for these draws
    assert exact == pytest.approx(step_curvature(data, model), rel=0.3)


def test_a_rule_that_leaves_the_small_step_regime_is_refused_naming_the_rule_and_the_cell():
    with pytest.raises(ValueError, match=r"lr_scaling='fixed'.*d = 4096.*N = 2.*inverse_d"):
        SharpnessStudy("t", (1024, 4096), (2, 4), (0.3, 1.3), 1, variants=(), lr_scaling="fixed")
    SharpnessStudy("t", (1024, 4096), (2, 4), (0.3, 1.3), 1, variants=())           # inverse_d: accepted
    with pytest.raises(ValueError, match="lr_scaling"):
        SharpnessStudy("t", (1024,), (2,), (0.3,), 1, variants=(), lr_scaling="sqrt")
    with pytest.raises(ValueError, match="variant_d"):
        SharpnessStudy("t", (256,), (2,), (0.3,), 1)                                # variants need d = 1024
    with pytest.raises(ValueError, match="data variant"):
        SharpnessStudy("t", (1024,), (2,), (0.3,), 1, variants=("noisy",))


def simulated(k: float, log_c: float, seed: int):
    """Benign labels from P = σ(k·(log(N·SNR²) − log c)): a = 2, C = c, width 2 ln 9 / k in log(N·SNR²)."""
    rng = np.random.default_rng(seed)
    N = np.repeat([2.0, 4.0, 8.0, 16.0], 400)
    snr = np.tile(np.geomspace(0.2, 1.6, 400), 4)
    z = k * (np.log(N * snr ** 2) - log_c)
    return N, snr, rng.random(N.size) < 1 / (1 + np.exp(-z))


def width_row(rep: int, n_boot: int) -> dict:
    """The condition row of the fit to replication ``rep`` of a transition of width 2 ln 9 / 4, and the fit."""
    N, snr, b = simulated(4.0, math.log(2.0), rep)
    fit = fit_boundary(N, snr, b, np.random.default_rng([rep, 1]), n_boot=n_boot)
    return condition_row({"folder": "x", "d": 1024, "variant": "authors", "lr": 0.1, "max_step": 0.5},
                         [{"converged": True}] * len(b), {**fit, "excluded": {}}), fit


def test_the_width_is_where_the_fitted_probability_goes_from_10_to_90_percent():
    """(12.4): an independent check of the width's meaning on one fit (the interval ends are checked against a hand
    bootstrap in tests/test_intervals.py)."""
    row, fit = width_row(0, n_boot=0)
    b0, b1, b2 = fit["beta"]
    centre = -(b0 + b1 * math.log(4.0)) / b2 * 2 + math.log(4.0)                   # log(N·SNR²) at 50 %, N = 4
    for x, p in ((centre - row["width"] / 2, 0.1), (centre + row["width"] / 2, 0.9)):
        logit = b0 + b1 * math.log(4.0) + b2 * (x - math.log(4.0)) / 2
        assert 1 / (1 + math.exp(-logit)) == pytest.approx(p, abs=1e-12)         # rounding only


@pytest.mark.slow
def test_width_is_recovered_from_a_known_logistic_transition():
    """(12.4) on labels simulated from a transition of known width; the interval covers it in most replications."""
    truth = 2 * math.log(9) / 4.0                              # 10 %→90 % of σ(k·x) is Δx = 2 ln 9 / k
    covered, errors = 0, []
    for rep in range(10):
        row, _ = width_row(rep, n_boot=100)
        covered += row["width_lo"] <= truth <= row["width_hi"]
        errors.append(row["width"] - truth)
    # 1,600 labels across the transition pin the width to ~±6 % (one s.d. over seeds): the mean of 10 replications
    # has a standard error of ~2 %, so 5 % is 2.5 of them
    assert abs(np.mean(errors)) < 0.05 * truth
    # 95 % intervals: P(fewer than 8 of 10 cover) ≈ 1 % for a correct interval (and these seeds are fixed)
    assert covered >= 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two d's and one variant; a 10-step budget makes part of the runs stop at max_steps."""
    out = tmp_path_factory.mktemp("sharp")
    data, model, train = figure1_setting()
    study = SharpnessStudy("tiny", (64, 128), (2, 8), snr_grid(0.3, 1.6, 6), 3, variants=("zero_tokens",),
                           variant_d=128, n_boot=20, train=train.replace(steps=10))
    run_sharpness(study, out, progress=False)
    return study, out


def test_tiny_study_counts_failed_runs_and_fits_only_converged_ones(tiny):
    study, out = tiny
    conds = {r["condition"]: r for r in read_csv(out / "conditions.csv")}
    assert set(conds) == {"d0064", "d0128", "d0128_zero_tokens"}
    table = read_csv(out / "table.csv")
    for name, r in conds.items():
        rows = [t for t in table if t["condition"] == name]
        fit = load_json(out / name / "fit.json")
        n_conv = sum(t["converged"] for t in rows)
        assert r["n_runs"] == len(rows) and r["n_converged"] == n_conv
        assert fit["n"] == n_conv                                   # the fit saw only the converged runs
        stopped = sum(t["status"] == "max_steps" for t in rows)
        assert stopped > 0 and f"max_steps={stopped}" in r["excluded"]
        assert r["lr"] == pytest.approx(0.1 * 1024 / r["d"])
    widths = read_csv(out / "widths.csv")
    assert {(w["condition"], w["N"]) for w in widths} == {(c, N) for c in conds for N in (2, 8)}
    for w in widths:    # per N, the converged runs only, with the study's n_boot (20) on the (condition, N) stream
        mine = [t for t in table if t["condition"] == w["condition"] and t["N"] == w["N"] and t["converged"]]
        assert w["n"] == len(mine)
        rng = np.random.default_rng([study.seed, 0x3D7, zlib.crc32(w["condition"].encode()), w["N"]])
        want = fit_width(np.array([t["snr"] for t in mine]), np.array([t["test_loss"] < 0.2 for t in mine]), rng, 20)
        lo, hi = want["ci_width"] or [math.nan, math.nan]
        # the same computation on the same numbers (fit_width is checked by hand in tests/test_intervals.py)
        assert np.allclose([w["width_lo"], w["width_hi"]], [lo, hi], rtol=0, atol=0, equal_nan=True), w
        assert w["n_boot_no_estimate"] == want["n_boot_no_estimate"]
    assert any(math.isfinite(w["width_lo"]) for w in widths)          # not vacuous: some interval was computed
    # the sweep folders are plain sweeps: a rerun recomputes nothing and rewrites the same tables
    before = [(out / f).read_bytes() for f in ("conditions.csv", "widths.csv", "table.csv")]
    run_sharpness(study, out, progress=False)
    assert [(out / f).read_bytes() for f in ("conditions.csv", "widths.csv", "table.csv")] == before


def test_figures_and_summary_are_drawn_from_the_saved_results_only(tiny, tmp_path):
    _, out = tiny
    paths = fig_sharpness.sharpness_figures(out, tmp_path / "fit.png", tmp_path / "curves.png")
    assert all(p.stat().st_size > 10_000 for p in paths)            # a drawn figure, not an empty canvas
    assert fig_sharpness.main([str(out), "--out-fit", str(tmp_path / "f.png"), "--out-curves",
                               str(tmp_path / "c.png"), "--dpi", "40"]) == 0 and (tmp_path / "c.png").exists()
    assert fig_sharpness.main([str(tmp_path / "missing")]) == 2                # one line, status 2
    text = summaries.sharpness_summary(out)
    assert text.count("\n") == 3 + 3 + 1 + 6 and "d0128_zero_tokens" in text   # head, conditions, widths


def test_wilson_interval_matches_its_closed_form_at_known_points():
    lo, hi = fig_sharpness.wilson(np.array([0.0, 5.0]), np.array([10.0, 10.0]))
    # k = 0: [0, z²/(n + z²)]; k = n/2: symmetric about 1/2 (closed forms of the Wilson score interval)
    z2 = 1.96 ** 2
    assert lo[0] == pytest.approx(0.0, abs=1e-15) and hi[0] == pytest.approx(z2 / (10 + z2), rel=1e-12)
    assert lo[1] + hi[1] == pytest.approx(1.0, rel=1e-12)


@pytest.mark.slow
def test_width_at_one_n_is_recovered():
    """fit_width on labels from P = σ(k·(log(N·SNR²) − log c)) at one N: width 2 ln 9 / k in log(N·SNR²)."""
    from refvit.fit import fit_width
    k, N = 6.0, 8.0
    truth = 2 * math.log(9) / k
    covered, est = 0, []
    for rep in range(10):
        rng = np.random.default_rng([rep, 2])
        snr = np.geomspace(0.2, 1.0, 400)
        b = rng.random(400) < 1 / (1 + np.exp(-k * np.log(N * snr ** 2 / 2.0)))
        w = fit_width(snr, b, np.random.default_rng([rep, 3]), n_boot=100)
        assert not w["separable"] and w["n"] == 400
        covered += w["ci_width"][0] <= truth <= w["ci_width"][1]
        est.append(w["width"])
    # 400 labels pin the width to ~±11 % each (one s.d. over seeds): the mean of 10 replications has a standard
    # error of ~3.6 %, so 12 % is about 3 of them
    assert abs(np.mean(est) - truth) < 0.12 * truth
    assert covered >= 8           # 95 % intervals: fewer than 8 of 10 has probability ≈ 1 %


def test_width_at_one_n_names_separable_labels_and_runs_without_a_transition():
    from refvit.fit import fit_width
    sep = fit_width(np.array([0.2, 0.3, 0.5, 0.7]), np.array([0, 0, 1, 1]), np.random.default_rng(0), n_boot=10)
    assert sep["separable"] and sep["width"] is None
    none = fit_width(np.array([0.2, 0.3]), np.array([1, 1]), np.random.default_rng(0), n_boot=10)
    assert none["width"] is None and not none["separable"] and none["message"]
    empty = fit_width(np.array([]), np.array([]), np.random.default_rng(0), n_boot=10)   # an N with no converged run
    assert empty["width"] is None and empty["n"] == 0


def test_command_line_refuses_an_unstable_rate_rule_before_any_run(tmp_path, capsys):
    from refvit import cli
    assert cli.main(["study", "sharpness", "--preset", "full", "--lr-scaling", "fixed", "--results",
                     str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "lr_scaling='fixed'" in err and "d = 4096" in err and err.count("\n") == 1     # one line, no traceback
    assert not any(tmp_path.iterdir())                                                   # nothing written


def _width_row(N, d, width, separable=False):
    nan = float("nan")
    return {"variant": "authors", "N": N, "d": d, "separable": separable, "width": nan if separable else width,
            "width_lo": nan if separable else width * 0.8, "width_hi": nan if separable else width * 1.2}


def test_per_n_widths_draw_separable_conditions_apart_from_measured_ones():
    """A separable condition has no width: it is drawn hollow in a band below 0 that has no tick, with its own
    legend entry, never as a point at a width (0 or any other); measured widths are drawn at their values."""
    import matplotlib.pyplot as plt
    widths = [_width_row(2, 256, 0.8), _width_row(2, 512, 0.6), _width_row(8, 256, 0.2),
              _width_row(8, 512, None, separable=True)]
    fig, ax = plt.subplots()
    fig_sharpness.per_n_panel(ax, widths, {"Ns": [2, 8], "ds": [256, 512]})
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
    hollow = [ln for ln in lines if ln.get_marker() == "v"]
    assert len(hollow) == 1 and hollow[0].get_markerfacecolor() == "none"
    (y_sep,) = hollow[0].get_ydata()
    lo, hi = ax.get_ylim()
    assert lo < y_sep < 0                                                  # inside the axes, below every width
    assert min(ax.get_yticks()) >= 0                                       # the band carries no value
    assert len(ax.patches) == 1 and ax.patches[0].get_extents().height > 0    # the shaded no-estimate band
    measured = sorted(y for ln in lines if ln.get_marker() == "o" for y in ln.get_ydata())
    assert measured == [0.2, 0.6, 0.8]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "separable: no estimate (sharper than the grid)" in legend
    plt.close(fig)
    fig, ax = plt.subplots()                                               # nothing separable: no band, no entry
    fig_sharpness.per_n_panel(ax, widths[:3], {"Ns": [2, 8], "ds": [256, 512]})
    assert not ax.patches and not any("separable" in t.get_text() for t in ax.get_legend().get_texts())
    plt.close(fig)
