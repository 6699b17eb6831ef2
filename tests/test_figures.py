"""Figure scripts run on saved results only, and aggregate them correctly."""
import json
import math
import statistics

import numpy as np
import pytest

from refvit.analysis import fig_dynamics, fig_heatmap, fig_sharpness
from refvit.jiang2024.config import DataConfig, ModelConfig
from refvit.config import TrainConfig
from refvit.jiang2024.dynamics import Dynamics, run_dynamics
from refvit.jiang2024.boundary import fit_sweep
from refvit.io import load_json
from refvit.jiang2024.sweep import Sweep, run_sweep


def tiny(steps=200):
    return Sweep("tiny", (2, 4, 8), (1, 2, 4, 8, 16), 2, 0,
                 DataConfig(N=2, M=3, d=64, sigma_p=1.0, sigma_w=0.05, n_test=20),
                 ModelConfig(d_h=8, d_v=8, init_scale=1.0),
                 TrainConfig(lr=1.0, steps=steps, loss_threshold=0.01, backend="numpy"))


@pytest.fixture(scope="module")
def saved_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    run_sweep(tiny(), out, workers=0, progress=False)
    fit_sweep(out, n_boot=20)
    return out


@pytest.fixture(scope="module")
def saved_dynamics(tmp_path_factory):
    out = tmp_path_factory.mktemp("dyn")
    spec = Dynamics("tiny", (("harmful", 1), ("benign", 8)), 3, 0,
                    DataConfig(N=4, M=3, d=64, sigma_p=1.0, sigma_w=0.05, n_test=20),
                    ModelConfig(d_h=8, d_v=8, init_scale=1.0),
                    TrainConfig(lr=0.5, steps=40, eval_every=1, coords="span"))
    run_dynamics(spec, out, workers=0, progress=False)
    return out


def _is_png(path):
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("snr", ["axis", "theory"])
def test_heatmap_script_runs_on_a_saved_sweep(saved_sweep, tmp_path, snr):
    out = tmp_path / f"fig1_{snr}.png"
    assert fig_heatmap.main([str(saved_sweep), "--out", str(out), "--snr", snr, "--dpi", "40"]) == 0
    assert _is_png(out)


def test_cell_means_equal_a_direct_average_of_the_run_files(saved_sweep):
    from refvit.io import read_columns as load_table
    g = fig_heatmap.cell_grid(load_table(saved_sweep / "table.csv"), "snr_axis")
    runs = [load_json(p) for p in sorted((saved_sweep / "runs").glob("*.json"))]
    for i, N in enumerate(g["Ns"]):
        for j, mu in enumerate(g["mus"]):
            losses = [r["test_loss"] for r in runs if r["N"] == N and r["mu_norm"] == mu and r["converged"]]
            # same numbers summed in the same order: exact up to one division, so 1e-15 relative
            assert g["mean_loss"][i, j] == pytest.approx(np.mean(losses), rel=1e-15)
            assert g["frac_benign"][i, j] == np.mean(np.array(losses) < 0.2)
    # cells are centred on their own SNR (the authors' curve sat one column off) (math 10.1)
    e = fig_heatmap._edges(g["snrs"])
    assert np.all((e[:-1] < g["snrs"]) & (g["snrs"] < e[1:]))
    assert g["snrs"][0] == pytest.approx(1 / (0.2 * 8), rel=1e-15)        # ‖μ‖=1: 1/(0.2·√64)


def test_reference_curve_is_the_authors_curve_on_their_axis():
    meta = Sweep.paper(backend="numpy").to_dict()
    # authors: red curve row = 204800/(col+1)² − 10 with N = (row+10)/5 and ‖μ‖ = col+1, i.e. N·‖μ‖² = 40960;
    # on their axis SNR = ‖μ‖/(0.2·√1024) = ‖μ‖/6.4 that is N·SNR² = 40960/6.4² (math 1.9, 10.1)
    assert fig_heatmap.reference_constant(meta, axis=True) == pytest.approx(40960 / 6.4 ** 2, rel=1e-12)
    assert fig_heatmap.reference_constant(meta, axis=False) == pytest.approx(40960 / (4 * 32) ** 2, rel=1e-12)


