"""Every reported number recomputed independently: by hand on tiny cases, a closed form, or a second code path.

Nothing here calls the code that produced the number to check it: the run row is recomputed from the returned
weights with a forward pass written below (scipy's softmax), the table from the run files written by hand, the
bootstrap intervals from refits of our own (plain Newton on the unstandardized design) with the same Generator
draws, and the study statistics, cell aggregates and summary text from the statistics module and hand arithmetic.
"""
import csv
import math
import random
import statistics

import numpy as np
import pytest
from scipy.special import expit, softmax

from refvit.analysis.fig_heatmap import cell_grid
from refvit.analysis.summaries import label_noise_summary, reproduce_summary
from refvit.jiang2024.config import DataConfig, ModelConfig
from refvit.config import TrainConfig
from refvit.jiang2024.experiment import cell_key, run_cell
from refvit.fit import fit_boundary
from refvit.io import save_csv, save_json
from refvit.results import sweep_run_file
from refvit.jiang2024.studies.common import group_stats
from refvit.jiang2024.sweep import Sweep, run_one, write_table

from .problems import newton_logistic, table_row

# the table's column order, written out here (not imported) so that a reordered or missing column fails
EXPECTED_COLUMNS = ["N", "mu_norm", "repeat", "seed", "snr", "snr_axis", "N_snr2", "N_snr_axis2", "steps", "status",
                    "converged", "train_loss", "test_loss", "test_error", "attn_signal", "attn_noise", "seconds",
                    "cpu_seconds"]


def ref_forward(params, X):
    """f (n,) and ā (n, M) of docs/math.md (2.7), written independently of refvit.jiang2024.model."""
    W_Q, W_K, W_V, w_O = params
    Z = np.einsum("nle,nje->nlj", X @ W_Q, X @ W_K)          # z_lj = x_lᵀ W_Q W_Kᵀ x_j  (math 2.3)
    abar = softmax(Z, axis=-1).mean(axis=1)                   # ā_j  (math 2.4, 2.5)
    return np.einsum("nj,nj->n", abar, X @ (W_V @ w_O)), abar  # f = Σ_j ā_j v_j  (math 2.6)


def ref_loss(f, y):
    return float(np.mean(np.log1p(np.exp(-y * f))))          # ℓ(z) = log(1 + e^{-z}) (math 3.1, 3.3), |z| small here


# ---------------------------------------------------------------------------------------------------------------
# 1. the run row
# ---------------------------------------------------------------------------------------------------------------

def test_run_row_quantities_recomputed_from_the_returned_weights():
    # snr_axis_sigma = 0.37 differs from σ_p, σ_w and the 0.2 default, so any of them used instead is caught
    data = DataConfig(N=4, M=3, d=16, mu_norm=1.0, sigma_p=1.0, sigma_w=0.1, n_test=40, snr_axis_sigma=0.37)
    model = ModelConfig(d_h=4, d_v=4, init_scale=1.0)
    train = TrainConfig(lr=0.5, steps=40, backend="numpy")
    key = cell_key(data.N, data.mu_norm, 2)
    run = run_cell(data, model, train, seed=3, key=key)
    row = run_one(data, model, train, seed=3, repeat=2)
    d = run.data
    f_test, _ = ref_forward(run.params, d.X_test)
    f_train, abar = ref_forward(run.params, d.X)
    err = np.mean(np.sign(f_test) != d.y_test)                # fraction of wrong signs (math 3.4)
    assert 0 < err < 0.5, "the case must have some errors, and not half, so that accuracy = 1 − error differs"
    # 1e-12: a forward of ≤ 40 samples × 3 tokens in another summation order; rounding is ~1e-15 relative, while
    # any wrong quantity (accuracy, another sample set, another iterate) differs at the 1e-2 level or more
    close = dict(rel=1e-12, abs=1e-14)
    assert row["test_error"] == err                           # a ratio of small integers: exact
    assert row["test_loss"] == pytest.approx(ref_loss(f_test, d.y_test), **close)
    assert row["train_loss"] == pytest.approx(ref_loss(f_train, d.y), **close)
    assert row["attn_signal"] == pytest.approx(abar[:, 0].mean(), **close)
    assert row["attn_noise"] == pytest.approx(abar[:, 1].mean(), **close)
    # closed forms of docs/math.md (1.6)–(1.8); 1e-15: one or two roundings of a product of three numbers
    snr, snr_axis = 1.0 / (1.0 * 4.0), 1.0 / (0.37 * 4.0)
    assert row["snr"] == pytest.approx(snr, rel=1e-15)
    assert row["snr_axis"] == pytest.approx(snr_axis, rel=1e-15)
    assert row["N_snr2"] == pytest.approx(4 * snr**2, rel=1e-15)
    assert row["N_snr_axis2"] == pytest.approx(4 * snr_axis**2, rel=1e-15)
    assert (row["N"], row["mu_norm"], row["repeat"], row["seed"], row["steps"]) == (4, 1.0, 2, 3, 40)
    assert row["status"] == "max_steps" and row["converged"] is False
    assert list(row) == EXPECTED_COLUMNS


