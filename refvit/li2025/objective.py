"""The second setting seen by the shared trainer: the ``refvit.trainer.Objective`` of the two-token transformer of
Li et al. (ICLR 2025), and ``train``, its entry from Python.

Each step hands the trainer the reference model's loss and gradients (``refvit.li2025.model``), and records the
training loss and error and what the proofs track (``refvit.li2025.tracking``, docs/math.md §14.1). The blocks not in
``LiModelConfig.trained`` are frozen: the optimizer never updates them (docs/math.md §13.7).

Two objectives give the same history: ``LiObjective`` runs the reference model on the dense tokens;
``SparseLiObjective`` runs the same model over the tokens' non-zero coordinates (``refvit.li2025.sparse``), which
sparse noise makes much cheaper. ``TrainConfig.backend`` picks one (``make_objective``): "numpy" the reference,
"numba" the sparse path (sparse noise only), "auto" (default) the sparse path whenever the noise is sparse and numba
is usable, else the reference.
"""
from __future__ import annotations

import numpy as np

from ..config import TrainConfig
from ..jit import numba_usable
from ..primitives import overflow_scales
from ..trainer import History, run
from .config import LiModelConfig
from .data import LiDataset
from .model import LiParams, check_inputs, forward_cache, loss_grads_cache
from .sparse import sparse_forward_cache, sparse_loss_grads_cache, sparse_tokens
from .tracking import TRACKED_KEYS, tracked

HISTORY_KEYS = ("train_loss", "test_loss", "train_error", *TRACKED_KEYS)


class LiObjective:
    """Training state = ``LiParams``; the training set, its signal positions and clean labels from a ``LiDataset``."""
    history_keys = HISTORY_KEYS

    def __init__(self, params: LiParams, data: LiDataset, cfg: LiModelConfig, test: bool = True):
        self.cfg = cfg
        self.state0 = LiParams(*params)
        self.X, self.y = data.X, data.y
        self.X_test, self.y_test = (data.X_test, data.y_test) if test else (None, None)
        self.signal_pos, self.signal_sign = data.signal_pos, data.y_clean   # the signal token follows the clean label

    def value_and_grad(self, state):
        return loss_grads_cache(LiParams(*state), self.X, self.y, self.cfg)     # (math 13.12), (math §13.4)

    def record(self, loss: float, f: np.ndarray, cache) -> dict:
        return {"train_loss": loss, "train_error": float(np.mean(np.sign(f) != self.y)),
                **tracked(cache, self.y, self.signal_pos, self.signal_sign)}

    def frozen(self, cfg: TrainConfig) -> set:
        return set(self.cfg.frozen)

    def test_outputs(self, state) -> np.ndarray:
        return forward_cache(LiParams(*state), self.X_test, self.cfg)[0]

    def test_overflow(self, state) -> str:
        with np.errstate(over="ignore", invalid="ignore"):
            f, cache = forward_cache(LiParams(*state), self.X_test, self.cfg)
        return overflow_scales(self.X_test, f, cache)

    def params(self, state) -> LiParams:
        return LiParams(*state)


class SparseLiObjective(LiObjective):
    """``LiObjective`` over the non-zero coordinates of the tokens (``refvit.li2025.sparse``): same loss, gradients,
    cache and history up to rounding, O(nnz·m_k) per step instead of O(N·L·d·m_k). Needs sparse noise
    (``LiDataset.support``); the test tokens are put in sparse form at the first test evaluation."""

    def __init__(self, params: LiParams, data: LiDataset, cfg: LiModelConfig, test: bool = True):
        if data.support is None or (test and data.support_test is None):
            raise ValueError("SparseLiObjective needs sparse noise (LiDataConfig.noise='sparse'); for dense noise "
                             "use LiObjective (TrainConfig.backend='numpy' or 'auto')")
        super().__init__(params, data, cfg, test)
        self.tokens = sparse_tokens(self.X, data.support)                   # (N·L rows, nnz) once
        self._support_test = data.support_test if test else None
        self.tokens_test = None

    def value_and_grad(self, state):
        return sparse_loss_grads_cache(LiParams(*state), self.tokens, self.y, self.cfg)   # (math 13.12), (§13.4)

    def test_outputs(self, state) -> np.ndarray:
        if self.tokens_test is None:
            self.tokens_test = sparse_tokens(self.X_test, self._support_test)
        return sparse_forward_cache(LiParams(*state), self.tokens_test, self.cfg)[0]


def make_objective(params: LiParams, data: LiDataset, cfg: LiModelConfig, backend: str = "auto",
                   test: bool = True) -> LiObjective:
    """The objective ``TrainConfig.backend`` names: "numpy" → ``LiObjective`` (the reference); "numba" →
    ``SparseLiObjective`` (a ValueError for dense noise); "auto" → ``SparseLiObjective`` when the noise is sparse
    and numba is usable, else ``LiObjective``."""
    if backend not in ("auto", "numpy", "numba"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'numba', got {backend!r}")
    sparse = data.support is not None
    if backend == "numba" or (backend == "auto" and sparse and numba_usable()):
        return SparseLiObjective(params, data, cfg, test)
    return LiObjective(params, data, cfg, test)


def train(params, data: LiDataset, model: LiModelConfig, *, config: TrainConfig | None = None, test: bool = True,
          progress: bool = False, **options) -> tuple[LiParams, History]:
    """Train the second setting from ``params`` on ``data`` with full-batch GD, SignGD or Adam.

    Give ``config=TrainConfig(...)`` or its fields as keywords, e.g. ``train(p, data, model, optimizer="signgd",
    lr=1e-3, steps=900, history_per_decade=20)``. The inputs are checked once. Returns (final LiParams, History):
    ``history[key]`` for every key of ``HISTORY_KEYS``, one row per kept step (``history.step``).
    ``TrainConfig.backend`` picks the reference or the sparse path (``make_objective``); both give the same history
    up to rounding.
    """
    if not isinstance(data, LiDataset):
        raise ValueError(f"data must be a LiDataset (refvit.li2025.make_dataset), got {type(data).__name__}")
    config = TrainConfig.given(config, options)
    if config.coords != "dense":
        raise ValueError("the second setting trains dense weights only: leave TrainConfig.coords at 'dense'")
    params, _, _ = check_inputs(params, data.X, model, data.y)
    if test:
        check_inputs(params, data.X_test, model, data.y_test)
    return run(make_objective(params, data, model, config.backend, test), config, progress)
