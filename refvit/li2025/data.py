"""The data law of the second setting (docs/math.md §13.1): a signal token y·μ and a sparse noise token ξ per sample.

μ = ‖μ‖e₀ lives on coordinate 0 and the noise on coordinates 1..d−1, so ⟨μ, ξ⟩ = 0 exactly unless the feature-noise
term α is switched on. Random streams come from ``refvit.streams.streams(seed, *key)`` as in the first setting: the
data, test and init generators are independent, so changing the init never changes the data.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..primitives import check_fits_in_memory, check_generator
from ..streams import flip_labels
from .config import L_TOKENS, LiDataConfig


class LiSample(NamedTuple):
    """n clean samples. X (n, 2, d); y (n,) in {±1}; signal_pos (n,) int in {0, 1} (the noise token is
    1 − signal_pos); support (n, s) int, sorted, the noise coordinates of each sample (None for dense noise)."""
    X: np.ndarray
    y: np.ndarray
    signal_pos: np.ndarray
    support: np.ndarray | None


class LiDataset(NamedTuple):
    """Training set (N samples, labels flipped at ``flip_rate``) and a clean test set (n_test samples).

    X (N, 2, d), y (N,), X_test (n_test, 2, d), y_test (n_test,), mu (d,) = ‖μ‖e₀, signal_pos (N,) and
    signal_pos_test (n_test,) in {0, 1}, y_clean (N,): the labels before flips (``y != y_clean`` marks the flipped
    samples; their signal token follows y_clean), support (N, s) and support_test (n_test, s): the sorted noise
    coordinates (None for dense noise).
    """
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mu: np.ndarray
    signal_pos: np.ndarray
    signal_pos_test: np.ndarray
    y_clean: np.ndarray
    support: np.ndarray | None
    support_test: np.ndarray | None


def _check_cfg(cfg) -> None:
    if not isinstance(cfg, LiDataConfig):
        raise ValueError(f"cfg must be a LiDataConfig, got {type(cfg).__name__}")


_check_rng = check_generator      # one rule for both settings (refvit.primitives)


def signal(cfg: LiDataConfig) -> np.ndarray:
    """μ = ‖μ‖e₀ (d,): the signal vector on coordinate 0 (docs/math.md (13.1))."""
    _check_cfg(cfg)
    mu = np.zeros(cfg.d)
    mu[0] = cfg.mu_norm
    return mu


def sample(cfg: LiDataConfig, n: int, rng: np.random.Generator) -> LiSample:
    """Draw n clean samples (docs/math.md (13.1)–(13.3)). Returns a ``LiSample``.

    Draw order is fixed (labels, noise supports, noise values, signal positions) so a seed always gives the same
    data. Sparse noise draws one s-subset of {1..d−1} per sample: O(n·d) work and memory, never a d×d array.
    """
    _check_cfg(cfg)
    _check_rng("rng", rng)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    d = cfg.d
    if cfg.labels == "balanced":
        y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)                 # ỹ_i = (−1)^i  (math 13.3)
    else:
        y = rng.choice(np.array([1.0, -1.0]), size=n)                 # Rademacher  (math 13.3)
    xi = np.zeros((n, d))                                              # (n, d) noise tokens
    if cfg.noise == "sparse":
        # S_i: s coordinates of {1..d−1} uniform without replacement, one subset per sample  (math 13.2)
        support = np.sort(np.stack([1 + rng.choice(d - 1, size=cfg.s, replace=False) for _ in range(n)]), axis=1)
        xi[np.arange(n)[:, None], support] = cfg.sigma_p * rng.standard_normal((n, cfg.s))   # (math 13.2)
    else:
        support = None
        xi[:, 1:] = cfg.sigma_p * rng.standard_normal((n, d - 1))     # dense: every coordinate but 0  (math 13.2)
    mu = signal(cfg)
    if cfg.alpha:
        xi -= cfg.alpha * y[:, None] * mu                             # ξ ← ξ − α ỹ μ  (math 13.2)
    if cfg.signal_position == "fixed":
        pos = np.zeros(n, dtype=np.int64)                             # token 0 signal, token 1 noise
    else:
        pos = rng.integers(0, 2, size=n)                              # per sample, uniform on {0, 1}
    X = np.empty((n, L_TOKENS, d))                                    # (n, 2, d)
    rows = np.arange(n)
    X[rows, pos] = y[:, None] * mu                                    # x_{i,p_i} = ỹ_i μ  (math 13.1)
    X[rows, 1 - pos] = xi                                             # x_{i,1−p_i} = ξ_i  (math 13.1)
    return LiSample(X, y, pos, support)


def make_dataset(cfg: LiDataConfig, data_rng: np.random.Generator, test_rng: np.random.Generator) -> LiDataset:
    """Training set from ``data_rng`` (labels flipped at ``cfg.flip_rate`` after the draw) and a clean test set
    from ``test_rng`` (docs/math.md (13.1)–(13.3)). Returns a ``LiDataset``."""
    _check_cfg(cfg)
    _check_rng("data_rng", data_rng)
    _check_rng("test_rng", test_rng)
    check_fits_in_memory(16 * (cfg.N + cfg.n_test) * L_TOKENS * cfg.d, f"a dataset of N={cfg.N}, "
                         f"n_test={cfg.n_test}, d={cfg.d}", "reduce N, n_test or d")   # X and one draw of its size
    train = sample(cfg, cfg.N, data_rng)
    y = flip_labels(train.y, cfg.flip_rate, data_rng)                 # exactly round(pN) flips  (math 13.3)
    test = sample(cfg, cfg.n_test, test_rng)                          # clean  (math 13.3)
    return LiDataset(train.X, y, test.X, test.y, signal(cfg), train.signal_pos, test.signal_pos, train.y,
                     train.support, test.support)
