"""The second setting's figures draw exactly the data they are given, and refuse input they cannot draw.

Inputs are built here with known values (sign patterns fixed at t = 100, linear value noise, NaN test-loss rows, table
rows with a known threshold), drawn, and read back from the matplotlib artists by their gids. The expected numbers
are computed here by explicit loops, not by the figure module's own functions.
"""
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from refvit.analysis import fig_signgd as F

# a log-like grid that holds 0, 1, 2 and 100 in 12 rows, so indexing row 100 instead of step 100 fails
STEPS = np.array([0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 900])
M_K, N = 3, 4


def dyn_run(optimizer="signgd", repeat=0, seed=0):
    """A dynamics run with random series; the sign pattern at t = 100 is set by the caller where it matters."""
    rng = np.random.default_rng([seed, repeat])
    K = len(STEPS)
    a = {"step": STEPS.copy(),
         "h_query_noise": rng.normal(size=(K, M_K, N)), "h_key_noise": rng.normal(size=(K, M_K, N)),
         "h_query_signal": rng.normal(size=(K, M_K)),
         "h_value_noise": rng.normal(size=(K, N)) + 0.05 * STEPS[:, None],
         "h_s11": rng.uniform(0.1, 0.6, size=(K, N)), "h_s21": rng.uniform(1e-6, 0.5, size=(K, N)),
         "h_train_loss": 0.69 * np.exp(-(0.02 if optimizer == "signgd" else 0.003) * STEPS),
         "h_test_loss": np.full(K, np.nan)}
    return {"optimizer": optimizer, "repeat": repeat, "mu_norm": 0.02, "lr": 1e-3}, a


def snr_run(optimizer, snr, repeat, values, steps=STEPS):
    """An SNR run whose test loss is ``values`` (NaN where not evaluated)."""
    s, a = dyn_run(optimizer, repeat)
    a = {"step": steps.copy(), "h_test_loss": np.asarray(values, dtype=float),
         "h_train_loss": np.linspace(0.7, 0.1, len(steps))}
    return dict(s, snr=snr), a


def rate_rows():
    return [{"optimizer": "signgd", "repeat": r, "status": "max_steps", "rows": 20, "rate": (0.02, 0.03, 0.07)[r],
             "r2_linear": 0.99, "power": 2.0, "r2_power": 0.8, "better": "linear"} for r in range(3)] + \
           [{"optimizer": "adam", "repeat": r, "status": "max_steps", "rows": 20, "rate": 0.003, "r2_linear": 0.7,
             "power": 1.5 + r, "r2_power": 0.97, "better": "power"} for r in range(2)]


def snr_runs_simple():
    ev = np.where(np.arange(len(STEPS)) % 3 == 0, 1.0, np.nan)
    ev[-1] = 1.0
    return [snr_run(o, v, r, ev * (1 + r)) for o in ("gd", "signgd", "adam") for v in (0.5, 1.0) for r in range(2)]


def snr_table():
    rows = []
    for o, base in (("gd", 0.05), ("signgd", 0.3), ("adam", 0.4)):
        for v in (0.25, 0.5, 1.0, 2.0):
            for r in range(3):
                rows.append({"optimizer": o, "snr": v, "repeat": r, "test_error": base / v + 0.01 * r})
    return rows


def threshold_rows():
    nan = float("nan")
    return [{"optimizer": "gd", "threshold": 0.3, "lo": 0.25, "hi": 0.35, "separable": False,
             "bracket_lo": nan, "bracket_hi": nan},
            {"optimizer": "signgd", "threshold": nan, "lo": nan, "hi": nan, "separable": True,
             "bracket_lo": 1.0, "bracket_hi": 2.0},
            {"optimizer": "adam", "threshold": nan, "lo": nan, "hi": nan, "separable": False,
             "bracket_lo": nan, "bracket_hi": nan}]


def adam_table():
    rows = []
    for eps in (1e-8, 1e-4, 1e-1):
        for b in ((0.9, 0.999), (0.0, 0.0)):
            for r in range(2):
                rows.append({"adam_eps": eps, "beta1": b[0], "beta2": b[1], "repeat": r, "status": "max_steps",
                             "train_loss": 0.01, "test_error": 0.4 - 0.1 * math.log10(eps) / 8 + 0.01 * r + b[0] / 10,
                             "ref_test_error": 0.45 + 0.02 * r, "ref_distance": eps * (1 + r)})
    return rows


