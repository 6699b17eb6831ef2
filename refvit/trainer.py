"""Full-batch training (docs/math.md §6), shared by every setting: one loop, the update rules of
``refvit.optimizers`` (GD (6.1), SignGD (6.2), Adam (6.3)), the stop rules, and a per-step history.

What the loop trains is an ``Objective`` (the protocol below): a setting's model seen through one small interface. It
holds the training state as a NamedTuple of arrays (``Params`` for the first setting's dense weights,
``refvit.jiang2024.span.SpanState`` for its token coordinates, ``refvit.li2025.model.LiParams`` for the second
setting, ``refvit.magen2025.model.MagenParams`` or ``MagenQKParams`` for the third) and returns an ``Evaluation``: the
loss, the gradient with respect to that state (same type), the outputs f and the forward cache, from which the
objective's ``record`` computes the history row. The optimizer updates every field of the state except those the
objective names as frozen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from .config import TrainConfig, _positive_int
from .primitives import Evaluation, all_finite, mean_loss, merge_halves, overflow_scales
from .optimizers import Optimizer


@dataclass
class History:
    """Per-step record of a training run. ``values[key]`` is an array whose first axis has length ``len(step)``
    (scalars per row, or an array per row for the quantities a setting tracks per sample or per neuron).

    status: "converged" (the stopping rule's loss check fell below the threshold, ``TrainConfig.stop_rule``),
            "max_steps" (ran all steps), "diverged" (the loss or gradient became non-finite after updates from a
            finite start; training stopped there), "overflow" (the forward pass at the initial parameters, on
            finite inputs, is not finite: a scale too large for float64, named in ``message``) or "nonfinite_test"
            (trained, but the model is not finite on the test set; test loss and error are NaN, ``message`` names
            the scales).
    steps: number of updates taken; the history has a row per ``history_every`` steps (steps + 1 rows by default)
        and at the steps of ``history_per_decade``'s log grid, the last one at the returned parameters; ``step`` gives
        the step of each row.
    final_*: train loss, test loss and test 0-1 error at the returned parameters (NaN without a test set).
    """
    step: np.ndarray
    values: dict
    status: str
    steps: int
    final_train_loss: float
    final_test_loss: float
    final_test_error: float
    message: str = ""
    config: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.values[key]


class Objective(Protocol):
    """What ``run`` trains: one setting's model on one data set. ``state0`` is a NamedTuple of float64 arrays."""
    state0: tuple
    X: np.ndarray                    # (N, ...) training inputs
    y: np.ndarray                    # (N,) training labels
    X_test: np.ndarray | None        # (n_test, ...) or None
    y_test: np.ndarray | None        # (n_test,) or None
    history_keys: tuple              # the keys of ``record``'s rows, with "train_loss" and "test_loss"

    def value_and_grad(self, state) -> Evaluation:
        """Loss, gradient (same type as ``state``), f (N,) and the forward cache at ``state``."""

    def record(self, loss: float, f: np.ndarray, cache) -> dict:
        """One history row: {key: float or array} for every key of ``history_keys`` but "test_loss"."""

    def frozen(self, cfg: TrainConfig) -> set:
        """The names of the state fields the optimizer leaves unchanged."""

    def test_outputs(self, state) -> np.ndarray:
        """f on the test set, (n_test,)."""

    def test_overflow(self, state) -> str:
        """The scales that make the test outputs at ``state`` non-finite (for the "nonfinite_test" message)."""

    def params(self, state):
        """The setting's parameters (a NamedTuple) that ``state`` stands for."""

    # Optional: ``fresh_state()`` -> arrays equal to ``state0`` for the loop to update in place (``_fresh_state``).


def _all_finite(arrays) -> bool:
    return all(all_finite(a) for a in merge_halves(arrays))   # halves of one buffer: one pass


def log_steps(T: int, per_decade: int) -> np.ndarray:
    """The steps of a T-step run that a log-spaced history keeps (``TrainConfig.history_per_decade``): 0, 1, 2, T and
    round(10^(j/per_decade)) ≤ T, sorted, without repeats.

    A run keeps about per_decade·log10(T) + 4 rows instead of T + 1; the first steps are all kept (for
    per_decade ≥ 4 every step up to 3 is), and so is the last step, at the returned parameters.
    """
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 0:
        raise ValueError(f"T must be a non-negative integer, got {T!r}")
    _positive_int("per_decade", per_decade)
    T = int(T)
    if T == 0:
        return np.zeros(1, dtype=np.int64)
    j = np.arange(math.ceil(per_decade * math.log10(T)) + 1)
    grid = np.floor(10.0 ** (j / per_decade) + 0.5).astype(np.int64)   # round half up: no banker's rounding
    steps = np.unique(np.concatenate([[0, 1, 2, T], grid]))
    return steps[steps <= T].astype(np.int64)


def _kept(t: int, cfg: TrainConfig, grid: frozenset) -> bool:
    """Whether step t's history row is kept for good (``TrainConfig.history_every``, ``history_per_decade``; the
    last row always is)."""
    return (cfg.history_every > 0 and t % cfg.history_every == 0) or t in grid


def _row_value(val):
    """A history entry as stored: a float, or a copy of a per-row array."""
    return np.array(val, dtype=np.float64) if np.ndim(val) else float(val)


def _fresh_state(objective) -> list:
    """The arrays the loop updates in place: float64 copies of ``state0``, or the objective's own ``fresh_state()``
    when it has one (an objective may lay its arrays out for its products, e.g. two blocks as the halves of one
    buffer, so that one matrix product serves both; the values are those of ``state0`` either way)."""
    fresh = getattr(objective, "fresh_state", None)
    if fresh is not None:
        return list(fresh())
    return [np.array(a, dtype=np.float64, copy=True) for a in objective.state0]


def run(objective: Objective, cfg: TrainConfig, progress: bool = False) -> tuple[tuple, History]:
    """The training loop shared by every objective. Returns the final parameters and the ``History``."""
    state_type = type(objective.state0)
    state = _fresh_state(objective)
    frozen = objective.frozen(cfg)
    trainable = [name not in frozen for name in state_type._fields]   # (math 6.1)
    has_test = objective.X_test is not None
    optimizer = Optimizer(cfg, state)
    rec = {k: [] for k in objective.history_keys}
    rows = []                    # the step of each recorded row (``history_every``, ``history_per_decade``)
    grid = frozenset(log_steps(cfg.steps, cfg.history_per_decade).tolist()) if cfg.history_per_decade else frozenset()
    steps_taken, status, loss, message = 0, "max_steps", np.nan, ""
    stop_after_update = False    # the authors' rule: the check passed before the update just taken
    bar = tqdm(total=cfg.steps, desc="train", unit="step") if progress else None
    for t in range(cfg.steps + 1):
        with np.errstate(over="ignore", invalid="ignore"):   # overflow is detected right below and reported
            loss, grads, f, cache = objective.value_and_grad(state_type(*state))
        if not (np.isfinite(loss) and _all_finite(grads)):
            if t == 0:                   # no update taken yet: the scale of the inputs, not the step size
                status = "overflow"
                message = ("the model overflowed in float64 at the initial parameters (finite inputs): "
                           f"{overflow_scales(objective.X, f, cache)}; reduce the scale of the data or of the init")
            else:                        # never continue on NaN/inf: the caller sees where it broke (math §6.1)
                status = "diverged"
                message = (f"loss or gradient became non-finite at step {t} after {t} finite updates "
                           f"(lr={cfg.lr:g}, optimizer={cfg.optimizer}); reduce lr")
            break
        if rows and not _kept(rows[-1], cfg, grid):
            for series in rec.values():  # the previous row was only kept in case it was the last one
                series.pop()
            rows.pop()
        rows.append(t)
        for k, val in objective.record(loss, f, cache).items():
            rec[k].append(_row_value(val))
        evaluate = has_test and cfg.eval_every and t % cfg.eval_every == 0
        rec["test_loss"].append(mean_loss(objective.test_outputs(state_type(*state)), objective.y_test)
                                if evaluate else np.nan)
        if stop_after_update:
            status = "converged"         # the authors' loop returns the model after the update that followed the check
            break
        below = cfg.loss_threshold is not None and loss < cfg.loss_threshold   # L_S(θ_t) < τ (math 6.4)
        if below and cfg.stop_rule == "first_below":
            status = "converged"         # the first iterate below the threshold, not updated (math 6.5)
            break
        if t == cfg.steps:
            break
        stop_after_update = below        # "authors": update first, then stop (math 6.6)
        optimizer.step(state, grads, trainable, t)
        steps_taken += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")
    if bar is not None:
        bar.close()

    final_test = final_error = np.nan
    if has_test and status not in ("diverged", "overflow"):
        with np.errstate(over="ignore", invalid="ignore"):   # overflow is detected right below and reported
            f_test = objective.test_outputs(state_type(*state))
        if np.all(np.isfinite(f_test)):
            final_test = mean_loss(f_test, objective.y_test)                      # (math 3.4)
            final_error = float(np.mean(np.sign(f_test) != objective.y_test))    # (math 3.4)
        else:                    # not a number to report: a status of its own, with the scales that overflowed
            status, message = "nonfinite_test", (
                f"after {steps_taken} updates ({status}) the model overflowed in float64 on the test set (finite "
                f"inputs): {objective.test_overflow(state_type(*state))}; reduce the scale of the data "
                "or of the init")
        if rec["test_loss"]:
            rec["test_loss"][-1] = final_test
    history = History(step=np.asarray(rows, dtype=np.int64), values={k: np.asarray(v) for k, v in rec.items()},
                      status=status, steps=steps_taken, final_train_loss=float(loss), final_test_loss=float(final_test),
                      final_test_error=final_error, message=message, config=cfg.to_dict())
    return objective.params(state_type(*state)), history
