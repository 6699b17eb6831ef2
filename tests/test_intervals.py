"""Every reported interval against a hand bootstrap on the same stream, at a level other than the default, with its
ends in the reported order; and the tables that copy an interval copy its ends to the right columns.

The hand bootstraps draw the resamples as the code documents (one ``rng.integers(0, n, n)`` per resample, in
order) and refit each one by a second code path (plain Newton, the normal equations, ``statistics.median``), so a
wrong quantile level, a swapped pair of ends or a refit of the wrong data shows as a different number.
"""
import math
import statistics

import numpy as np
import pytest

from refvit.fit import WIDTH_LOG, fit_width
from refvit.jiang2024.studies.phases import median_ci, power_fit
from refvit.jiang2024.studies.sharpness import condition_row
from refvit.magen2025.tables import threshold_row

from .problems import newton_logistic


def transition(rng, n=300, k=3.0, x_star=0.4):
    """x log-uniform over [0.05, 3], labels from P(good) = σ(k (log x − log x*)): overlapping, never separable."""
    x = np.exp(rng.uniform(np.log(0.05), np.log(3.0), size=n))
    return x, (rng.random(n) < 1 / (1 + np.exp(-k * (np.log(x) - np.log(x_star))))).astype(float)


def hand_bootstrap(x, b, seed, n_boot, statistic):
    """``statistic`` of the plain-Newton fit on log x of each resample of the same stream."""
    rng, out = np.random.default_rng(seed), []
    for _ in range(n_boot):
        idx = rng.integers(0, len(b), size=len(b))
        out.append(statistic(newton_logistic(np.log(x[idx])[:, None], b[idx])))
    return np.array(out)


def test_the_width_interval_is_the_percentile_bootstrap_at_the_level_asked():
    x, b = transition(np.random.default_rng(0))
    got = fit_width(x, b, np.random.default_rng(5), n_boot=60, level=0.8)
    assert got["n_boot_no_estimate"] == 0 and not got["separable"]          # every resample used: sets correspond
    boots = hand_bootstrap(x, b, 5, 60, lambda w: 2 * WIDTH_LOG / w[1])     # 4 ln 9 / β (math 12.4)
    lo, hi = np.quantile(boots, [0.1, 0.9])                                 # level 0.8: the 10 % and 90 % points
    # 1e-8 relative: the same resamples, two Newton solvers each converged to ~1e-13 in β; another level (0.95
    # gives the 2.5 % and 97.5 % points) moves the ends by several per cent here
    assert got["ci_width"] == pytest.approx([lo, hi], rel=1e-8)
    assert got["width"] == pytest.approx(2 * WIDTH_LOG / newton_logistic(np.log(x)[:, None], b)[1], rel=1e-8)
    assert lo < hi


def test_the_median_interval_is_the_percentile_bootstrap_of_medians_at_the_level_asked():
    rng = np.random.default_rng(3)
    x = np.exp(rng.normal(size=15))
    m, lo, hi = median_ci(x, np.random.default_rng(9), 200, level=0.8)
    draw = np.random.default_rng(9)
    idx = draw.integers(0, len(x), size=(200, len(x)))                      # the documented draw: one (B, n) array
    boots = [statistics.median(x[row]) for row in idx]
    # exact: medians of the same numbers (a middle element or the mean of two), and numpy's quantile of the same set
    assert m == statistics.median(x)
    assert (lo, hi) == tuple(np.quantile(boots, [0.1, 0.9]))
    assert lo < m < hi and (lo, hi) != tuple(np.quantile(boots, [0.025, 0.975]))   # the level matters here


def test_the_power_law_intervals_are_the_bootstrap_of_least_squares_refits():
    rng = np.random.default_rng(4)
    n = 30
    rows = [{"N_snr2": float(a), "lr": float(e), "mu_norm": float(m),
             "len1": float(2.0 * a ** 0.5 * e ** -1.0 * m ** 0.3 * math.exp(0.2 * rng.normal()))}
            for a, e, m in zip(rng.uniform(0.2, 8, n), rng.choice([0.005, 0.01, 0.02], n), rng.uniform(5, 60, n))]
    fit = power_fit(rows, "len1", np.random.default_rng(2), n_boot=50)
    A = np.column_stack([np.ones(n), *(np.log([r[k] for r in rows]) for k in ("N_snr2", "lr", "mu_norm"))])
    y = np.log([r["len1"] for r in rows])

    def normal_equations(idx):
        return np.linalg.solve(A[idx].T @ A[idx], A[idx].T @ y[idx])[1:]

    draw = np.random.default_rng(2)
    boots = np.array([normal_equations(draw.integers(0, n, size=n)) for _ in range(50)])
    est = normal_equations(np.arange(n))
    for j, k in enumerate(("N_snr2", "lr", "mu_norm")):
        lo, hi = np.quantile(boots[:, j], [0.025, 0.975])
        # 1e-9: least squares by two solvers (QR-based lstsq, normal equations) on a design of condition ~1e2,
        # so ~1e-12 apart; a wrong quantile or a swapped end moves these by ≥ 1e-3
        assert fit[f"p_{k}"] == pytest.approx(est[j], rel=1e-9)
        assert (fit[f"p_{k}_lo"], fit[f"p_{k}_hi"]) == pytest.approx((lo, hi), rel=1e-9)
        assert lo < hi