def is_png(path):
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def band_limits(coll, xs):
    """(lo, hi) per x of a fill_between band, read from its polygon's vertices (data coordinates)."""
    v = np.concatenate([p.vertices for p in coll.get_paths()])
    lo = np.array([v[v[:, 0] == x, 1].min() for x in xs])
    hi = np.array([v[v[:, 0] == x, 1].max() for x in xs])
    return lo, hi


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_each_figure_is_a_png_written_where_asked(tmp_path):
    dyn = [dyn_run("signgd", r) for r in range(2)] + [dyn_run("adam", r) for r in range(2)]
    paths = [F.figure_dynamics(dyn[:2], tmp_path / "a" / "fig1.png", dpi=40),
             F.figure_optimizers(dyn, snr_runs_simple(), rate_rows(), tmp_path / "b" / "fig2.png", dpi=40),
             F.figure_beyond(snr_table(), threshold_rows(), adam_table(), tmp_path / "fig3.png", dpi=40)]
    assert paths == [tmp_path / "a" / "fig1.png", tmp_path / "b" / "fig2.png", tmp_path / "fig3.png"]
    assert all(is_png(p) for p in paths)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["fig1.png", "fig2.png", "fig3.png"]
    assert plt.get_fignums() == []                 # saved figures are closed


def test_curves_are_grouped_by_their_sign_at_step_100():
    s, a = dyn_run()
    pos100 = np.array([[1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 0, 0]], dtype=bool)     # the truth, set here
    mag = np.abs(a["h_query_noise"]) + 0.1
    X = mag * np.where(pos100, 1.0, -1.0)[None]          # every row has the t = 100 sign ...
    X[0] *= -1                                           # ... but t = 0 has the opposite one
    X[-1, 0, 1] = X[-1, 1, 0] = 5.0                      # two negative-at-100 curves end positive
    X[-1, 2, 0] = -5.0                                   # a positive one ends negative
    a["h_query_noise"] = X
    qs = np.where(np.array([True, False, False]), 1.0, -1.0)
    a["h_query_signal"] = np.abs(a["h_query_signal"]) * qs[None]
    a["h_query_signal"][-1] *= -1                        # the last row has the opposite signs
    fig = F.dynamics_fig([(s, a)])
    ax = F.panel(fig, "d:query_noise")
    for si in range(M_K):
        for i in range(N):
            line = F.artist(ax, f"query_noise s={si} i={i}")
            assert line.get_linestyle() == (":" if pos100[si, i] else "-"), (si, i)
            np.testing.assert_array_equal(line.get_xdata(), STEPS)
            np.testing.assert_array_equal(line.get_ydata(), X[:, si, i])
    for name, mask in (("positive", pos100), ("negative", ~pos100)):
        expect = [np.mean([X[k, si, i] for si in range(M_K) for i in range(N) if mask[si, i]])
                  for k in range(len(STEPS))]
        # the same numbers summed in another order: 1e-13 relative
        np.testing.assert_allclose(F.artist(ax, f"{name} mean").get_ydata(), expect, rtol=1e-13)
    assert "positive at t = 900: 2 of 6" in ax.get_title()
    ax = F.panel(fig, "d:query_signal")
    assert [F.artist(ax, f"query_signal s={si}").get_linestyle() for si in range(M_K)] == [":", "-", "-"]


