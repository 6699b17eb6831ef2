"""Full-batch training (docs/math.md §6): GD (6.1), the paper's; SignGD and Adam (Li et al.; docs/math.md (6.2),
(6.3)); a per-step history.

One loop serves every way of training. What it trains is an ``Objective``: it holds the training state as a
NamedTuple of arrays (``Params`` for dense weights; ``refvit.span.SpanState`` for token coordinates, docs/math.md §8)
and returns an ``Evaluation``: the loss, the gradient with respect to that state (same type), the outputs f and the
forward ``Cache`` for the history. The optimizer updates every field of the state except the one named ``w_O``,
which is only updated when ``train_w_O`` is True.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from .config import TrainConfig
from .model import (Evaluation, Params, check_inputs, forward_cache, loss_grads_cache, mean_loss, overflow_scales,
                    resolve_backend)
from .span import SpanObjective

# Quantities recorded at every step t, evaluated at the parameters *before* update t (math §6.1). Token 0 is the
# signal token, token 1 the noise token, token 2 the first "other" token (NaN when M = 2). "s0" = training sample 0,
# the sample the authors' dynamics script plots (a y = +1 sample under balanced labels).
HISTORY_KEYS = (
    "train_loss", "test_loss",
    "attn_signal", "attn_noise",            # mean over samples of ā_{i,0} and ā_{i,1}
    "attn_signal_s0", "attn_noise_s0",      # ā_{0,0}, ā_{0,1}
    "value_signal", "value_noise",          # mean over samples of y_i v_{i,0}, y_i v_{i,1} (signed value scores)
    "V_signal_s0", "V_noise_s0",            # v_{0,0} = μ_{y_0}ᵀ W_V w_O and v_{0,1} = ξ_0ᵀ W_V w_O
    "qk_sig_sig_s0", "qk_sig_noise_s0",     # μᵀ W_Q W_Kᵀ μ and μᵀ W_Q W_Kᵀ ξ for sample 0
    "qk_other_sig_s0", "qk_other_noise_s0",  # x₃ᵀ W_Q W_Kᵀ μ and x₃ᵀ W_Q W_Kᵀ ξ (x₃ = token 2 as the query)
    "min_margin",                           # min_i y_i f_i
)


@dataclass
class History:
    """Per-step record of a training run. ``values[key]`` is an array of length ``len(step)``.

    status: "converged" (the stopping rule's loss check fell below the threshold, ``TrainConfig.stop_rule``),
            "max_steps" (ran all steps), "diverged" (the loss or gradient became non-finite after updates from a
            finite start; training stopped there), "overflow" (the forward pass at the initial parameters, on
            finite inputs, is not finite: a scale too large for float64, named in ``message``) or "nonfinite_test"
            (trained, but the model is not finite on the test set; test loss and error are NaN, ``message`` names
            the scales).
    steps: number of updates taken; the history has a row per ``history_every`` steps (steps + 1 rows by default),
        the last one at the returned parameters; ``step`` gives the step of each row.
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
    """What ``run`` trains. ``state0`` is a NamedTuple of float64 arrays with a field named ``w_O``."""
    state0: tuple
    X: np.ndarray                    # (N, M, d) training images
    y: np.ndarray                    # (N,) training labels
    X_test: np.ndarray | None        # (n_test, M, d) or None
    y_test: np.ndarray | None        # (n_test,) or None

    def value_and_grad(self, state) -> Evaluation:
        """Loss, gradient (same type as ``state``), f (N,) and Cache at ``state``."""

    def test_outputs(self, state) -> np.ndarray:
        """f on the test set, (n_test,)."""

    def params(self, state) -> Params:
        """The dense ``Params`` that ``state`` stands for."""


class DenseObjective:
    """Training state = ``Params``; gradients from the reference model with the chosen attention core."""

    def __init__(self, params: Params, X, y, X_test=None, y_test=None, backend: str = "numpy"):
        self.X, self.y, self.X_test, self.y_test = X, y, X_test, y_test
        self.backend = resolve_backend(backend)
        self.state0 = params

    def value_and_grad(self, state) -> Evaluation:
        return loss_grads_cache(Params(*state), self.X, self.y, self.backend)   # loss (math 3.3), gradients (math §4)

    def test_outputs(self, state) -> np.ndarray:
        return forward_cache(Params(*state), self.X_test, self.backend)[0]

    def params(self, state) -> Params:
        return Params(*state)


def _record(rec: dict, loss: float, f, cache, y) -> None:
    M = cache.S.shape[1]
    abar, v, Z = cache.abar, cache.v, cache.Z
    nan = np.nan   # quantities of tokens an image does not have (M = 1: no noise token; M = 2: no other token)
    row = {
        "train_loss": loss,
        "attn_signal": abar[:, 0].mean(), "attn_noise": abar[:, 1].mean() if M > 1 else nan,
        "attn_signal_s0": abar[0, 0], "attn_noise_s0": abar[0, 1] if M > 1 else nan,
        "value_signal": (y * v[:, 0]).mean(), "value_noise": (y * v[:, 1]).mean() if M > 1 else nan,
        "V_signal_s0": v[0, 0], "V_noise_s0": v[0, 1] if M > 1 else nan,
        "qk_sig_sig_s0": Z[0, 0, 0], "qk_sig_noise_s0": Z[0, 0, 1] if M > 1 else nan,
        "qk_other_sig_s0": Z[0, 2, 0] if M > 2 else nan, "qk_other_noise_s0": Z[0, 2, 1] if M > 2 else nan,
        "min_margin": (y * f).min(),
    }
    for k, val in row.items():
        rec[k].append(float(val))


def _all_finite(arrays) -> bool:
    return all(np.all(np.isfinite(a)) for a in arrays)


def _kept(t: int, every: int) -> bool:
    """Whether step t's history row is kept for good (``TrainConfig.history_every``; the last row always is)."""
    return every > 0 and t % every == 0


def run(objective: Objective, cfg: TrainConfig, progress: bool = False) -> tuple[Params, History]:
    """The training loop shared by every objective. Returns the final ``Params`` and the ``History``."""
    state_type = type(objective.state0)
    state = [np.array(a, dtype=np.float64, copy=True) for a in objective.state0]
    trainable = [name != "w_O" or cfg.train_w_O for name in state_type._fields]   # (math 6.1)
    has_test = objective.X_test is not None
    b1, b2 = cfg.adam_betas
    m = [np.zeros_like(a) for a in state] if cfg.optimizer == "adam" else None
    s = [np.zeros_like(a) for a in state] if cfg.optimizer == "adam" else None
    rec = {k: [] for k in HISTORY_KEYS}
    rows = []                    # the step of each recorded row (``history_every``)
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
        if rows and not _kept(rows[-1], cfg.history_every):
            for series in rec.values():  # the previous row was only kept in case it was the last one
                series.pop()
            rows.pop()
        rows.append(t)
        _record(rec, loss, f, cache, objective.y)
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
        for k in range(len(state)):
            if not trainable[k]:
                continue
            g = grads[k]
            if cfg.optimizer == "gd":
                state[k] -= cfg.lr * g                     # (math 6.1)
            elif cfg.optimizer == "signgd":
                state[k] -= cfg.lr * np.sign(g)            # (math 6.2)
            else:  # Adam with bias correction (Kingma & Ba 2015, Algorithm 1) (math 6.3)
                m[k] = b1 * m[k] + (1 - b1) * g
                s[k] = b2 * s[k] + (1 - b2) * g * g
                m_hat = m[k] / (1 - b1 ** (t + 1))
                s_hat = s[k] / (1 - b2 ** (t + 1))
                state[k] -= cfg.lr * m_hat / (np.sqrt(s_hat) + cfg.adam_eps)
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
            with np.errstate(over="ignore", invalid="ignore"):
                f_dense, cache_test = forward_cache(objective.params(state_type(*state)), objective.X_test)
            status, message = "nonfinite_test", (
                f"after {steps_taken} updates ({status}) the model overflowed in float64 on the test set (finite "
                f"inputs): {overflow_scales(objective.X_test, f_dense, cache_test)}; reduce the scale of the data "
                "or of the init")
        if rec["test_loss"]:
            rec["test_loss"][-1] = final_test
    history = History(step=np.asarray(rows, dtype=np.int64), values={k: np.asarray(v) for k, v in rec.items()},
                      status=status, steps=steps_taken, final_train_loss=float(loss), final_test_loss=float(final_test),
                      final_test_error=final_error, message=message, config=dataclasses.asdict(cfg))
    return objective.params(state_type(*state)), history


def train(params, X, y, *, X_test=None, y_test=None, config: TrainConfig | None = None, progress: bool = False,
          **options) -> tuple[Params, History]:
    """Train from ``params`` on (X (N, M, d), y (N,)) with full-batch updates.

    Give either ``config=TrainConfig(...)`` or its fields as keywords, e.g.
    ``train(p, X, y, lr=0.1, steps=1000, optimizer="gd", train_w_O=False, loss_threshold=0.01)``.
    With a test set (X_test, y_test) the final test loss is reported and, with ``eval_every=k``, recorded every k
    steps. Returns (final Params, History). A non-finite loss stops training with ``history.status == "diverged"``.
    """
    if config is None:
        missing = [k for k in ("lr", "steps") if k not in options]
        if missing:
            raise ValueError(f"train() needs {' and '.join(missing)} (or a config=TrainConfig(...))")
        config = TrainConfig.from_dict(options)
    elif options:
        raise ValueError(f"pass either config= or keyword options, not both (got {sorted(options)})")
    return run(make_objective(config, params, X, y, X_test, y_test), config, progress)


def check_train_inputs(params, X, y, X_test=None, y_test=None):
    """Validate a training set and an optional test set once; returns float64 (params, X, y, X_test, y_test)."""
    params, X, y = check_inputs(params, X, y)
    if (X_test is None) != (y_test is None):
        raise ValueError("give both X_test and y_test, or neither")
    if X_test is not None:
        _, X_test, y_test = check_inputs(params, X_test, y_test)
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
