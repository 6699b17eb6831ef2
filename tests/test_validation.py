"""Bad input raises a ValueError that says what to change."""
import numpy as np
import pytest

from refvit import DataConfig, ModelConfig, Params, TrainConfig, forward, loss_and_grads, train
from refvit.jiang2024.data import sample


def ok():
    rng = np.random.default_rng(0)
    return (Params(rng.standard_normal((6, 3)), rng.standard_normal((6, 3)), rng.standard_normal((6, 2)),
                   rng.standard_normal(2)), rng.standard_normal((4, 3, 6)), np.array([1.0, -1.0, 1.0, -1.0]))


def with_nan(a):
    a = a.copy()
    a.flat[0] = np.nan
    return a


BAD_CALLS = {
    "W_K shape": (lambda p, X, y: loss_and_grads(p._replace(W_K=p.W_K[:, :2]), X, y), "W_K must have the shape"),
    "w_O shape": (lambda p, X, y: loss_and_grads(p._replace(w_O=np.ones(3)), X, y), r"w_O must have shape"),
    "W_V rows": (lambda p, X, y: loss_and_grads(p._replace(W_V=np.ones((5, 2))), X, y), "W_V must have 6 rows"),
    "X token dim": (lambda p, X, y: forward(p, X[:, :, :5]), "token dimension 5"),
    "X ndim": (lambda p, X, y: forward(p, X[0]), "X must have 3 dimensions"),
    "X NaN": (lambda p, X, y: forward(p, with_nan(X)), "X contains NaN"),
    "param inf": (lambda p, X, y: forward(p._replace(W_Q=with_nan(p.W_Q) * 0 + np.inf), X), "W_Q contains NaN or inf"),
    "complex X": (lambda p, X, y: forward(p, X.astype(complex)), "real numeric"),
    "labels": (lambda p, X, y: loss_and_grads(p, X, np.array([1.0, 0.0, 1.0, -1.0])), r"\+1 or -1"),
    "labels shape": (lambda p, X, y: loss_and_grads(p, X, y[:3]), r"y must have shape"),
    "empty X": (lambda p, X, y: forward(p, X[:0]), "empty dimension"),
    "params count": (lambda p, X, y: forward(p[:3], X), r"\(W_Q, W_K, W_V, w_O\)"),
    "lr <= 0": (lambda p, X, y: train(p, X, y, lr=0.0, steps=3), "lr must be a finite positive"),
    "lr nan": (lambda p, X, y: train(p, X, y, lr=float("nan"), steps=3), "lr must be a finite positive"),
    "steps <= 0": (lambda p, X, y: train(p, X, y, lr=0.1, steps=0), "steps must be a positive integer"),
    "missing lr": (lambda p, X, y: train(p, X, y, steps=3), "needs lr"),
    "unknown option": (lambda p, X, y: train(p, X, y, lr=0.1, steps=3, momentum=0.9), r"unknown TrainConfig option"),
    "unknown optimizer": (lambda p, X, y: train(p, X, y, lr=0.1, steps=3, optimizer="sgd"), "unknown optimizer"),
    "span with adam": (lambda p, X, y: train(p, X, y, lr=0.1, steps=3, optimizer="adam", coords="span"),
                       "leave the span"),
    "half test set": (lambda p, X, y: train(p, X, y, lr=0.1, steps=3, X_test=X), "both X_test and y_test"),
    "bad backend": (lambda p, X, y: forward(p, X, backend="gpu"), "unknown backend"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_call_raises_helpful_error(case):
    call, message = BAD_CALLS[case]
    with pytest.raises(ValueError, match=message):
        call(*ok())


@pytest.mark.parametrize("kwargs, message", [
    (dict(N=0), "N must be a positive integer"),
    (dict(N=5), "even N"),
    (dict(n_test=7), "even n_test"),
    (dict(M=1), "M must be >= 2"),
    (dict(d=-3), "d must be a positive integer"),
    (dict(mu_norm=0.0), "mu_norm must be a finite positive"),
    (dict(sigma_p=float("inf")), "sigma_p must be a finite positive"),
    (dict(other_tokens="uniform"), "unknown other_tokens"),
    (dict(labels="random"), "unknown labels"),
    (dict(flip_rate=0.7), r"flip_rate must be in \[0, 0.5\)"),
    (dict(N=2.5), "N must be a positive integer"),
])
def test_data_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kwargs)


def test_other_config_validation():
    with pytest.raises(ValueError, match="d_h must be a positive integer"):
        ModelConfig(d_h=0)
    with pytest.raises(ValueError, match="unknown init"):
        ModelConfig(init="xavier")
    with pytest.raises(ValueError, match="unknown DataConfig option"):
        DataConfig.from_dict({"N": 4, "snr": 3})
    with pytest.raises(ValueError, match="adam_betas"):
        TrainConfig(adam_betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="must be orthogonal"):
        sample(DataConfig(d=4, mu_norm=1.0), 2, np.random.default_rng(0),
               signals=(np.array([1.0, 0, 0, 0]), np.array([0.6, 0.8, 0, 0])))
    with pytest.raises(ValueError, match="norm mu_norm"):
        sample(DataConfig(d=4, mu_norm=2.0), 2, np.random.default_rng(0),
               signals=(np.array([1.0, 0, 0, 0]), np.array([0, 1.0, 0, 0])))


def test_cli_reports_bad_settings_without_traceback(capsys):
    from refvit.cli import main
    with pytest.raises(SystemExit) as stop:       # refused while parsing, before any work starts
        main(["demo", "--backend", "numpy", "--seed", "-1", "--results", "/tmp/refvit_bad"])
    assert stop.value.code == 2
    assert "--seed: expected a number >= 0" in capsys.readouterr().err


def test_all_finite_is_exact_where_the_sum_overflows():
    """``all_finite`` reads the sum first: a NaN or ±inf entry anywhere must give False (also +inf beside -inf, whose
    sum is NaN), and finite entries whose sum overflows must still give True (the entry-by-entry fallback)."""
    from refvit.primitives import all_finite
    big = np.full((3, 4), 1e308)                 # finite, but the sum is inf
    assert all_finite(big) and all_finite(-big)
    for bad in (np.nan, np.inf, -np.inf):
        a = big.copy()
        a[2, 3] = bad
        assert not all_finite(a), bad
    a = np.zeros(5)
    a[1], a[3] = np.inf, -np.inf
    assert not all_finite(a)
    with pytest.raises(ValueError, match="NaN or inf"):
        train(Params(*[np.full(s, v) for s, v in (((4, 2), 1e308), ((4, 2), 1.0), ((4, 2), 1.0), ((2,), np.nan))]),
              np.ones((2, 3, 4)), np.array([1.0, -1.0]), lr=0.1, steps=1)
