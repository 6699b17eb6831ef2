"""Training the first setting from Python: ``refvit.train(params, X, y, ...)`` checks its inputs once, builds the
objective of ``TrainConfig.coords`` (dense weights, or exact token coordinates, docs/math.md §8) and runs the shared
loop of ``refvit.trainer``."""
from __future__ import annotations

from ..config import TrainConfig
from .model import Params, check_batch, check_inputs
from .span import SpanObjective
from ..trainer import History, Objective, run
from .objective import DenseObjective


def train(params, X, y, *, X_test=None, y_test=None, config: TrainConfig | None = None, progress: bool = False,
          **options) -> tuple[Params, History]:
    """Train from ``params`` on (X (N, M, d), y (N,)) with full-batch updates.

    Give either ``config=TrainConfig(...)`` or its fields as keywords, e.g.
    ``train(p, X, y, lr=0.1, steps=1000, optimizer="gd", train_w_O=False, loss_threshold=0.01)``.
    With a test set (X_test, y_test) the final test loss is reported and, with ``eval_every=k``, recorded every k
    steps. Returns (final Params, History). A non-finite loss stops training with ``history.status == "diverged"``.
    """
    config = TrainConfig.given(config, options)
    return run(make_objective(config, params, X, y, X_test, y_test), config, progress)


def check_train_inputs(params, X, y, X_test=None, y_test=None):
    """Validate a training set and an optional test set once; returns float64 (params, X, y, X_test, y_test)."""
    params, X, y = check_inputs(params, X, y)
    if (X_test is None) != (y_test is None):
        raise ValueError("give both X_test and y_test, or neither")
    if X_test is not None:
        X_test, y_test = check_batch(X_test, params.W_Q.shape[0], y_test)   # the params are checked already
        if X_test.shape[1] != X.shape[1]:
            raise ValueError(f"X_test has M={X_test.shape[1]} tokens but X has M={X.shape[1]}")
    return params, X, y, X_test, y_test


def make_objective(config: TrainConfig, params, X, y, X_test=None, y_test=None, basis: str = "auto") -> Objective:
    """Check the inputs and build the objective of ``config.coords`` with the attention core ``config.backend``:
    ``SpanObjective`` (token basis ``basis``) for "span", else ``DenseObjective``."""
    params, X, y, X_test, y_test = check_train_inputs(params, X, y, X_test, y_test)
    if config.coords == "span":
        return SpanObjective(params, X, y, X_test, y_test, core=config.backend, basis=basis,
                             grad_w_O=config.train_w_O)
    return DenseObjective(params, X, y, X_test, y_test, config.backend)
