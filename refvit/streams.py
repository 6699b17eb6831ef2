"""The random streams every experiment of every setting draws from (docs/math.md §1.2): independent generators
for the training data, the test data and the initialisation, derived from a base seed and a cell's key; and the
label flips both settings draw from the data stream."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Streams(NamedTuple):
    """Independent generators: changing the init scale never changes the data, and vice versa."""
    data: np.random.Generator
    test: np.random.Generator
    init: np.random.Generator


def streams(seed: int, *key: int) -> Streams:
    """Three independent generators derived from ``(seed, *key)``, e.g. ``streams(0, N, mu_norm, repeat)``.

    Each key gives the same numbers whatever else was run before it, so one cell of a sweep is reproducible alone.
    See docs/math.md §1.2.
    """
    parts = [seed, *key]
    bad = [p for p in parts if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)) or p < 0]
    if bad:   # int() would truncate a float silently: streams(1.7) must not be streams(1)
        raise ValueError(f"seed and keys must be non-negative integers, got {bad[0]!r} in {tuple(parts)!r}")
    parts = [int(p) for p in parts]
    data, test, init = np.random.SeedSequence(parts).spawn(3)
    return Streams(np.random.default_rng(data), np.random.default_rng(test), np.random.default_rng(init))


def cell_key(N: int, mu_norm: float, repeat: int = 0) -> tuple:
    """The stream key of run ``repeat`` of cell (N, ‖μ‖): ``streams(seed, *cell_key(N, mu, r))``.

    Every experiment of every setting keys its streams this way (sweeps, dynamics runs, demos, studies), so the same
    (seed, N, ‖μ‖, repeat) draws the same data and init everywhere. An integer ‖μ‖ is its own key; any other ‖μ‖
    is keyed by round(‖μ‖·10⁶) with a trailing tag 1, which no integer key can produce.
    """
    mu = float(mu_norm)
    if mu.is_integer():
        return (int(N), int(mu), int(repeat))
    return (int(N), int(round(mu * 1e6)), int(repeat), 1)


def flip_labels(y: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Flip exactly round(rate·n) labels chosen uniformly without replacement. Returns a new (n,) array."""
    y = y.copy()
    k = int(round(rate * y.shape[0]))
    if k:
        y[rng.choice(y.shape[0], size=k, replace=False)] *= -1   # y_i = −ỹ_i on F (math 1.5)
    return y
