"""Frozen, self-validating configuration of the third setting: the data law and the model (docs/math.md §16.7).

The paper's full definitions are not available to us; every default below is either known from the paper, inferred
from what is known, or chosen by refvit. Each field's docstring line says which, and docs/math.md §16.7 holds the
same table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import _Config, _choice, _positive_int, _scale

SIGNALS = ("coordinate", "random")
SIGNAL_POSITIONS = ("random", "fixed")
FLIPS = ("iid", "exact")
FORMS = ("prompt", "query")
INITS = ("zero", "gaussian")
BLOCKS = {"prompt": ("p", "v"), "query": ("W_Q", "W_K", "q", "v")}


@dataclass(frozen=True)
class MagenDataConfig(_Config):
    """The data law of docs/math.md §16.1: one signal token μ_{y} and M − 1 noise tokens per sample.

    Attributes (paper = known from the paper; inferred = deduced from what is known of it; ours = refvit's choice)
    ----------
    N : training samples (ours: 40).      d : token dimension (ours: 2000; the paper needs d large).
    rho : ‖μ₁‖ = ‖μ₂‖ = ρ (ours: 7.0, so that SNR ≈ 1/√N at the defaults, the paper's regime).
    sigma : noise scale σ, covariance σ²(I − μ₁μ₁ᵀ/ρ² − μ₂μ₂ᵀ/ρ²) (σ = 1 inferred; the projection: paper).
    signals : "coordinate" (inferred, default: μ₁ = ρe₀, μ₂ = ρe₁) or "random" (ours: a random orthogonal pair).
    signal_position : "random" (inferred, default: uniform over the M tokens per sample) or "fixed" (token 0).
    flip_rate : label-flip probability η in [0, 0.5) (ours: 0.1; noisy labels: paper).
    flips : "iid" (inferred, default: each training label flipped independently with probability η) or "exact"
        (ours: exactly round(η·N) labels, as ``refvit.streams.flip_labels``). docs/math.md (16.3).
    M : tokens per sample, one signal and M − 1 noise (paper: 2; M > 2 is ours).
    n_test : clean test samples (ours: 1000).
    """

    N: int = 40
    d: int = 2000
    rho: float = 7.0
    sigma: float = 1.0
    signals: str = "coordinate"
    signal_position: str = "random"
    flip_rate: float = 0.1
    flips: str = "iid"
    M: int = 2
    n_test: int = 1000

    def __post_init__(self):
        for name in ("N", "d", "M", "n_test"):
            _positive_int(name, getattr(self, name))
        if self.d < 3:
            raise ValueError(f"d must be >= 3 (two signal directions and room for noise), got {self.d}")
        if self.M < 2:
            raise ValueError(f"M must be >= 2 (a signal token and at least one noise token), got {self.M}")
        _scale("rho", self.rho)
        _scale("sigma", self.sigma)
        _choice("signals", self.signals, SIGNALS)
        _choice("signal_position", self.signal_position, SIGNAL_POSITIONS)
        _choice("flips", self.flips, FLIPS)
        ok = isinstance(self.flip_rate, (int, float)) and not isinstance(self.flip_rate, bool)
        if not (ok and 0.0 <= self.flip_rate < 0.5):
            raise ValueError(f"flip_rate must be in [0, 0.5), got {self.flip_rate!r}")

    @property
    def snr(self) -> float:
        """SNR = ρ / (σ √d): docs/math.md (16.4)."""
        return self.rho / (self.sigma * math.sqrt(self.d))

    @property
    def norm_ratio(self) -> float:
        """ρ / √E‖ξ‖² = ρ / (σ √(d − 2)) = SNR·√(d/(d − 2)), the ratio of token norms: docs/math.md (16.5)."""
        return self.rho / (self.sigma * math.sqrt(self.d - 2))

    @staticmethod
    def rho_for_snr(snr: float, d: int, sigma: float = 1.0) -> float:
        """The ρ that gives SNR = ``snr`` at dimension d and noise scale σ: ρ = SNR·σ·√d (docs/math.md (16.4))."""
        _scale("snr", snr)
        _positive_int("d", d)
        _scale("sigma", sigma)
        return snr * sigma * math.sqrt(d)


@dataclass(frozen=True)
class MagenModelConfig(_Config):
    """The model of docs/math.md §16.2: the prompt form f = vᵀXᵀ softmax(Xp) or its query form p = W_Kᵀ W_Q q.

    Attributes (paper / inferred / ours as in ``MagenDataConfig``)
    ----------
    form : "prompt" (paper, default: trained p, v ∈ ℝ^d) or "query" (ours: p = W_Kᵀ W_Q q with W_Q, W_K (d_h, d)
        and a query q ∈ ℝ^d). docs/math.md (16.6), (16.9).
    init : "zero" (paper, default: p = v = 0) or "gaussian" (ours: every entry N(0, σ₀²); q a unit vector).
        The query form needs "gaussian": W_Q = W_K = 0 is a stationary point (docs/math.md (16.17)).
    sigma0 : std of the Gaussian init (ours: 0.01).    d_h : query/key width of the query form (ours: 16).
    trained : the blocks the optimizers update, a non-empty tuple out of ("p", "v") (prompt; default both: paper)
        or ("W_Q", "W_K", "q", "v") (query; default ("W_Q", "W_K", "v"), q fixed: ours). None = the default.
    """

    form: str = "prompt"
    init: str = "zero"
    sigma0: float = 0.01
    d_h: int = 16
    trained: tuple | None = None

    def __post_init__(self):
        _choice("form", self.form, FORMS)
        _choice("init", self.init, INITS)
        _scale("sigma0", self.sigma0)
        _positive_int("d_h", self.d_h)
        if self.form == "query" and self.init == "zero":
            raise ValueError("init='zero' is a stationary point of W_Q, W_K in form='query' (docs/math.md (16.17)); "
                             "use init='gaussian'")
        blocks = BLOCKS[self.form]
        t = self.trained
        if t is None:
            t = blocks if self.form == "prompt" else ("W_Q", "W_K", "v")
        if isinstance(t, str) or not isinstance(t, (tuple, list)) or not t:
            raise ValueError(f"trained must be a non-empty tuple of block names out of {blocks}, got {t!r}")
        if any(b not in blocks for b in t) or len(set(t)) != len(t):
            raise ValueError(f"trained must hold distinct block names out of {blocks} (form={self.form!r}), "
                             f"got {tuple(t)!r}")
        object.__setattr__(self, "trained", tuple(b for b in blocks if b in t))   # canonical order

    @property
    def blocks(self) -> tuple:
        """The parameter blocks of this form, in the order of its params NamedTuple."""
        return BLOCKS[self.form]

    @property
    def frozen(self) -> frozenset:
        """The blocks the optimizers never update (those not in ``trained``)."""
        return frozenset(self.blocks) - set(self.trained)
