"""Frozen, self-validating configuration shared by every setting: the training config and the validators each
setting's own configs are built from.

Configs are plain values: they are written next to every result (``to_dict``) and rebuilt from JSON with
``from_dict``, which refuses unknown keys. Each setting's data and model configs live in its own folder
(``refvit.jiang2024.config``, ``refvit.li2025.config``); the docstring of each field cites docs/math.md.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

OPTIMIZERS = ("gd", "signgd", "adam")
BACKENDS = ("auto", "numpy", "numba")      # the attention core: numba if usable ("auto"), or the numpy reference
COORDS = ("dense", "span")                 # the training coordinates: dense weights, or exact token coordinates
STOP_RULES = ("authors", "first_below")    # the order of loss check, update and test evaluation (TrainConfig)
SETTINGS = ("jiang2024", "li2025", "magen2025")   # the settings, by the folder of each: refvit/<setting>/


def default_backend(backend: str | None) -> str:
    """The attention core when none is named (None): "auto" (numba if usable), on span coordinates (the fused kernel
    ``refvit.jiang2024._kernels.span_step``) as on dense weights; a named backend is returned as it is."""
    return backend or "auto"


def require_gd(optimizer: str, what: str) -> None:
    """Refuse SignGD/Adam where only GD is exact: elementwise updates leave the token span (docs/math.md (7.2))."""
    if optimizer != "gd":
        raise ValueError(f"{what} supports optimizer='gd' only, got {optimizer!r}: sign and Adam updates are "
                         "elementwise, so they leave the span of the training tokens (docs/math.md (7.2)); use "
                         "coords='dense'")


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _positive_float(name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a finite {bound} number, got {value!r}")


# Scales whose squares and pairwise products stay finite and non-zero in float64 (|x| ∈ [1e-150, 1e150]): the
# model multiplies two token coordinates and two weights per logit, so a larger or smaller scale cannot give finite,
# meaningful outputs.
SCALE_RANGE = (1e-150, 1e150)


def _scale(name: str, value, allow_zero: bool = False, inverse: bool = False) -> None:
    """A positive finite float64 scale whose squares neither overflow nor underflow (``SCALE_RANGE``).
    ``inverse``: the scale is a divisor (the weights are ∝ 1/value)."""
    _positive_float(name, value, allow_zero)
    lo, hi = SCALE_RANGE
    if value != 0 and not lo <= value <= hi:
        small = value > hi if inverse else value < lo
        what = f"the weights ∝ 1/{name} = {1 / value:.3g}" if inverse else f"{name}={value!r}"
        raise ValueError(f"{name}={value!r} is outside [{lo:g}, {hi:g}]: the square of {what} "
                         f"{'underflows to 0' if small else 'overflows'} in float64, so the model cannot "
                         "produce finite, meaningful outputs")


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, options))}")


class _Config:
    """Mixin: dict round trip that rejects unknown keys (a typo must not be silently ignored)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; valid options are {sorted(names)}")
        return cls(**d)

    def replace(self, **changes):
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown {type(self).__name__} option(s) {unknown}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainConfig(_Config):
    """Full-batch training (docs/math.md §6).

    lr : step size η.   steps : maximum number of updates.
    optimizer : "gd" (the paper), "signgd" or "adam" (Li et al.); docs/math.md (6.1)–(6.3).
    train_w_O : False (authors' code and the default of docs/math.md §3) — w_O stays at its init.
    loss_threshold : stop when the training loss is below it (0.01 in ``figure1_setting``); None (default) trains
        for exactly ``steps`` updates. ``stop_rule`` says in which order the check and the update come:
    stop_rule : "authors" (default; the authors' Figure-1 loop, docs/math.md (6.6)): at each step compute the
        training loss, take the update, and stop after that update if the loss computed *before* it was below the
        threshold (docs/math.md (6.4)); the returned parameters (and the reported test loss) are those after that
        last update. "first_below" (docs/math.md (6.5)): stop at the first iterate whose training loss is below
        the threshold, without updating it.
        ``History.steps`` counts the updates taken under both rules; the authors' rule takes one more.
    backend : the attention core: "auto" (numba if usable, else numpy), "numpy" or "numba". In the second setting:
        "numpy" the reference model, "numba" its sparse path, "auto" the sparse path when the noise is sparse.
    coords : "dense" (train the weights) or "span" (token coordinates W = W(0) + P·A, GD only; docs/math.md (8.1)).
    eval_every : record the test loss every k steps when a test set is given (0: only at the end).
    history_every : keep the history row of every k-th step (1: every step; 0: only the final row); the final row
        (at the returned parameters) is always kept. Bounds the memory of long runs (docs/usage.md).
    history_per_decade : when k > 0, also keep the rows of a log-spaced grid with k steps per decade
        (``refvit.trainer.log_steps``); with ``history_every=0`` the history holds that grid alone, a few hundred rows
        however long the run. Left out of ``to_dict`` while 0, so the settings of runs that do not use it are unchanged.
    """

    lr: float = 0.1
    steps: int = 1000
    optimizer: str = "gd"
    train_w_O: bool = False
    loss_threshold: float | None = None
    stop_rule: str = "authors"
    backend: str = "auto"
    coords: str = "dense"
    adam_betas: tuple = (0.9, 0.999)
    adam_eps: float = 1e-8
    eval_every: int = 0
    history_every: int = 1
    history_per_decade: int = 0

    def __post_init__(self):
        _positive_float("lr", self.lr)
        _positive_int("steps", self.steps)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.backend == "span":
            raise ValueError("backend names the attention core ('auto', 'numpy' or 'numba'); exact token "
                             "coordinates are coords='span'")
        _choice("backend", self.backend, BACKENDS)
        _choice("coords", self.coords, COORDS)
        if not isinstance(self.train_w_O, bool):
            raise ValueError(f"train_w_O must be True or False, got {self.train_w_O!r}")
        if self.loss_threshold is not None:
            _positive_float("loss_threshold", self.loss_threshold)
        _choice("stop_rule", self.stop_rule, STOP_RULES)
        if self.stop_rule != "authors" and self.loss_threshold is None:
            raise ValueError(f"stop_rule={self.stop_rule!r} orders the loss check and the update, but "
                             "loss_threshold is None (no check): set loss_threshold or leave stop_rule='authors'")
        betas = self.adam_betas
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"adam_betas must be a pair (beta1, beta2) of numbers in [0, 1), got {betas!r}")
        for b in betas:
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1:
                raise ValueError(f"adam_betas must lie in [0, 1) (numbers, not {type(b).__name__}), got {betas!r}")
        object.__setattr__(self, "adam_betas", (float(betas[0]), float(betas[1])))
        _positive_float("adam_eps", self.adam_eps)
        for name in ("eval_every", "history_every", "history_per_decade"):
            k = getattr(self, name)
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {k!r}")
        if self.coords == "span":
            require_gd(self.optimizer, "coords='span'")

    def to_dict(self) -> dict:
        d = super().to_dict()
        if not self.history_per_decade:
            d.pop("history_per_decade")   # a switch added later: runs without it keep their stored settings
        return d

    @classmethod
    def given(cls, config: "TrainConfig | None", options: dict) -> "TrainConfig":
        """The config a ``train(..., config=...)`` or ``train(..., lr=..., steps=..., **fields)`` call asks for."""
        if config is None:
            missing = [k for k in ("lr", "steps") if k not in options]
            if missing:
                raise ValueError(f"train() needs {' and '.join(missing)} (or a config=TrainConfig(...))")
            return cls.from_dict(options)
        if options:
            raise ValueError(f"pass either config= or keyword options, not both (got {sorted(options)})")
        return config