# ---------------------------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------------------------

def test_write_table_sorts_rows_numerically_with_the_documented_columns(tmp_path):
    sw = Sweep("t", Ns=(10, 2, 4), mu_norms=(20, 3), repeats=2, data=DataConfig(N=2, M=3, d=16, mu_norm=1.0),
               train=TrainConfig(lr=0.1, steps=2))
    specs = [(N, mu, r) for N in (10, 2, 4) for mu in (20, 3) for r in (1, 0)]
    random.Random(0).shuffle(specs)                           # written in a random order
    for k, (N, mu, r) in enumerate(specs):
        row = {c: float(k) + 0.25 for c in EXPECTED_COLUMNS}
        row.update(N=N, mu_norm=float(mu), repeat=r, seed=sw.seed, steps=k, status="converged", converged=True,
                   settings_hash=sw.settings_hash(), extra="dropped")
        save_json(tmp_path / "runs" / sweep_run_file(N, mu, r), row)
    write_table(sw, tmp_path)
    with open(tmp_path / "table.csv", newline="") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == EXPECTED_COLUMNS
    keys = [(int(a), float(b), int(c)) for a, b, c, *_ in lines[1:]]
    # numeric order (2 < 4 < 10 and 3 < 20, not text order), every cell once
    assert keys == [(N, float(mu), r) for N in (2, 4, 10) for mu in (3, 20) for r in (0, 1)]
    for line in lines[1:]:
        k = specs.index((int(line[0]), int(float(line[1])), int(line[2])))
        assert line[EXPECTED_COLUMNS.index("test_loss")] == repr(float(k) + 0.25)   # the run's own value


# ---------------------------------------------------------------------------------------------------------------
# the bootstrap intervals of the boundary fit
# ---------------------------------------------------------------------------------------------------------------

def relation(w):
    return w[2] / w[1], -w[0] / w[1], 2 * math.log(9) / w[2]   # a, log C, width (math 11.2)


def overlapping_boundary(n=160, seed=5):
    """Runs with a wide transition (slopes ~1), so no bootstrap resample is separable or one-class."""
    rng = np.random.default_rng(seed)
    N = rng.choice([2.0, 4.0, 8.0, 16.0, 32.0], size=n)
    snr = np.exp(rng.uniform(-2, 1, size=n))
    benign = rng.random(n) < expit(0.5 + 1.0 * np.log(N) + 2.0 * np.log(snr))
    return N, snr, benign.astype(float)


def test_bootstrap_intervals_are_quantiles_of_refits_on_the_same_draws():
    N, snr, b = overlapping_boundary()
    fit = fit_boundary(N, snr, b, np.random.default_rng(11), n_boot=150, level=0.9, sigma_ratio=20.0)
    assert fit["n_boot_used"] == 150 and fit["n_boot_no_estimate"] == 0   # every draw used: the sets correspond
    F = np.column_stack([np.log(N), np.log(snr)])
    rng = np.random.default_rng(11)
    boots = []
    for _ in range(150):                                      # the same draws: one integers(0, n, n) per resample
        idx = rng.integers(0, len(b), size=len(b))
        boots.append(relation(newton_logistic(F[idx], b[idx])))
    A = np.array(boots)
    q = [0.05, 0.95]                                          # level 0.9: the 5 % and 95 % quantiles
    # 1e-8: both Newton fits converge to ~1e-12 in β; a/logC/width are ratios of β entries with slopes O(1) and
    # a condition number ≤ 1e3 here, so they agree to ~1e-10; a wrong quantile moves the ends by ≥ 1e-2
    tol = dict(rel=1e-8)
    assert fit["a"] == pytest.approx(relation(newton_logistic(F, b))[0], **tol)
    assert fit["ci_a"] == pytest.approx(list(np.quantile(A[:, 0], q)), **tol)
    assert fit["ci_C"] == pytest.approx(list(np.exp(np.quantile(A[:, 1], q))), **tol)
    assert fit["ci_width_log_snr"] == pytest.approx(list(np.quantile(A[:, 2], q)), **tol)
    c_axis = np.exp(A[:, 1]) * 20.0 ** A[:, 0]                # C_axis = C·ratio^a per resample (math 11.3)
    assert fit["ci_C_axis"] == pytest.approx(list(np.quantile(c_axis, q)), **tol)


# ---------------------------------------------------------------------------------------------------------------
# study statistics, heatmap cells, summary text
# ---------------------------------------------------------------------------------------------------------------

