"""Frozen, self-validating configuration of the second setting: the data law and the model (docs/math.md §13.7).

The paper's full definitions are not available to us; every default below is either known from the paper, inferred
from what is known, or chosen by refvit. Each field's docstring line says which, and docs/math.md §13.7 holds the
same table. Configs are plain values (``to_dict`` / ``from_dict`` / ``replace`` from the first setting's mixin).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import _Config, _choice, _positive_float, _positive_int, _scale

NOISE = ("sparse", "dense")
SIGNAL_POSITIONS = ("fixed", "random")
LABELS = ("rademacher", "balanced")
C_L = ("sum", "mean")
BLOCKS = ("W_Q", "W_K", "W_V")
L_TOKENS = 2          # a signal token and a noise token: the only data model of this setting (math 13.1)


@dataclass(frozen=True)
class LiDataConfig(_Config):
    """The data law of docs/math.md §13.1: token y·μ and noise token ξ, μ = ‖μ‖e₀ (coordinate 0).

    Attributes (paper = known from the paper; inferred = deduced from what is known of it; ours = refvit's choice)
    ----------
    N : training samples (ours: 20).         d : token dimension (ours: 2000; the paper asks d polynomial in N).
    s : noise sparsity, coordinates per noise token, 1 ≤ s < d (ours: 40; "sparse noise" is the paper's).
    sigma_p : std of each noise coordinate (ours: 1.0; σ_p is the paper's parameter).
    mu_norm : ‖μ‖ (ours: 0.02, a regime where the noise dominates, ‖μ‖ ≪ σ_p √s).
    noise : "sparse" (inferred, default): s coordinates uniform without replacement from {1..d−1}, each N(0, σ_p²);
        "dense" (ours): every coordinate but 0 is N(0, σ_p²). docs/math.md (13.2).
    signal_position : "fixed" (inferred, default: token 0 signal, token 1 noise) or "random" (ours: per sample).
    alpha : feature-noise weight, ξ ← ξ − α·ỹ·μ (ours: 0.0; the paper does not say whether it has such a term).
    flip_rate : fraction of training labels flipped, exactly round(p·N) (inferred: 0.0, the data are separable).
    labels : "rademacher" (inferred, default) or "balanced" (alternating +1, −1; needs even N and n_test).
    n_test : fresh clean test samples (ours: 2000).
    """

    N: int = 20
    d: int = 2000
    s: int = 40
    sigma_p: float = 1.0
    mu_norm: float = 0.02
    noise: str = "sparse"
    signal_position: str = "fixed"
    alpha: float = 0.0
    flip_rate: float = 0.0
    labels: str = "rademacher"
    n_test: int = 2000

    def __post_init__(self):
        for name in ("N", "d", "s", "n_test"):
            _positive_int(name, getattr(self, name))
        if self.d < 2:
            raise ValueError(f"d must be >= 2 (coordinate 0 carries μ, the noise lives on 1..d-1), got {self.d}")
        if self.s >= self.d:
            raise ValueError(f"s must be in [1, d-1] = [1, {self.d - 1}] (the noise avoids coordinate 0), "
                             f"got s={self.s}")
        _scale("sigma_p", self.sigma_p)
        _scale("mu_norm", self.mu_norm)
        _positive_float("alpha", self.alpha, allow_zero=True)
        _choice("noise", self.noise, NOISE)
        _choice("signal_position", self.signal_position, SIGNAL_POSITIONS)
        _choice("labels", self.labels, LABELS)
        ok = isinstance(self.flip_rate, (int, float)) and not isinstance(self.flip_rate, bool)
        if not (ok and 0.0 <= self.flip_rate < 0.5):
            raise ValueError(f"flip_rate must be in [0, 0.5), got {self.flip_rate!r}")
        if self.labels == "balanced":
            for name in ("N", "n_test"):
                if getattr(self, name) % 2:
                    raise ValueError(f"labels='balanced' needs an even {name}, got {getattr(self, name)}; "
                                     f"use an even {name} or labels='rademacher'")

    @property
    def noise_dims(self) -> int:
        """Coordinates a noise token occupies: s (sparse) or d − 1 (dense). E‖ξ‖² = σ_p²·noise_dims (α = 0)."""
        return self.s if self.noise == "sparse" else self.d - 1

    @property
    def snr(self) -> float:
        """‖μ‖ / (σ_p √s) (sparse) or ‖μ‖ / (σ_p √(d−1)) (dense): docs/math.md (13.4)."""
        return self.mu_norm / (self.sigma_p * math.sqrt(self.noise_dims))

    @property
    def snr_first_setting(self) -> float:
        """The same data in the first setting's convention ‖μ‖ / (σ_p √d) = snr·√(noise_dims/d): docs/math.md (13.5)."""
        return self.snr * math.sqrt(self.noise_dims / self.d)


@dataclass(frozen=True)
class LiModelConfig(_Config):
    """Widths, initialization and the two normalisations of the model of docs/math.md §13.2.

    Attributes (paper / inferred / ours as in ``LiDataConfig``)
    ----------
    m_k : query/key width, rows w_{Q,s}, w_{K,s} (ours: 10).   m_v : value rows per class (ours: 10).
    sigma0 : every entry of W_Q, W_K, W_V is N(0, σ₀²) at init (Gaussian inferred; σ₀ = 1e-3 ours).
    c_L : "sum" (ours, default: f sums over the L query tokens, c_L = 1) or "mean" (c_L = 1/L). docs/math.md (13.9).
    logit_scale : λ in Z = λ·QKᵀ (ours: 1.0, no 1/√m_k temperature).
    trained : the blocks the optimizers update, a non-empty tuple out of ("W_Q", "W_K", "W_V") (inferred: all three).
        The gradients of every block are always computed; the others stay at their init.
    """

    m_k: int = 10
    m_v: int = 10
    sigma0: float = 1e-3
    c_L: str = "sum"
    logit_scale: float = 1.0
    trained: tuple = BLOCKS

    def __post_init__(self):
        _positive_int("m_k", self.m_k)
        _positive_int("m_v", self.m_v)
        _scale("sigma0", self.sigma0)
        _choice("c_L", self.c_L, C_L)
        _scale("logit_scale", self.logit_scale)
        t = self.trained
        if isinstance(t, str) or not isinstance(t, (tuple, list)) or not t:
            raise ValueError(f"trained must be a non-empty tuple of block names out of {BLOCKS}, got {t!r}")
        bad = [b for b in t if b not in BLOCKS]
        if bad or len(set(t)) != len(t):
            raise ValueError(f"trained must hold distinct block names out of {BLOCKS}, got {tuple(t)!r}")
        object.__setattr__(self, "trained", tuple(b for b in BLOCKS if b in t))   # canonical order

    def c(self, L: int = L_TOKENS) -> float:
        """The query-aggregation constant c_L: 1 ("sum") or 1/L ("mean"). docs/math.md (13.9)."""
        return 1.0 if self.c_L == "sum" else 1.0 / L

    @property
    def frozen(self) -> frozenset:
        """The blocks the optimizers never update (those not in ``trained``)."""
        return frozenset(BLOCKS) - set(self.trained)