@pytest.mark.parametrize("edge", ["lower", "upper"])
def test_an_edge_threshold_and_its_interval_are_mapped_back_in_order(edge):
    """The upper edge fits good on 1/x (so that good rises with its argument) and maps the threshold and both ends
    back by 1/·, which reverses their order: lo = 1/(upper end on 1/x), hi = 1/(lower end)."""
    x, b = transition(np.random.default_rng(1), n=200)
    if edge == "upper":
        x = 1.0 / x                                  # good falls with x: the upper edge of a benign band
    row = threshold_row(x, b, edge, np.random.default_rng(6), 40)
    arg = 1.0 / x if edge == "upper" else x
    w = newton_logistic(np.log(arg)[:, None], b)
    t = math.exp(-w[0] / w[1])
    q_lo, q_hi = np.quantile(hand_bootstrap(arg, b, 6, 40, lambda c: math.exp(-c[0] / c[1])), [0.025, 0.975])
    want = (1 / t, 1 / q_hi, 1 / q_lo) if edge == "upper" else (t, q_lo, q_hi)
    # 1e-8 relative: the same resamples, two Newton solvers (each converged to ~1e-13 in β)
    assert (row["threshold"], row["lo"], row["hi"]) == pytest.approx(want, rel=1e-8)
    assert row["lo"] < row["hi"] and not row["separable"] and row["n_runs"] == 200


def test_a_condition_row_copies_each_interval_end_to_its_column():
    fit = {"a": 2.1, "C": 2.6, "n_benign": 7, "separable": False, "method": "mle", "width_log_snr": 0.7,
           "mu_ratio_10_90": 2.0, "excluded": {"max_steps": 2}, "ci_a": [1.1, 3.1], "ci_C": [1.2, 3.2],
           "ci_width_log_snr": [0.3, 1.3]}
    cond = {"folder": "d64", "d": 64, "variant": "authors", "lr": 0.1, "max_step": 0.5}
    row = condition_row(cond, [{"converged": True}] * 5 + [{"converged": False}] * 2, fit)
    assert (row["a_lo"], row["a"], row["a_hi"]) == (1.1, 2.1, 3.1)
    assert (row["C_lo"], row["C"], row["C_hi"]) == (1.2, 2.6, 3.2)
    # the width in log(N·SNR²) is twice the width in log SNR (math 12.4)
    assert (row["width_lo"], row["width"], row["width_hi"]) == (0.6, 1.4, 2.6)
    assert (row["n_runs"], row["n_converged"], row["excluded"]) == (7, 5, "max_steps=2")


def test_the_fit_line_prints_each_number_and_interval_in_its_place():
    from refvit.fit import describe
    fit = {"method": "mle", "a": 2.125, "ci_a": [1.5, 2.75], "C": 2.5, "ci_C": [1.25, 5.0], "C_axis": 1000.0,
           "ci_C_axis": [300.0, 4000.0], "mu_ratio_10_90": 1.5, "ci_width_log_snr": [math.log(1.25), math.log(2.0)],
           "n_boot": 200, "level": 0.9, "n": 40, "n_benign": 13, "excluded": {"max_steps": 3, "diverged": 1},
           "n_boot_no_estimate": 2}
    assert describe(fit) == (
        "fitted boundary (mle) N*SNR^a = C: a = 2.125 [1.500, 2.750], C = 2.5 [1.25, 5] "
        "(SNR = |mu|/(sigma_p sqrt d)); axis convention C_axis = 1000 [300, 4000]; "
        "transition 10%-90% benign: |mu|_90/|mu|_10 = 1.5 [1.25, 2]; 90% bootstrap CIs, 40 runs, 13 benign; "
        "excluded: 1 diverged, 3 max_steps; 2 of 200 resamples had no estimate")


def test_the_sweep_fit_uses_the_level_seed_and_resamples_it_is_given():
    """``refvit fit --level --seed --n-boot`` reach the bootstrap: the sweep fit equals the estimator (checked by hand
    in tests/test_reported.py) called on the counted runs with the fit's documented stream [seed, 0xF17]."""
    from refvit.fit import fit_boundary
    from refvit.jiang2024.boundary import fit_columns
    from refvit.results import COLUMNS
    from .problems import table_row
    rng = np.random.default_rng(0)
    rows = []
    for N in (2, 4, 8, 16):
        for mu in (1, 2, 4, 8):
            for r in range(3):
                benign = rng.random() < 1 / (1 + math.exp(-(math.log(N) + 2 * math.log(mu / 4))))
                rows.append(table_row(N=N, mu_norm=float(mu), repeat=r, snr=mu / 8, test_loss=0.1 if benign else 0.5))
    t = {k: np.array([r[k] for r in rows]) for k in COLUMNS}
    d = {"sigma_p": 1.0, "snr_axis_sigma": 0.25, "d": 64}
    got = fit_columns(t, d, n_boot=40, seed=3, level=0.8)
    want = fit_boundary(t["N"], t["snr"], t["test_loss"] < 0.2, np.random.default_rng([3, 0xF17]), n_boot=40,
                        level=0.8, sigma_ratio=4.0)
    assert got["level"] == 0.8 and got["n_boot"] == 40 and got["seed"] == 3
    for k in ("ci_a", "ci_C", "ci_width_log_snr", "ci_C_axis"):
        assert got[k] == want[k], k                     # the same computation on the same draws: exact
    assert got["ci_a"] != fit_columns(t, d, n_boot=40, seed=3)["ci_a"]      # not vacuous: 0.95 differs
    assert got["ci_a"] != fit_columns(t, d, n_boot=40, seed=4, level=0.8)["ci_a"]   # nor is the seed ignored
