"""The data model of the first setting (docs/math.md §1).

An image X ∈ ℝ^{M×d} has the signal token μ_y at position 0, the noise token ξ at position 1 and "other" tokens at
2..M-1. The model has no positional encoding, so positions are only a convention (docs/math.md (1.3), (5.1)).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from .config import DataConfig
from ..primitives import check_fits_in_memory, check_generator
from ..streams import Streams, flip_labels, streams  # noqa: F401  (the streams every experiment draws from)


class Dataset(NamedTuple):
    """Training and test sets. X: (N, M, d), y: (N,) in {±1}; X_test: (n_test, M, d), y_test: (n_test,).

    y_clean holds the training labels before any flip (``y != y_clean`` marks the flipped samples); the signal token
    of a flipped sample still follows its clean label (docs/math.md (1.5)). The test set is clean (docs/math.md §1.2).
    """
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mu_plus: np.ndarray
    mu_minus: np.ndarray
    y_clean: np.ndarray


def default_signals(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """μ₊ = ‖μ‖e₁ and μ₋ = ‖μ‖e₂, as in the authors' scripts (docs/math.md (1.2)). Shapes (d,), (d,)."""
    mu_plus = np.zeros(cfg.d)
    mu_minus = np.zeros(cfg.d)
    mu_plus[0] = cfg.mu_norm
    mu_minus[1] = cfg.mu_norm
    return mu_plus, mu_minus


def _check_signals(cfg: DataConfig, mu_plus, mu_minus) -> tuple[np.ndarray, np.ndarray]:
    mu_plus = np.asarray(mu_plus, dtype=np.float64)
    mu_minus = np.asarray(mu_minus, dtype=np.float64)
    for name, mu in (("mu_plus", mu_plus), ("mu_minus", mu_minus)):
        if mu.shape != (cfg.d,):
            raise ValueError(f"{name} must have shape (d,) = ({cfg.d},), got {mu.shape}")
        if not np.all(np.isfinite(mu)):
            raise ValueError(f"{name} contains NaN or inf")
    n_p, n_m = np.linalg.norm(mu_plus), np.linalg.norm(mu_minus)   # equal norms, orthogonal (math 1.2)
    # 1e-10 relative: the pair is given by the user, exact up to rounding of its construction.
    if abs(n_p - cfg.mu_norm) > 1e-10 * cfg.mu_norm or abs(n_m - cfg.mu_norm) > 1e-10 * cfg.mu_norm:
        raise ValueError(f"signals must both have norm mu_norm={cfg.mu_norm}, got {n_p:.6g} and {n_m:.6g}")
    if abs(mu_plus @ mu_minus) > 1e-10 * cfg.mu_norm**2:
        raise ValueError(f"signals must be orthogonal (docs/math.md (1.2)), got <μ₊, μ₋> = {mu_plus @ mu_minus:.3g}")
    return mu_plus, mu_minus


def _project_off(Z: np.ndarray, mu_plus: np.ndarray, mu_minus: np.ndarray) -> np.ndarray:
    """Remove the μ₊ and μ₋ components of every row of Z (..., d): covariance σ²(I − μ̂₊μ̂₊ᵀ − μ̂₋μ̂₋ᵀ)."""
    for mu in (mu_plus, mu_minus):
        e = mu / np.linalg.norm(mu)
        Z = Z - np.multiply.outer(Z @ e, e)   # Π x (math 1.4)
    return Z


