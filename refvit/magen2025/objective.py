"""The third setting seen by the shared trainer: the ``refvit.trainer.Objective`` of the single-head prompt attention
of Magen et al., and ``train``, its entry from Python.

Each step hands the trainer the reference model's loss and gradients (``refvit.magen2025.model``) and records the
training loss and error, the attention on the signal token for clean and for flipped samples, and the margins
(docs/math.md (16.22)). The blocks not in ``MagenModelConfig.trained`` are frozen: the optimizer never updates them.
"""
from __future__ import annotations

import numpy as np

from ..config import TrainConfig
from ..primitives import overflow_scales
from ..trainer import History, run
from .config import MagenModelConfig
from .data import MagenDataset
from .model import check_inputs, forward_cache, loss_grads_cache, params_type

HISTORY_KEYS = ("train_loss", "test_loss", "train_error", "attn_signal_clean", "attn_signal_flipped",
                "margin_min", "margin_clean_min", "margin_flipped_min")


def signal_attention(S: np.ndarray, signal_pos: np.ndarray) -> np.ndarray:
    """S[i, signal_pos[i]] (n,): the attention each sample puts on its signal token (docs/math.md (16.22))."""
    return S[np.arange(S.shape[0]), signal_pos]


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else float("nan")      # NaN: no sample in the group (e.g. no flips)


def _min(a: np.ndarray) -> float:
    return float(a.min()) if a.size else float("nan")


class MagenObjective:
    """Training state = the form's params NamedTuple; the training set, signal positions and clean labels from a
    ``MagenDataset``."""
    history_keys = HISTORY_KEYS

    def __init__(self, params, data: MagenDataset, cfg: MagenModelConfig, test: bool = True):
        self.cfg = cfg
        self.state0 = params_type(cfg)(*params)
        self.X, self.y = data.X, data.y
        self.X_test, self.y_test = (data.X_test, data.y_test) if test else (None, None)
        self.signal_pos = data.signal_pos
        self.clean = data.y == data.y_clean                   # (N,) bool: label not flipped

    def value_and_grad(self, state):
        return loss_grads_cache(state, self.X, self.y)       # (math 16.11)–(math 16.17)

    def record(self, loss: float, f: np.ndarray, cache) -> dict:
        att = signal_attention(cache.S, self.signal_pos)
        margins = self.y * f                                  # y_i f_i with the (possibly flipped) training label
        return {"train_loss": loss, "train_error": float(np.mean(np.sign(f) != self.y)),
                "attn_signal_clean": _mean(att[self.clean]), "attn_signal_flipped": _mean(att[~self.clean]),
                "margin_min": _min(margins), "margin_clean_min": _min(margins[self.clean]),
                "margin_flipped_min": _min(margins[~self.clean])}

    def frozen(self, cfg: TrainConfig) -> set:
        return set(self.cfg.frozen)

    def test_outputs(self, state) -> np.ndarray:
        return forward_cache(state, self.X_test)[0]

    def test_overflow(self, state) -> str:
        with np.errstate(over="ignore", invalid="ignore"):
            f, cache = forward_cache(state, self.X_test)
        return overflow_scales(self.X_test, f, cache)

    def params(self, state):
        return params_type(self.cfg)(*state)


def train(params, data: MagenDataset, model: MagenModelConfig, *, config: TrainConfig | None = None,
          test: bool = True, progress: bool = False, **options) -> tuple[tuple, History]:
    """Train the third setting from ``params`` on ``data`` with full-batch GD, SignGD or Adam.

    Give ``config=TrainConfig(...)`` or its fields as keywords, e.g. ``train(p, data, model, lr=5.0, steps=2)``
    (two large GD steps from zero, the paper's regime). The inputs are checked once. Returns (final params,
    History): ``history[key]`` for every key of ``HISTORY_KEYS``, one row per kept step (``history.step``).
    """
    if not isinstance(data, MagenDataset):
        raise ValueError(f"data must be a MagenDataset (refvit.magen2025.make_dataset), got {type(data).__name__}")
    config = TrainConfig.given(config, options)
    if config.coords != "dense":
        raise ValueError("the third setting trains dense weights only: leave TrainConfig.coords at 'dense'")
    params, _, _ = check_inputs(params, data.X, model, data.y)
    if test:
        check_inputs(params, data.X_test, model, data.y_test)
    return run(MagenObjective(params, data, model, test), config, progress)
