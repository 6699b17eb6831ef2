"""Frozen, self-validating configuration of the first setting (Jiang et al.): data, model, the experiments'
thresholds and the presets of the authors' two scripts.

Every switch where the paper is uncertain has the default named in the switch table of docs/math.md §9.2 (the
authors'-code column); the docstring of each field cites its section or equation of docs/math.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import TrainConfig, _choice, _Config, _positive_int, _scale

OTHER_TOKENS = ("weak_gaussian", "zero")
LABELS = ("balanced", "rademacher")
INITS = ("torch_uniform_scaled", "gaussian")

# The experiments' thresholds, each defined here once (math §10.1).
LOSS_THRESHOLD = 0.01      # a run has converged when its training loss is below this (math 6.4)
BENIGN_LOSS = 0.2          # a converged run is benign when its test loss is below this (Figure 1, panel b) (math §10.1)
PRESETS = ("quick", "paper")     # the Figure-1 sweep presets (refvit.jiang2024.sweep.Sweep.quick, .paper)
AXIS_SIGMA = 0.2           # σ of the authors' plotted SNR axis: the weak tokens' σ_w in the Figure-1 setting (math 1.7)
AUTHORS_CURVE_AXIS = 1000.0   # the authors' boundary curve N·SNR² = 1000, SNR on that axis (σ = 0.2) (math 1.9)


def boundary_n_snr2(sigma_p: float = 4.0, sigma_axis: float = AXIS_SIGMA) -> float:
    """The authors' curve in the theory's convention: N·SNR² = 1000 / (σ_p/σ_axis)², 2.5 for Figure 1.

    docs/math.md (1.8), (1.9).

    (Written as a division by (4/0.2)² = 400, which is exact in float64, so that the Figure-1 value is 2.5 exactly.)
    """
    return AUTHORS_CURVE_AXIS / (sigma_p / sigma_axis) ** 2


BOUNDARY_N_SNR2 = boundary_n_snr2()   # 2.5: the Figure-1 boundary with SNR = ‖μ‖/(σ_p √d) (math 1.9)


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
