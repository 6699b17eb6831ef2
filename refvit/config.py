"""Frozen, self-validating configuration for data, model and training.

Every switch where the paper is uncertain has the default named in the switch table of docs/math.md §9.2 (the
authors'-code column); the docstring of each field cites its section or equation of docs/math.md. Configs are
plain values: they are written next to every result (``dataclasses.asdict``) and rebuilt from JSON with ``from_dict``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

OTHER_TOKENS = ("weak_gaussian", "zero")
LABELS = ("balanced", "rademacher")
INITS = ("torch_uniform_scaled", "gaussian")
OPTIMIZERS = ("gd", "signgd", "adam")
BACKENDS = ("auto", "numpy", "numba")      # the attention core: numba if usable ("auto"), or the numpy reference
COORDS = ("dense", "span")                 # the training coordinates: dense weights, or exact token coordinates
STOP_RULES = ("authors", "first_below")    # the order of loss check, update and test evaluation (TrainConfig)

# The experiments' thresholds, each defined here once (math §10.1).
LOSS_THRESHOLD = 0.01      # a run has converged when its training loss is below this (math 6.4)
BENIGN_LOSS = 0.2          # a converged run is benign when its test loss is below this (Figure 1, panel b) (math §10.1)
AXIS_SIGMA = 0.2           # σ of the authors' plotted SNR axis: the weak tokens' σ_w in the Figure-1 setting (math 1.7)
AUTHORS_CURVE_AXIS = 1000.0   # the authors' boundary curve N·SNR² = 1000, SNR on that axis (σ = 0.2) (math 1.9)


def boundary_n_snr2(sigma_p: float = 4.0, sigma_axis: float = AXIS_SIGMA) -> float:
    """The authors' curve in the theory's convention: N·SNR² = 1000 / (σ_p/σ_axis)², 2.5 for Figure 1.

    docs/math.md (1.8), (1.9).

    (Written as a division by (4/0.2)² = 400, which is exact in float64, so that the Figure-1 value is 2.5 exactly.)
    """
    return AUTHORS_CURVE_AXIS / (sigma_p / sigma_axis) ** 2


BOUNDARY_N_SNR2 = boundary_n_snr2()   # 2.5: the Figure-1 boundary with SNR = ‖μ‖/(σ_p √d) (math 1.9)


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
class DataConfig(_Config):
    """The data distribution of docs/math.md §1.1 (defaults: the authors' Figure-1 script, docs/math.md §1.3 table).

    Token 0 is the signal μ_y, token 1 the noise token ξ ~ N(0, σ_p²·I) and tokens 2..M-1 the "other" tokens.

    Attributes
    ----------
    N : training samples.        M : tokens per image.        d : token dimension.
    mu_norm : ‖μ‖; μ₊ = ‖μ‖e₁, μ₋ = ‖μ‖e₂ unless explicit signals are passed to ``data.sample``.
    sigma_p : std of the noise token x₂ (docs/math.md (1.3); 4 in Figure 1, 1 in the dynamics figure).
    sigma_w : std of the other tokens when ``other_tokens="weak_gaussian"`` (authors: σ_p/20).
    other_tokens : "weak_gaussian" (authors' code) or "zero" (one reading of the theory) — docs/math.md (1.3);
        the paper does not specify tokens 2..M−1 (docs/math.md §1.3).
    project_noise : False (authors' code, isotropic) or True (theory: noise projected off μ₊, μ₋) — docs/math.md (1.4).
        When True the other tokens are projected too, so μ±ᵀ·noise = 0 for every token (docs/math.md (7.8)).
    labels : "balanced" (authors: alternating +1, -1, needs even N) or "rademacher" (theory) — docs/math.md (1.5).
    flip_rate : fraction of *training* labels flipped (exactly round(p·N), chosen at random); test labels clean.
        The paper has no label noise (docs/math.md (1.5), §1.3); flips as in its follow-up.
    n_test : fresh test samples (authors: 100, balanced).
    snr_axis_sigma : σ of the plotted SNR axis (``snr_axis``), metadata only: 0.2 in Figure 1, the weak tokens' σ.
    """

    N: int = 20
    M: int = 16
    d: int = 1024
    mu_norm: float = 80.0
    sigma_p: float = 4.0
    sigma_w: float = 0.2
    other_tokens: str = "weak_gaussian"
    project_noise: bool = False
    labels: str = "balanced"
    flip_rate: float = 0.0
    n_test: int = 100
    snr_axis_sigma: float = AXIS_SIGMA

    def __post_init__(self):
        for name in ("N", "M", "d", "n_test"):
            _positive_int(name, getattr(self, name))
        if self.M < 2:
            raise ValueError(f"M must be >= 2 (a signal token and a noise token), got {self.M}")
        if self.d < 2:
            raise ValueError(f"d must be >= 2 so that μ₊ and μ₋ can be orthogonal, got {self.d}")
        _scale("mu_norm", self.mu_norm)
        _scale("sigma_p", self.sigma_p)
        _scale("sigma_w", self.sigma_w, allow_zero=True)
        _scale("snr_axis_sigma", self.snr_axis_sigma)
        _choice("other_tokens", self.other_tokens, OTHER_TOKENS)
        _choice("labels", self.labels, LABELS)
        if not isinstance(self.project_noise, bool):
            raise ValueError(f"project_noise must be True or False, got {self.project_noise!r}")
        if not (isinstance(self.flip_rate, (int, float)) and 0.0 <= self.flip_rate < 0.5):
            raise ValueError(f"flip_rate must be in [0, 0.5), got {self.flip_rate!r}")
        if self.labels == "balanced":
            for name in ("N", "n_test"):
                if getattr(self, name) % 2:
                    raise ValueError(
                        f"labels='balanced' needs an even {name} (half of each class), got {getattr(self, name)};"
                        f" use an even {name} or labels='rademacher'")

    @property
    def snr(self) -> float:
        """SNR = ‖μ‖ / (σ_p √d) with σ_p the std of the memorized noise token (docs/math.md (1.6))."""
        return snr(self.mu_norm, self.sigma_p, self.d)

    @property
    def snr_axis(self) -> float:
        """The authors' plotted SNR, ‖μ‖ / (σ_axis √d), σ_axis = ``snr_axis_sigma`` (docs/math.md (1.7))."""
        return snr(self.mu_norm, self.snr_axis_sigma, self.d)

    @property
    def n_snr2(self) -> float:
        """N·SNR², the quantity that decides benign vs harmful overfitting (docs/math.md (1.6), §9.1)."""
        return self.N * self.snr ** 2

    @property
    def n_snr_axis2(self) -> float:
        """N·SNR² on the authors' axis: (σ_p/σ_axis)² · ``n_snr2`` (docs/math.md (1.8))."""
        return self.N * self.snr_axis ** 2


def snr(mu_norm: float, sigma: float, d: int) -> float:
    """‖μ‖ / (σ √d): docs/math.md (1.6) with σ = σ_p (the theory's SNR), (1.7) with σ = 0.2 (the Figure-1 axis)."""
    return float(mu_norm) / (float(sigma) * math.sqrt(d))


@dataclass(frozen=True)
class ModelConfig(_Config):
    """Widths and initialization (docs/math.md (2.1), (2.2), (3.6)–(3.8)).

    init : "torch_uniform_scaled" — W_Q, W_K, W_V ~ U(±1/√d)/init_scale (authors: ÷16 Figure 1, ÷32 dynamics),
           docs/math.md (3.6); "gaussian" — W_Q, W_K, W_V ~ N(0, sigma0²), docs/math.md (3.7): a usual theory
           init, since the paper does not give the theory's initialisation (docs/math.md §3).
    w_O is U(±1/√d_v) in both, the authors' frozen head (docs/math.md (3.8)).
    """

    d_h: int = 512
    d_v: int = 512
    init: str = "torch_uniform_scaled"
    init_scale: float = 16.0
    sigma0: float = 1e-3

    def __post_init__(self):
        _positive_int("d_h", self.d_h)
        _positive_int("d_v", self.d_v)
        _choice("init", self.init, INITS)
        _scale("init_scale", self.init_scale, inverse=True)     # weights ∝ 1/init_scale
        _scale("sigma0", self.sigma0)


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
    backend : the attention core: "auto" (numba if usable, else numpy), "numpy" or "numba".
    coords : "dense" (train the weights) or "span" (token coordinates W = W(0) + P·A, GD only; docs/math.md (8.1)).
    eval_every : record the test loss every k steps when a test set is given (0: only at the end).
    history_every : keep the history row of every k-th step (1: every step; 0: only the final row); the final row
        (at the returned parameters) is always kept. Bounds the memory of long runs (docs/usage.md).
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
        for name in ("eval_every", "history_every"):
            k = getattr(self, name)
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {k!r}")
        if self.coords == "span":
            require_gd(self.optimizer, "coords='span'")


# --- presets: the two settings of the paper's experiments (math §10) -----------------------------------------

def figure1_setting(N: int = 20, mu_norm: float = 80.0, **data) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """The authors' heatmap cell (docs/math.md §10.1): M=16, d=1024, d_h=d_v=512, σ=4/0.2, ÷16, η=0.1,
    ≤1000 steps."""
    return (DataConfig(N=N, M=16, d=1024, mu_norm=mu_norm, sigma_p=4.0, sigma_w=0.2, **data),
            ModelConfig(d_h=512, d_v=512, init="torch_uniform_scaled", init_scale=16.0),
            TrainConfig(lr=0.1, steps=1000, loss_threshold=LOSS_THRESHOLD, stop_rule="authors"))


def dynamics_setting(mu_norm: float = 1.0, **data) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """The authors' dynamics script (docs/math.md §10.2): M=3, d=2048, N=10, d_h=1024, d_v=512, σ=1/0.05, ÷32,
    η=0.01, exactly 500 steps."""
    return (DataConfig(N=10, M=3, d=2048, mu_norm=mu_norm, sigma_p=1.0, sigma_w=0.05, snr_axis_sigma=0.05, **data),
            ModelConfig(d_h=1024, d_v=512, init="torch_uniform_scaled", init_scale=32.0),
            TrainConfig(lr=0.01, steps=500, loss_threshold=None))
