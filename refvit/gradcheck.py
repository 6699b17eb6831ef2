"""Finite-difference gradient checking, usable on any callable (ours, or a user's PyTorch/JAX wrapper).

All arithmetic is float64. Central differences with h = 1e-5 have truncation error O(h²) and rounding error
O(ε/h), both near 1e-10 relative on O(1) problems; the optimum h is about ε^{1/3} ≈ 6e-6.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np


def rel_error(a, b, floor: float = 1e-12) -> float:
    """max|a − b| / max(max|a|, max|b|, floor): relative to the larger array's scale, so tiny entries don't dominate."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)), floor)
    return float(np.max(np.abs(a - b), initial=0.0)) / scale


def numerical_grad(fun: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central-difference gradient of scalar ``fun`` at float64 array ``x`` (perturbed in place, always restored)."""
    if x.dtype != np.float64:
        raise ValueError(f"x must be float64 for a meaningful finite difference, got {x.dtype}")
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so it can be perturbed in place")
    for k in range(flat.size):
        old = flat[k]
        try:
            flat[k] = old + h
            fp = fun(x)
            flat[k] = old - h
            fm = fun(x)
        finally:
            flat[k] = old
        gflat[k] = (fp - fm) / (2 * h)
    return grad


def directional_check(fun: Callable[[np.ndarray], float], grad: np.ndarray, x: np.ndarray,
                      rng: np.random.Generator, h: float = 1e-5) -> tuple[float, float]:
    """Compare ⟨grad, v⟩ with (fun(x + h v) − fun(x − h v)) / 2h along one random unit direction v.

    One direction costs two evaluations whatever the size of x (the JAX ``check_grads`` approach).
    Returns (analytic, numeric); compare them with ``rel_error``.
    """
    v = rng.standard_normal(x.shape)
    v /= np.linalg.norm(v)
    return float(np.sum(grad * v)), (fun(x + h * v) - fun(x - h * v)) / (2 * h)


def compare_error(a, b, zero: float = 0.0) -> float:
    """``rel_error`` for comparing two implementations' outputs, which must not raise on bad output.

    max|a − b| / max(max|a|, max|b|) as ``rel_error``, but inf (instead of an exception or NaN) when the shapes
    differ or either array holds NaN or inf, and 0 when both arrays are zero up to ``zero`` (every entry
    |·| ≤ zero, e.g. a gradient block that is 0 mathematically and comes out as rounding noise).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.inf
    if max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0))) <= zero:
        return 0.0
    return rel_error(a, b, floor=zero)   # the scale exceeds ``zero``, so the floor does not bind
