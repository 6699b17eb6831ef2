"""fit_threshold: the 50 % point of P(good | x) = σ(β₀ + β₁ log x), checked against an independent Newton fit, a hand
bootstrap on the same stream, the separable bracket, and refused inputs."""
import numpy as np
import pytest

from refvit.fit import fit_threshold
from tests.problems import newton_logistic


def labelled(rng, n=400, x_star=0.3, k=4.0):
    """Labels drawn from P(good) = σ(k (log x − log x*)) on x log-uniform over [0.05, 2]."""
    x = np.exp(rng.uniform(np.log(0.05), np.log(2.0), size=n))
    p = 1 / (1 + np.exp(-k * (np.log(x) - np.log(x_star))))
    return x, (rng.uniform(size=n) < p).astype(float)


def test_the_threshold_is_the_independent_maximum_likelihood_estimate():
    x, b = labelled(np.random.default_rng(1))
    w = newton_logistic(np.log(x)[:, None], b)
    got = fit_threshold(x, b, np.random.default_rng(0), n_boot=0)
    # 1e-9 relative: two Newton solvers of one strictly convex problem, both iterated to a step below ~1e-13
    assert got["threshold"] == pytest.approx(np.exp(-w[0] / w[1]), rel=1e-9)
    assert got["ci_threshold"] is None and not got["separable"]
    assert (got["n"], got["n_benign"]) == (400, int(b.sum()))


def test_the_threshold_recovers_the_law_it_was_drawn_from():
    x, b = labelled(np.random.default_rng(2), n=4000, x_star=0.3)
    got = fit_threshold(x, b, np.random.default_rng(0), n_boot=0)
    # 4000 draws with slope 4 in log x: the MLE of log x* has a standard error ≈ 0.03, so 15 % is ~5 sigma
    assert got["threshold"] == pytest.approx(0.3, rel=0.15)


def test_the_interval_is_the_percentile_bootstrap_on_the_same_stream():
    """A hand bootstrap: the same resamples (one rng.integers call each), the MLE on each, the 5 % and 95 % points."""
    x, b = labelled(np.random.default_rng(3), n=200)
    got = fit_threshold(x, b, np.random.default_rng(7), n_boot=50, level=0.9)
    rng, boots = np.random.default_rng(7), []
    for _ in range(50):
        idx = rng.integers(0, len(b), size=len(b))
        w = newton_logistic(np.log(x[idx])[:, None], b[idx])
        boots.append(np.exp(-w[0] / w[1]))
    lo, hi = np.quantile(boots, [0.05, 0.95])
    assert got["n_boot_no_estimate"] == 0
    # 1e-8 relative: the same resamples, two Newton solvers (each converged to ~1e-13 in β)
    assert got["ci_threshold"] == pytest.approx([lo, hi], rel=1e-8)
    assert lo < got["threshold"] < hi


def test_separable_labels_give_the_bracket_not_a_number():
    got = fit_threshold(np.array([0.1, 0.2, 0.4, 0.8]), np.array([0, 0, 1, 1]), np.random.default_rng(0), n_boot=5)
    assert got["separable"] and got["threshold"] is None and got["bracket"] == [0.2, 0.4]
    # quasi-separable: fails below 0.4, generalizes above, both at 0.4 — the bracket is that one value
    quasi = fit_threshold(np.array([0.1, 0.4, 0.4, 0.8]), np.array([0, 0, 1, 1]), np.random.default_rng(0), n_boot=5)
    assert quasi["separable"] and quasi["bracket"] == [0.4, 0.4] and "quasi" in quasi["message"]
    # separable the other way (good at small x): no bracket of the kind the threshold means
    other = fit_threshold(np.array([0.1, 0.2, 0.4, 0.8]), np.array([1, 1, 0, 0]), np.random.default_rng(0), n_boot=5)
    assert other["separable"] and other["bracket"] is None and "other way" in other["message"]
    one = fit_threshold(np.array([0.1, 0.2]), np.array([1, 1]), np.random.default_rng(0), n_boot=5)
    assert one["threshold"] is None and "one class" in one["message"]


@pytest.mark.parametrize("x, b", [([0.1, np.nan], [0, 1]), ([0.1, np.inf], [0, 1]), ([0.1, -1.0], [0, 1]),
                                  ([0.1, 0.2], [0, 2]), ([[0.1, 0.2]], [[0, 1]])])
def test_bad_input_is_refused_in_one_line(x, b):
    with pytest.raises(ValueError, match="must be finite and positive"):
        fit_threshold(np.array(x), np.array(b), np.random.default_rng(0))


def test_a_resample_whose_statistic_is_not_finite_counts_as_no_estimate():
    """A bootstrap value of inf or NaN (a slope of 0 puts the threshold at infinity) never enters an interval."""
    from refvit.fit import _bootstrap
    x, b = labelled(np.random.default_rng(4), n=200)
    F = np.log(x)[:, None]
    calls = iter(range(10 ** 6))
    boots, none = _bootstrap(F, b, np.random.default_rng(0), 20, "mle",
                             lambda beta: np.inf if next(calls) % 2 else float(beta[1]))
    assert len(boots) == 10 and none == 10 and np.all(np.isfinite(boots))


def test_labels_that_do_not_depend_on_x_give_no_threshold():
    """Half good at every x, in the same pattern: the fitted slope is 0 and no threshold (inf or 0) is reported."""
    x = np.repeat([0.1, 0.2, 0.4, 0.8], 4)
    b = np.tile([0.0, 1.0, 0.0, 1.0], 4)
    got = fit_threshold(x, b, np.random.default_rng(0), n_boot=20)
    assert got["threshold"] is None and "slope" in got["message"]