def test_non_converged_cells_are_counted_and_drawn(tmp_path):
    out = tmp_path / "sweep"
    run_sweep(tiny(steps=3), out, workers=0, progress=False)     # 3 steps: most runs stop before loss < 0.01
    from refvit.io import read_columns as load_table
    t = load_table(out / "table.csv")
    g = fig_heatmap.cell_grid(t, "snr_axis")
    assert g["n_conv"].sum() == t["converged"].sum() < g["n_runs"].sum() == len(t["N"])
    assert np.all(np.isnan(g["mean_loss"][g["n_conv"] == 0]))
    png = tmp_path / "f.png"
    assert fig_heatmap.main([str(out), "--out", str(png), "--dpi", "40"]) == 0 and _is_png(png)


def test_dynamics_script_runs_on_saved_runs(saved_dynamics, tmp_path):
    out = tmp_path / "fig3.png"
    assert fig_dynamics.main([str(saved_dynamics), "--out", str(out), "--k", "1", "--dpi", "40"]) == 0
    assert _is_png(out)
    meta, runs = fig_dynamics.load_runs(saved_dynamics)
    assert [len(runs[n]) for n, _ in meta["regimes"]] == [3, 3]
    r = runs["benign"][0]
    assert r["h_test_loss"].shape == r["h_train_loss"].shape == (41,) and np.all(np.isfinite(r["h_test_loss"]))
    assert r["summary"]["repeat"] == 0


def test_decomposed_coefficients_are_saved_and_consistent(saved_dynamics):
    _, runs = fig_dynamics.load_runs(saved_dynamics)
    for name in ("harmful", "benign"):
        for r in runs[name]:
            if "c_gamma_plus" not in r:
                pytest.fail("refvit.jiang2024.decompose is present but the dynamics runs carry no coefficients")
            # (math 7.7): with ℓ' < 0, γ₊ never decreases, γ₋ never increases, y_iρ_i never decreases
            assert np.all(np.diff(r["c_gamma_plus"]) >= 0) and np.all(np.diff(r["c_gamma_minus"]) <= 0)
            assert np.all(np.diff(r["c_y_rho"], axis=0) >= 0)
            if name == "benign":
                # V₊(t) − V₊(0) = γ₊(t) + Σ_u coef_u⟨μ₊, u⟩/‖u‖² over noise tokens u, small when γ₊ dominates
                # (isotropic noise is not exactly orthogonal to μ₊); sample 0 is a y = +1 sample
                dV = r["h_V_signal_s0"] - r["h_V_signal_s0"][0]
                assert np.corrcoef(dV, r["c_gamma_plus"])[0, 1] > 0.99


# --- the bands the figures draw: mean ± k·std over runs or samples, population std (ddof 0) ------------------------