def test_early_panels_show_steps_0_to_2_and_the_value_noise_slope():
    s, a = dyn_run()
    c = np.array([0.3, -0.2, 0.1, 0.0])
    a["h_value_noise"] = c[None, :] + 0.057 * STEPS[:, None]           # linear, slope 0.057 per step
    fig = F.dynamics_fig([(s, a)])
    ax = F.panel(fig, "b")
    mean = F.artist(ax, "mean value_noise")
    np.testing.assert_array_equal(mean.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(mean.get_ydata(), c.mean() + 0.057 * np.arange(3), rtol=0, atol=1e-15)  # rounding
    assert "increments 0.057, 0.057 per step" in mean.get_label()
    for i in range(N):
        np.testing.assert_allclose(F.artist(ax, f"value_noise i={i}").get_ydata(), c[i] + 0.057 * np.arange(3),
                                   rtol=0, atol=1e-15)
    ax = F.panel(fig, "a")
    K3 = a["h_key_noise"][:3]
    np.testing.assert_allclose(F.artist(ax, "mean key_noise").get_ydata(),
                               [np.mean([K3[k, si, i] for si in range(M_K) for i in range(N)]) for k in range(3)],
                               rtol=1e-13)                                # summation order
    np.testing.assert_array_equal(F.artist(ax, "key_noise s=1 i=0").get_ydata(), K3[:, 1, 0])


def test_softmax_band_is_the_min_max_over_samples_and_the_line_their_mean():
    s, a = dyn_run()
    fig = F.dynamics_fig([(s, a)])
    ax = F.panel(fig, "c")
    for key in ("s11", "s21"):
        S = a[f"h_{key}"]
        lo, hi = band_limits(F.artist(ax, f"band {key}"), STEPS)
        np.testing.assert_array_equal(lo, [min(row) for row in S])
        np.testing.assert_array_equal(hi, [max(row) for row in S])
        np.testing.assert_allclose(F.artist(ax, f"mean {key}").get_ydata(), [sum(row) / N for row in S],
                                   rtol=1e-15)                           # one division, same order
    assert ax.get_yscale() == "log" and ax.get_xscale() == "symlog"


def test_figure2_query_noise_panels_report_what_each_optimizer_did():
    sg, ad = dyn_run("signgd"), dyn_run("adam", seed=1)
    neg = np.zeros((M_K, N), dtype=bool)
    neg[0, :2] = True                                                  # 2 negative at t = 100
    for (_, a), flip in ((sg, True), (ad, False)):
        X = np.abs(a["h_query_noise"]) + 0.1
        X[:, neg] *= -1
        if flip:
            X[-1][neg] = 1.0                                          # SignGD: both turn positive
        a["h_query_noise"] = X
    fig = F.optimizers_fig([sg, ad], snr_runs_simple(), rate_rows())
    assert "positive at t = 900: 2 of 2" in F.panel(fig, "a").get_title()
    assert "positive at t = 900: 0 of 2" in F.panel(fig, "b").get_title()
    for letter, (_, a) in (("a", sg), ("b", ad)):
        ax = F.panel(fig, letter)
        assert F.artist(ax, "query_noise s=0 i=1").get_linestyle() == "-"
        assert F.artist(ax, "query_noise s=1 i=1").get_linestyle() == ":"


def test_training_loss_panel_draws_every_run_and_the_rates_rows():
    dyn = [dyn_run("signgd", r) for r in range(3)] + [dyn_run("adam", r) for r in range(2)]
    ax = F.panel(F.optimizers_fig(dyn, snr_runs_simple(), rate_rows()), "c")
    np.testing.assert_array_equal(F.artist(ax, "train_loss adam 1").get_ydata(), dyn[4][1]["h_train_loss"])
    labels = [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]
    assert len(labels) == 2
    # medians over the rows: SignGD rates 0.02, 0.03, 0.07 -> 0.03 (their mean would be 0.04); Adam powers 1.5, 2.5 -> 2
    assert "r = 0.03/step (R² 0.990)" in labels[0] and "linear fits better in 3 of 3" in labels[0]
    assert "p = 2 (R² 0.970)" in labels[1] and "linear fits better in 0 of 2" in labels[1]
    assert ax.get_yscale() == "log"


def test_test_loss_is_the_mean_over_repeats_with_a_min_max_band_on_finite_rows_only():
    K = len(STEPS)
    rng = np.random.default_rng(3)
    evaluated = np.zeros(K, dtype=bool)
    evaluated[::3] = evaluated[-1] = True                               # rows 0, 3, 6, 9, 11
    runs, values = [], {}
    for opt in ("gd", "signgd", "adam"):
        for snr in (0.45, 1.1, 3.0):                                    # 0.45 is closest to 0.5, 1.1 to 1.0
            for r in range(3):
                v = np.where(evaluated, rng.uniform(0.1, 2.0, K), np.nan)
                if opt == "signgd" and snr == 1.1 and r == 2:
                    v[3] = np.nan                                       # one repeat lacks step 3: step dropped
                values[opt, snr, r] = v
                runs.append(snr_run(opt, snr, r, v))
    ax = F.panel(F.optimizers_fig([dyn_run("signgd"), dyn_run("adam")], runs, rate_rows()), "d")
    for opt in ("gd", "signgd", "adam"):
        for snr in (0.45, 1.1):
            rows = [k for k in range(K) if evaluated[k] and not (opt == "signgd" and snr == 1.1 and k == 3)]
            steps = STEPS[rows]
            Y = np.array([[values[opt, snr, r][k] for k in rows] for r in range(3)])
            line = F.artist(ax, f"mean {opt} snr={snr:g}")
            np.testing.assert_array_equal(line.get_xdata(), steps)
            np.testing.assert_allclose(line.get_ydata(), [sum(c) / 3 for c in Y.T], rtol=1e-15)   # same sum order
            lo, hi = band_limits(F.artist(ax, f"band {opt} snr={snr:g}"), steps)
            np.testing.assert_array_equal(lo, Y.min(axis=0))
            np.testing.assert_array_equal(hi, Y.max(axis=0))
        with pytest.raises(KeyError):                                   # SNR 3 is neither target's closest
            F.artist(ax, f"mean {opt} snr=3")


def test_threshold_line_and_interval_sit_at_the_table_values_and_a_bracket_is_drawn_differently():
    fig = F.beyond_fig(snr_table(), threshold_rows(), adam_table())
    ax = F.panel(fig, "a")
    np.testing.assert_array_equal(F.artist(ax, "threshold gd").get_xdata(), [0.3, 0.3])
    span = F.artist(ax, "interval gd")
    assert (span.get_x(), span.get_x() + span.get_width()) == pytest.approx((0.25, 0.35), rel=1e-15)
    bracket = F.artist(ax, "bracket signgd")
    assert (bracket.get_x(), bracket.get_x() + bracket.get_width()) == pytest.approx((1.0, 2.0), rel=1e-15)
    assert bracket.get_hatch() == "//" and "separable" in bracket.get_label()
    for gid in ("threshold signgd", "threshold adam", "interval adam", "bracket adam", "bracket gd"):
        with pytest.raises(KeyError):
            F.artist(ax, gid)
    assert ax.get_xscale() == "log"


@pytest.mark.parametrize("lo, hi, where, text", [(0.7, float("nan"), 0.7, "SNR* ≥ 0.7"),
                                                (float("nan"), 0.1, 0.1, "SNR* ≤ 0.1")])
def test_a_one_sided_bracket_is_a_dotted_bound_on_the_right_side(lo, hi, where, text):
    row = dict(threshold_rows()[2], bracket_lo=lo, bracket_hi=hi)
    fig, ax = plt.subplots()
    assert F.draw_threshold(ax, row, "C2") == "bound"
    line = F.artist(ax, "bound adam")
    np.testing.assert_array_equal(line.get_xdata(), [where, where])
    assert line.get_linestyle() == ":" and text in line.get_label()


def test_a_bracket_of_one_value_is_a_dashed_line_there():
    """Quasi-separable labels (runs split at one SNR, fail below, generalize above): a dashed line at that SNR."""
    row = dict(threshold_rows()[2], bracket_lo=4.0, bracket_hi=4.0)
    fig, ax = plt.subplots()
    assert F.draw_threshold(ax, row, "C2") == "bracket"
    line = F.artist(ax, "bracket adam")
    np.testing.assert_array_equal(line.get_xdata(), [4.0, 4.0])
    assert line.get_linestyle() == "--" and "split at SNR 4" in line.get_label()


def test_snr_panel_shows_every_finite_run_and_the_mean_per_snr():
    rows = snr_table()
    rows[0]["test_error"] = float("nan")                                # gd, snr 0.25, repeat 0: no test error
    ax = F.panel(F.beyond_fig(rows, threshold_rows(), adam_table()), "a")
    for opt in ("gd", "signgd", "adam"):
        mine = [r for r in rows if r["optimizer"] == opt and not math.isnan(r["test_error"])]
        pts = F.artist(ax, f"runs {opt}").get_offsets()
        np.testing.assert_array_equal(pts, [[r["snr"], r["test_error"]] for r in mine])
        means = [np.mean([r["test_error"] for r in mine if r["snr"] == v]) for v in (0.25, 0.5, 1.0, 2.0)]
        line = F.artist(ax, f"mean {opt}")
        np.testing.assert_array_equal(line.get_xdata(), [0.25, 0.5, 1.0, 2.0])
        np.testing.assert_allclose(line.get_ydata(), means, rtol=1e-15)   # same values, same order
    assert "1 runs without a test error left out" in F.artist(ax, "mean gd").get_label()


def test_adam_sweep_panels_and_the_signgd_reference():
    rows = adam_table()
    fig = F.beyond_fig(snr_table(), threshold_rows(), rows)
    for letter, key in (("b", "test_error"), ("b′", "ref_distance")):
        ax = F.panel(fig, letter)
        for b in ((0.9, 0.999), (0.0, 0.0)):
            line = F.artist(ax, f"mean {key} b=({b[0]:g},{b[1]:g})")
            np.testing.assert_array_equal(line.get_xdata(), [1e-8, 1e-4, 1e-1])
            expect = [np.mean([r[key] for r in rows if (r["beta1"], r["beta2"]) == b and r["adam_eps"] == e])
                      for e in (1e-8, 1e-4, 1e-1)]
            np.testing.assert_allclose(line.get_ydata(), expect, rtol=1e-15)
    ref = F.artist(F.panel(fig, "b"), "signgd reference")
    np.testing.assert_allclose(ref.get_ydata(), [0.46, 0.46], rtol=1e-15)   # repeats 0.45 and 0.47
    assert F.panel(fig, "b′").get_yscale() == "log"                        # distances span 1e-8 … 2e-1


def _drop(d, key):
    return {k: v for k, v in d.items() if k != key}


def _bad_inputs():
    s, a = dyn_run()
    sa = dyn_run("adam")
    rates, snr, thr, adam = rate_rows(), snr_runs_simple(), threshold_rows(), adam_table()
    no100 = dict(a, step=a["step"] + (a["step"] == 100))                  # step 100 recorded as 101
    wide = dict(a, h_key_noise=np.zeros((len(STEPS), M_K, N + 1)))
    return [
        ("empty dynamics", lambda: F.dynamics_fig([]), "no runs given"),
        ("not a pair", lambda: F.dynamics_fig([a]), "expected a \\(summary dict, arrays dict\\) pair"),
        ("adam in figure 1", lambda: F.dynamics_fig([sa]), "optimizer is 'adam', expected 'signgd'"),
        ("missing series", lambda: F.dynamics_fig([(s, _drop(a, "h_s21"))]), "arrays lack 'h_s21'"),
        ("missing step", lambda: F.dynamics_fig([(s, _drop(a, "step"))]), "arrays lack 'step'"),
        ("shape clash", lambda: F.dynamics_fig([(s, wide)]),
         "h_value_noise has shape \\(12, 4\\): its n axis is 4, other series say 5"),
        ("no step 100", lambda: F.dynamics_fig([(s, no100)]), "no recorded row at step 100"),
        ("no adam dynamics", lambda: F.optimizers_fig([(s, a)], snr, rates), "no runs of Adam"),
        ("no gd snr", lambda: F.optimizers_fig([(s, a), sa], snr[4:], rates), "snr_runs: no runs of GD"),
        ("snr 0", lambda: F.optimizers_fig([(s, a), sa], [(dict(snr[0][0], snr=0.0), snr[0][1])] + snr[1:], rates),
         "'snr' must be a number > 0"),
        ("empty rates", lambda: F.optimizers_fig([(s, a), sa], snr, []), "rates.*no rows"),
        ("rates column", lambda: F.optimizers_fig([(s, a), sa], snr, [_drop(r, "power") for r in rates]),
         "lacks the column\\(s\\) \\['power'\\]"),
        ("no adam rates", lambda: F.optimizers_fig([(s, a), sa], snr, rates[:3]), "no rows of Adam"),
        ("empty snr table", lambda: F.beyond_fig([], thr, adam), "snr_rows.*no rows"),
        ("empty thresholds", lambda: F.beyond_fig(snr_table(), [], adam), "thresholds.*no rows"),
        ("thresholds column", lambda: F.beyond_fig(snr_table(), [_drop(r, "bracket_lo") for r in thr], adam),
         "lacks the column\\(s\\) \\['bracket_lo'\\]"),
        ("empty adam table", lambda: F.beyond_fig(snr_table(), thr, []), "adam_rows.*no rows"),
        ("eps 0", lambda: F.beyond_fig(snr_table(), thr, [dict(adam[0], adam_eps=0.0)] + adam[1:]),
         "adam_eps must be > 0"),
    ]


@pytest.mark.parametrize("name, call, match", _bad_inputs(), ids=[b[0] for b in _bad_inputs()])
def test_bad_input_is_refused_with_one_line_naming_what_is_missing(name, call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
