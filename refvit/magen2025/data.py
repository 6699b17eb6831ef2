"""The data law of the third setting (docs/math.md §16.1): one class signal token and M − 1 Gaussian noise tokens.

μ₁ (class +1) and μ₂ (class −1) are orthogonal with norm ρ. Noise is a standard Gaussian draw times σ, projected off
span{μ₁, μ₂}: its covariance is σ²(I − μ₁μ₁ᵀ/ρ² − μ₂μ₂ᵀ/ρ²) (docs/math.md (16.2)) at O(n·M·d) cost, never a d×d
matrix. Random streams come from ``refvit.streams.streams(seed, *key)``: the data, test and init generators are
independent, so changing the init never changes the data.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..streams import flip_labels
from .config import MagenDataConfig


class MagenSample(NamedTuple):
    """n clean samples. X (n, M, d); y (n,) in {±1}; signal_pos (n,) int in [0, M) (the others are noise)."""
    X: np.ndarray
    y: np.ndarray
    signal_pos: np.ndarray


class MagenDataset(NamedTuple):
    """Training set (N samples, labels flipped at ``flip_rate``) and a clean test set (n_test samples).

    X (N, M, d), y (N,), X_test (n_test, M, d), y_test (n_test,), mu (2, d) with mu[0] = μ₁ (class +1) and
    mu[1] = μ₂ (class −1), signal_pos (N,), signal_pos_test (n_test,), y_clean (N,): the labels before flips
    (``y != y_clean`` marks the flipped samples; their signal token is μ of y_clean).
    """
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mu: np.ndarray
    signal_pos: np.ndarray
    signal_pos_test: np.ndarray
    y_clean: np.ndarray


def _check_cfg(cfg) -> None:
    if not isinstance(cfg, MagenDataConfig):
        raise ValueError(f"cfg must be a MagenDataConfig, got {type(cfg).__name__}")


def _check_rng(name: str, rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{name} must be a numpy.random.Generator (e.g. from refvit.streams.streams(seed)), "
                         f"got {type(rng).__name__}")


def signals(cfg: MagenDataConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    """μ (2, d): rows μ₁ = ρe₀, μ₂ = ρe₁ ("coordinate"), or ρ times an orthonormal pair drawn from ``rng``
    ("random", by QR of a (d, 2) Gaussian) (docs/math.md (16.1))."""
    _check_cfg(cfg)
    if cfg.signals == "coordinate":
        return cfg.rho * np.eye(2, cfg.d)
    _check_rng("rng", rng)
    Qm, _ = np.linalg.qr(rng.standard_normal((cfg.d, 2)))      # (d, 2) orthonormal columns
    return cfg.rho * Qm.T


def project_off(G: np.ndarray, mu: np.ndarray, rho: float) -> np.ndarray:
    """G − Σ_j ⟨G, μ_j⟩ μ_j / ρ² for G (..., d), mu (2, d) orthogonal with norm ρ: the projection of (16.2)."""
    return G - ((G @ mu.T) / rho ** 2) @ mu


def sample(cfg: MagenDataConfig, n: int, rng: np.random.Generator, mu: np.ndarray) -> MagenSample:
    """Draw n clean samples with signals ``mu`` (2, d) (docs/math.md (16.1)–(16.2)). Returns a ``MagenSample``.

    Draw order is fixed (labels, noise, signal positions) so a seed always gives the same data.
    """
    _check_cfg(cfg)
    _check_rng("rng", rng)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    M, d = cfg.M, cfg.d
    y = rng.choice(np.array([1.0, -1.0]), size=n)                            # Rademacher  (math 16.3)
    xi = project_off(cfg.sigma * rng.standard_normal((n, M - 1, d)), mu, cfg.rho)   # (n, M−1, d)  (math 16.2)
    if cfg.signal_position == "fixed":
        pos = np.zeros(n, dtype=np.int64)                                   # token 0 signal
    else:
        pos = rng.integers(0, M, size=n)                                    # uniform over the M tokens
    X = np.empty((n, M, d))                                                 # (n, M, d)
    rows = np.arange(n)
    X[rows, pos] = np.where((y > 0)[:, None], mu[0], mu[1])                 # x_{i,p_i} = μ_{y_i}  (math 16.1)
    others = (np.arange(M)[None, :] != pos[:, None])                        # (n, M) the noise positions
    X[others] = xi.reshape(n * (M - 1), d)                                  # in token order  (math 16.1)
    return MagenSample(X, y, pos)


def flip(y: np.ndarray, cfg: MagenDataConfig, rng: np.random.Generator) -> np.ndarray:
    """Training labels after flips (docs/math.md (16.3)): "iid" flips each with probability η, "exact" flips exactly
    round(η·N) chosen uniformly (``refvit.streams.flip_labels``). Returns a new (n,) array."""
    if cfg.flips == "exact":
        return flip_labels(y, cfg.flip_rate, rng)
    return np.where(rng.random(y.shape[0]) < cfg.flip_rate, -y, y)


def make_dataset(cfg: MagenDataConfig, data_rng: np.random.Generator, test_rng: np.random.Generator) -> MagenDataset:
    """Training set from ``data_rng`` (signals first, then samples, then flips) and a clean test set from
    ``test_rng`` with the same signals (docs/math.md (16.1)–(16.3)). Returns a ``MagenDataset``."""
    _check_cfg(cfg)
    _check_rng("data_rng", data_rng)
    _check_rng("test_rng", test_rng)
    mu = signals(cfg, data_rng)
    train = sample(cfg, cfg.N, data_rng, mu)
    y = flip(train.y, cfg, data_rng)
    test = sample(cfg, cfg.n_test, test_rng, mu)                            # clean  (math 16.3)
    return MagenDataset(train.X, y, test.X, test.y, mu, train.signal_pos, test.signal_pos, train.y)