def band_edges(collection, t) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of a fill_between band at the abscissae ``t``, read from the drawn polygon."""
    v = collection.get_paths()[0].vertices
    lo = np.array([v[v[:, 0] == x, 1].min() for x in t])
    hi = np.array([v[v[:, 0] == x, 1].max() for x in t])
    return lo, hi


def test_the_dynamics_band_is_mean_plus_minus_k_population_stds():
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(0)
    t = np.arange(6.0)
    Y = rng.normal(size=(4, 6)) + 3.0                   # 4 runs: ddof 1 would widen the band by √(4/3)
    Y[2, 3] = np.nan                                    # a run without a value at one step is left out there
    fig, ax = plt.subplots()
    fig_dynamics.band(ax, t, Y, 1.5, "x", "C0", log=False)
    mean = np.array([np.mean([y for y in Y[:, j] if y == y]) for j in range(6)])          # plain loops
    std = np.array([np.sqrt(np.mean([(y - mean[j]) ** 2 for y in Y[:, j] if y == y])) for j in range(6)])
    lo, hi = band_edges(ax.collections[0], t)
    # 1e-12: a mean and a std of ≤ 4 numbers in another summation order, then drawn as float64 vertices
    np.testing.assert_allclose(lo, mean - 1.5 * std, rtol=1e-12)
    np.testing.assert_allclose(hi, mean + 1.5 * std, rtol=1e-12)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), mean, rtol=1e-12)
    plt.close(fig)


def test_the_coefficient_figure_draws_attention_as_mean_plus_minus_the_population_std(tmp_path, monkeypatch):
    from refvit.analysis import fig_coefficients
    from refvit.io import save_npz
    rng = np.random.default_rng(1)
    T, N, M = 4, 5, 3                                   # N ≠ M: the "uniform 1/M" line must read the token axis
    abar = rng.dirichlet(np.ones(M), size=(T, N))       # (T, N, M)
    summary = {"setting": "figure1", "N": N, "mu_norm": 80.0, "N_snr2": 1.0, "steps": T - 1, "status": "max_steps",
               "train_w_O": False, "test_loss": 0.3, "residual_recovered": {}, "tracked_vs_recovered": {}}
    save_npz(tmp_path / "c.npz", summary=np.array(json.dumps(summary)), y=np.array([1.0, -1, 1, -1, 1]),
             recovered_rho=rng.normal(size=N), recovered_gamma_plus=np.float64(1.0),
             recovered_gamma_minus=np.float64(-1.0), train_loss=np.linspace(1, 0.5, T),
             h_gamma_plus=np.linspace(0, 1, T), h_gamma_minus=-np.linspace(0, 1, T), h_rho=rng.normal(size=(T, N)),
             h_abar=abar, h_Z2=rng.normal(size=(T, N, 2, 2)))
    drawn = []
    monkeypatch.setattr(fig_coefficients, "save_figure", lambda fig, out: drawn.append(fig) or out)
    fig_coefficients.draw(tmp_path / "c.npz", tmp_path / "c.png")
    ax = drawn[0].axes[3]
    t = np.arange(T)
    for j, coll in enumerate(ax.collections[:2]):       # signal token, noise token
        a = abar[:, :, j]
        mean = np.array([sum(a[s]) / N for s in range(T)])
        std = np.array([math.sqrt(sum((x - mean[s]) ** 2 for x in a[s]) / N) for s in range(T)])   # ddof 0
        lo, hi = band_edges(coll, t)
        # 1e-12: sums of 5 numbers in another order (~1e-16) against a ddof change of √(5/4) − 1 ≈ 12 %
        np.testing.assert_allclose(lo, mean - std, rtol=1e-12)
        np.testing.assert_allclose(hi, mean + std, rtol=1e-12)
    assert [ln.get_ydata()[0] for ln in ax.lines if ln.get_label() == "uniform 1/M"] == [1 / M]


def hand_table():
    """Runs of a 2 × 2 grid with every kind of run that does not count (not converged, non-finite test loss)."""
    runs = [  # N, ‖μ‖, converged, test loss, test error
        (2, 1, True, 0.10, 0.05), (2, 1, True, 0.30, 0.20), (2, 1, False, 0.01, 0.00), (2, 1, True, np.nan, 0.5),
        (2, 3, True, 0.15, 0.10), (2, 3, True, 0.25, 0.15), (2, 3, True, 0.05, 0.01),
        (4, 1, True, 0.40, 0.30), (4, 1, False, np.inf, 0.50),
        (4, 3, True, 0.02, 0.00), (4, 3, True, 0.19, 0.04), (4, 3, True, np.inf, 0.45)]
    cols = list(zip(*runs))
    t = {"N": np.array(cols[0]), "mu_norm": np.array(cols[1], dtype=float), "converged": np.array(cols[2]),
         "test_loss": np.array(cols[3]), "test_error": np.array(cols[4])}
    t["snr"] = t["mu_norm"] / 8.0
    t["N_snr2"] = t["N"] * t["snr"] ** 2
    return runs, t


def test_the_label_noise_error_grid_is_the_mean_test_error_of_the_counted_runs():
    from refvit.analysis import fig_labelnoise
    runs, t = hand_table()
    g = fig_heatmap.cell_grid(t, "snr")
    Z = fig_labelnoise.error_grid(t, g)
    want = [[np.mean([r[4] for r in runs if (r[0], r[1]) == (N, mu) and r[2] and math.isfinite(r[3])])
             for mu in (1, 3)] for N in (2, 4)]
    np.testing.assert_allclose(Z, want, rtol=1e-15)          # means of ≤ 3 decimals: one rounding each


def test_the_benign_curve_bins_the_counted_runs_by_hand():
    rng = np.random.default_rng(2)
    runs = [(int(N), float(mu), bool(rng.random() < 0.9), float(rng.choice([np.nan, rng.uniform(0, 0.4)], p=[.1, .9])))
            for N in (2, 4, 8, 16) for mu in range(1, 17) for _ in range(2)]          # 128 runs over 5 decades
    cols = list(zip(*runs))
    t = {"N": np.array(cols[0]), "converged": np.array(cols[2]), "test_loss": np.array(cols[3]),
         "N_snr2": np.array(cols[0]) * (np.array(cols[1]) / 8) ** 2}
    centre, frac, lo, hi, n = fig_sharpness.benign_curve(t)
    ok = [r for r in runs if r[2] and math.isfinite(r[3])]
    x = [math.log(r[0] * (r[1] / 8) ** 2) for r in ok]
    width = max(fig_sharpness.BIN_MIN, (max(x) - min(x)) * fig_sharpness.RUNS_PER_BIN / len(x))
    bins = {}
    for xi, r in zip(x, ok):                                 # floor(x / width): bins of equal width in log(N·SNR²)
        bins.setdefault(math.floor(xi / width), []).append((xi, r[3] < 0.2))
    keys = sorted(bins)
    assert list(n) == [len(bins[k]) for k in keys] and sum(n) == len(ok) and len(keys) >= 4 and len(ok) < len(runs)
    assert list(frac) == [sum(b for _, b in bins[k]) / len(bins[k]) for k in keys]
    # the centre is exp of the mean log (a geometric mean); 1e-14: a mean of ≤ 8 logs, then exp, in another order
    np.testing.assert_allclose(centre, [math.exp(statistics.fmean(xi for xi, _ in bins[k])) for k in keys],
                               rtol=1e-14)
    want = [fig_sharpness.wilson(np.array([sum(b for _, b in bins[k])]), np.array([len(bins[k])])) for k in keys]
    np.testing.assert_allclose(np.column_stack([lo, hi]), np.array(want)[:, :, 0], rtol=1e-15)


def _labelled(fig, skip=()):
    """Axes of ``fig`` (but those in ``skip``) lacking an x or y label."""
    return [(i, ax.get_title()) for i, ax in enumerate(fig.get_axes())
            if i not in skip and not (ax.get_xlabel() and ax.get_ylabel())]


def test_demo_figure_labels_both_axes_and_draws_the_saved_histories(tmp_path, monkeypatch):
    from refvit.analysis import fig_demo
    from refvit.jiang2024.experiment import run_cell
    from refvit.results import save_history
    from .drawn import capture, close
    data = DataConfig(N=4, M=3, d=64, sigma_p=1.0, sigma_w=0.05, n_test=20)
    for name, mu in (("benign", 8.0), ("harmful", 1.0)):
        run = run_cell(data.replace(mu_norm=mu), ModelConfig(d_h=8, d_v=8, init_scale=1.0),
                       TrainConfig(lr=0.5, steps=30, loss_threshold=0.01, backend="numpy"), seed=0)
        save_history(tmp_path / f"demo_{name}.npz", run.history, run.summary)
    figs = capture(monkeypatch, fig_demo)
    fig_demo.demo_figure(tmp_path, "unused.png")
    (fig,) = figs
    assert not _labelled(fig)
    for row, name in enumerate(("benign", "harmful")):
        saved = np.load(tmp_path / f"demo_{name}.npz")
        x, y = fig.get_axes()[2 * row].get_lines()[0].get_data()
        assert np.array_equal(y, saved["h_train_loss"]) and np.array_equal(x, saved["step"])
        loss_ax, attention_ax = fig.get_axes()[2 * row: 2 * row + 2]
        assert "loss" in loss_ax.get_ylabel() and "attention" in attention_ax.get_ylabel()
    close(figs)


def test_coefficient_figure_labels_its_axes_and_the_histogram_counts_samples(tmp_path, monkeypatch):
    from refvit.analysis import fig_coefficients
    from refvit.jiang2024.coefficients import train_and_save
    from .drawn import capture, close
    path = train_and_save(tmp_path / "c.npz", "figure1", N=6, mu=80.0, steps=4)
    figs = capture(monkeypatch, fig_coefficients)
    fig_coefficients.draw(path, "unused.png")
    (fig,) = figs
    assert not _labelled(fig)
    hist = fig.get_axes()[2]
    assert hist.get_ylabel() == "number of training samples"
    assert sum(p.get_height() for p in hist.patches) == 6          # every one of the N = 6 samples, once
    close(figs)
