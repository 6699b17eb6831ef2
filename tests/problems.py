"""Shared test helpers (imported by the test modules): the three regimes every gradient check runs in, a full
sweep-table row, an independent Newton fit of the logistic boundary, and ``wait_until`` for tests that wait on
another process."""
import time

import numpy as np
from scipy.special import expit

from refvit import DataConfig, ModelConfig, init_params, make_dataset, streams, train
from refvit.results import COLUMNS


def small_problem(init: str, sigma0: float = 1e-3, seed: int = 0):
    data_cfg = DataConfig(N=4, M=4, d=8, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3, n_test=2)
    rng = streams(seed)
    data = make_dataset(data_cfg, rng.data, rng.test)
    params = init_params(ModelConfig(d_h=4, d_v=3, init=init, init_scale=16.0, sigma0=sigma0), 8, rng.init)
    return params, data.X, data.y


def trained_problem():
    """A characteristic point after 50 GD steps from an O(1)-logit init (CS231n's 'after a short burn-in')."""
    params, X, y = small_problem("gaussian", sigma0=0.5)
    params, hist = train(params, X, y, lr=0.1, steps=50, backend="numpy")
    assert hist.steps == 50 and hist.status == "max_steps"
    return params, X, y


REGIMES = {
    "paper_tiny_init": lambda: small_problem("torch_uniform_scaled"),
    "O1_logits": lambda: small_problem("gaussian", sigma0=0.5),
    "after_50_steps": trained_problem,
}


def table_row(**values) -> dict:
    """A row of a sweep table with every column of ``refvit.results.COLUMNS``: the given values, and placeholders
    (zeros, status from ``converged``) for the columns a test does not look at."""
    row = {c: 0.0 for c in COLUMNS}
    row.update(N=2, repeat=0, seed=0, steps=1, converged=True)
    row.update(values)
    if "status" not in values:
        row["status"] = "converged" if row["converged"] else "max_steps"
    return {c: row[c] for c in COLUMNS}


def newton_logistic(F, b):
    """Maximum likelihood for logistic regression on (1, F) by plain Newton without standardization: a second code
    path to the fit's estimate (docs/math.md (11.4)), shared by the fit tests."""
    G = np.column_stack([np.ones(len(b)), F])
    w = np.zeros(G.shape[1])
    for _ in range(100):
        p = expit(G @ w)
        step = np.linalg.solve(G.T @ (G * (p * (1 - p))[:, None]), G.T @ (b - p))
        w += step
        if np.max(np.abs(step)) < 1e-13:
            break
    return w


PATIENCE = 300.0   # seconds: a bound for events that take well under a second on a quiet machine, generous enough
                   # for a busy one (2 cores shared with several jobs start Python and numpy in seconds, not 300)


def wait_until(condition, what: str, bound: float = PATIENCE, every: float = 0.05):
    """Poll ``condition()`` until it returns a true value (returned), or fail naming ``what`` after ``bound`` s.

    A test that measures a real-time outcome waits for the event itself, never for a fixed short time: on a busy
    machine anything can take seconds, and a race against a deadline of a few seconds fails at random.
    """
    deadline = time.monotonic() + bound
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {bound:g} s")
        time.sleep(every)