def labels(cfg: DataConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """n labels in {±1}: alternating +1, -1 ("balanced", the authors' code) or i.i.d. Rademacher. Shape (n,)."""
    if cfg.labels == "balanced":
        return np.where(np.arange(n) % 2 == 0, 1.0, -1.0)   # ỹ_i = (−1)^i (math 1.5)
    return rng.choice(np.array([1.0, -1.0]), size=n)      # Rademacher (math 1.5)


def sample(cfg: DataConfig, n: int, rng: np.random.Generator, signals=None) -> tuple[np.ndarray, np.ndarray]:
    """Draw n clean samples from D (docs/math.md (1.3)). Returns X: (n, M, d) float64 and y: (n,) in {±1}.

    Draw order is fixed (labels, then noise token, then other tokens) so a seed always gives the same data.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    mu_plus, mu_minus = _check_signals(cfg, *(signals if signals is not None else default_signals(cfg)))
    y = labels(cfg, n, rng)
    X = np.empty((n, cfg.M, cfg.d))
    X[:, 0] = np.where(y[:, None] > 0, mu_plus, mu_minus)   # x_{i,0} = μ_{ỹ_i} (math 1.3)
    # The draws go straight into X, one contiguous block per sample, in the order of one (n, d) draw and then one
    # (n, M − 2, d) draw (a generator fills an array value after value, so the numbers are the same), and each block
    # is scaled in place while it is in cache: no temporary of their size, no second pass over X.
    for i in range(n):
        rng.standard_normal(out=X[i, 1])
        X[i, 1] *= cfg.sigma_p                                # ξ_i = σ_p g_{i,1} (math 1.3)
    if cfg.M > 2:
        if cfg.other_tokens == "weak_gaussian":
            for i in range(n):
                rng.standard_normal(out=X[i, 2:])
                X[i, 2:] *= cfg.sigma_w                       # σ_w g_{i,l} (math 1.3)
        else:
            X[:, 2:] = 0.0                                    # other_tokens="zero" (math 1.3)
    if cfg.project_noise:
        X[:, 1:] = _project_off(X[:, 1:], mu_plus, mu_minus)   # (math 1.4)
    return X, y


def dataset_bytes(cfg: DataConfig) -> int:
    """Bytes of the float64 arrays of one dataset: X (N, M, d) and X_test (n_test, M, d), plus as much again for the
    temporaries of their draws, which run at the same time (``make_dataset``)."""
    return 2 * 8 * (cfg.N + cfg.n_test) * cfg.M * cfg.d


def make_dataset(cfg: DataConfig, data_rng: np.random.Generator, test_rng: np.random.Generator,
                 signals=None) -> Dataset:
    """Training set (N samples, labels flipped at ``cfg.flip_rate``) and a clean test set (n_test samples).
    A size this machine cannot hold is refused before anything is allocated (``dataset_bytes``)."""
    if not isinstance(cfg, DataConfig):
        raise ValueError(f"cfg must be a DataConfig (refvit.DataConfig(...)), got {type(cfg).__name__}")
    check_generator("data_rng", data_rng)
    check_generator("test_rng", test_rng)
    check_fits_in_memory(dataset_bytes(cfg), f"a dataset of N={cfg.N}, n_test={cfg.n_test}, M={cfg.M}, d={cfg.d}",
                         "reduce N, n_test, M or d")
    mu_plus, mu_minus = _check_signals(cfg, *(signals if signals is not None else default_signals(cfg)))
    signals = (mu_plus, mu_minus)
    # A test set with a stream of its own is drawn by a second thread while this one draws the training set (numpy's
    # generators release the GIL while they fill an array): the same numbers in less wall time on a free core. One
    # stream shared by both is drawn here, in order: training set, label flips, test set.
    own_stream = test_rng.bit_generator is not data_rng.bit_generator
    with ThreadPoolExecutor(max_workers=1) as pool:
        test = pool.submit(sample, cfg, cfg.n_test, test_rng, signals) if own_stream else None   # clean (math §1.2)
        X, y_clean = sample(cfg, cfg.N, data_rng, signals)
        y = flip_labels(y_clean, cfg.flip_rate, data_rng)         # (math 1.5)
        X_test, y_test = test.result() if own_stream else sample(cfg, cfg.n_test, test_rng, signals)
    return Dataset(X, y, X_test, y_test, mu_plus, mu_minus, y_clean)