def test_group_stats_uses_the_right_columns_of_converged_runs_only():
    rows = [
        {"converged": True, "steps": 10, "test_loss": 0.1, "test_error": 0.00},
        {"converged": True, "steps": 30, "test_loss": 0.4, "test_error": 0.25},
        {"converged": False, "steps": 1000, "test_loss": 9.0, "test_error": 0.90},
        {"converged": True, "steps": 20, "test_loss": 0.7, "test_error": 0.50},
        {"converged": True, "steps": 50, "test_loss": 1.6, "test_error": 0.75},
    ]
    conv = [r for r in rows if r["converged"]]
    s = group_stats(rows)
    col = lambda k: [r[k] for r in conv]                      # noqa: E731
    # 1e-14: means and standard deviations of four numbers, computed in another order (statistics uses exact sums)
    t = dict(rel=1e-14)
    assert (s["n_runs"], s["n_converged"]) == (5, 4)
    assert s["steps_median"] == statistics.median(col("steps")) == 25
    assert (s["steps_min"], s["steps_max"]) == (10, 50)
    assert s["test_loss_mean"] == pytest.approx(statistics.fmean(col("test_loss")), **t)
    assert s["test_loss_std"] == pytest.approx(statistics.pstdev(col("test_loss")), **t)   # population std (ddof 0)
    assert s["test_loss_median"] == pytest.approx(statistics.median(col("test_loss")), **t)
    assert s["test_error_mean"] == pytest.approx(0.375, **t)
    assert s["test_error_std"] == pytest.approx(statistics.pstdev(col("test_error")), **t)
    empty = group_stats([rows[2]])
    assert empty["n_converged"] == 0 and math.isnan(empty["test_loss_mean"]) and math.isnan(empty["steps_median"])


def test_cell_grid_means_and_benign_fractions_by_hand():
    nan = math.nan
    # (N, ‖μ‖, converged, test loss); the 0.2 run is harmful (benign is test loss < 0.2, strict)
    runs = [(2, 1, True, 0.1), (2, 1, True, 0.2), (2, 1, False, 0.05), (2, 1, True, 0.6),
            (2, 3, False, 0.01), (2, 3, False, 0.02),
            (4, 1, True, 0.15), (4, 1, True, nan),
            (4, 3, True, 0.05), (4, 3, True, 0.19)]
    table = {"N": np.array([r[0] for r in runs]), "mu_norm": np.array([float(r[1]) for r in runs]),
             "converged": np.array([r[2] for r in runs]), "test_loss": np.array([r[3] for r in runs]),
             "snr": np.array([r[1] / 8.0 for r in runs])}
    g = cell_grid(table, "snr")
    np.testing.assert_array_equal(g["Ns"], [2, 4])
    np.testing.assert_array_equal(g["snrs"], [1 / 8, 3 / 8])
    np.testing.assert_array_equal(g["n_runs"], [[4, 2], [2, 2]])
    np.testing.assert_array_equal(g["n_conv"], [[3, 0], [1, 2]])
    # 1e-15: means of two or three decimals, one rounding each
    np.testing.assert_allclose(g["mean_loss"], [[0.3, nan], [0.15, 0.12]], rtol=1e-15)
    np.testing.assert_array_equal(g["frac_benign"], [[1 / 3, nan], [1.0, 1.0]])


def test_reproduce_summary_numbers(tmp_path):
    save_json(tmp_path / "sweep.json", {"name": "tiny", "Ns": [2, 4, 8], "mu_norms": [1, 2], "repeats": 2, "seed": 7,
                                         "train": {"coords": "span", "backend": "numpy"}})
    rows = [table_row(N=N, converged=(N * mu + r) % 3 != 0) for N in (2, 4, 8) for mu in (1, 2) for r in (0, 1)]
    n_conv = sum(r["converged"] for r in rows)
    save_csv(tmp_path / "table.csv", rows, list(rows[0]))
    save_json(tmp_path / "fit.json", {"method": "mle", "a": 1.87654, "C": 2.345, "ci_a": [1.5, 2.25],
                                       "mu_ratio_10_90": 3.21, "level": 0.95, "n": 12, "n_benign": 5})
    text = reproduce_summary(tmp_path)
    assert "3 N x 2 |mu| x 2 seeds = 12 runs" in text and f"converged {n_conv}/12" in text and n_conv not in (0, 12)
    assert "base seed 7" in text and "a = 1.877 [1.500, 2.250]" in text and "C = 2.35" in text
    assert "12 runs, 5 benign" in text


def test_label_noise_summary_takes_each_number_from_its_column(tmp_path):
    save_json(tmp_path / "study.json", {"name": "q", "train": {"lr": 0.1, "steps": 500}, "Ns": [10], "mu_norms": [20],
                                         "repeats": 2, "benign_factor": 2.0, "boundary_N_snr2": 2.5})
    cols = ["flip_rate", "group", "n_runs", "n_converged", "steps_median", "test_loss_mean", "test_error_mean",
            "test_error_std"]
    save_csv(tmp_path / "summary.csv", [dict(zip(cols, (0.1, "benign", 6, 5, 123.0, 0.444, 0.111, 0.0222)))], cols)
    text = label_noise_summary(tmp_path)
    line = text.splitlines()[-1]
    assert "runs 5/6 converged" in line and "test 0-1 error 0.111 ± 0.0222" in line
    assert "test loss 0.444" in line and "steps median 123" in line and "p=0.1" in line
