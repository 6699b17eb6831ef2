"""Gradient checking, usable on any callable (ours, or a user's PyTorch/JAX wrapper).

All arithmetic is float64. Central differences with h = 1e-5 have truncation error O(h²) and rounding error
O(ε/h), both near 1e-10 relative on O(1) problems; the optimum h is about ε^{1/3} ≈ 6e-6.

Three checks need no second implementation of the gradient, only the function (or the gradient at other points):
``taylor_check`` (the first-order Taylor remainder shrinks as h²), ``hessian_symmetry_check`` (the derivative of the
gradient is a symmetric matrix) and ``complex_step_check`` (a derivative without subtraction, for complex-safe code).
They take x as one float64 array or a tuple of them (e.g. ``refvit.Params``); the gradient has the same structure,
and ``fun`` / ``grad_fun`` receive that structure.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

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


# ---------------------------------------------------------------------------------------------------------------
# Checks that need no second implementation. x: one float64 array or a tuple of them; directions have its structure.
# ---------------------------------------------------------------------------------------------------------------

def _blocks(x, what: str = "x") -> tuple:
    """The arrays of ``x`` (an array, or a tuple of arrays), checked to be float64."""
    blocks = tuple(x) if isinstance(x, tuple) else (x,)
    for b in blocks:
        if not (isinstance(b, np.ndarray) and b.dtype == np.float64):
            raise ValueError(f"{what} must be a float64 array or a tuple of them, got {getattr(b, 'dtype', type(b))}")
    return blocks


def _like(x, blocks):
    """``blocks`` in the structure of ``x``: the array itself, a tuple, or the same NamedTuple type."""
    if not isinstance(x, tuple):
        return blocks[0]
    return type(x)(*blocks) if hasattr(x, "_fields") else tuple(blocks)


def _dot(a, b) -> float:
    """⟨a, b⟩ summed over every entry of every block (real: no conjugation)."""
    return float(sum(np.sum(p * q) for p, q in zip(_blocks(a), _blocks(b))))


def _step(x, t, v):
    """x + t·v block by block (t may be complex)."""
    return _like(x, [a + t * b for a, b in zip(_blocks(x), _blocks(v))])


def _direction(x, rng: np.random.Generator):
    """A random direction with the structure of x, of unit norm over all its entries."""
    v = [rng.standard_normal(b.shape) for b in _blocks(x)]
    norm = math.sqrt(sum(float(np.sum(b * b)) for b in v))
    return _like(x, [b / norm for b in v])


def _check_grad(grad, x):
    g, xb = _blocks(grad, "grad"), _blocks(x)
    if [b.shape for b in g] != [b.shape for b in xb]:
        raise ValueError(f"grad must have the shapes of x {[b.shape for b in xb]}, got {[b.shape for b in g]}")


class Taylor(NamedTuple):
    """What ``taylor_check`` measured: steps h (k,), remainders |r(h)| (k,), which steps the fit used (k,) bool,
    the least-squares slope of log|r| on log h over them, how many decades of h they span, and the verdict."""
    h: np.ndarray
    r: np.ndarray
    used: np.ndarray
    slope: float
    decades: float
    passed: bool


def taylor_check(fun: Callable, grad, x, rng: np.random.Generator, h_max: float = 1e-1, n_decades: int = 8,
                 noise: float = 3e-14, tol: float = 0.2, decades: float = 2.0) -> Taylor:
    """The Taylor remainder r(h) = fun(x + h v) − fun(x) − h⟨grad, v⟩ must shrink as h², along a random unit v.

    A correct gradient leaves r(h) = ½ h² vᵀ∇²fun v + O(h³): slope 2 on log–log axes. A wrong one leaves a term
    h⟨∇fun − grad, v⟩, which wins as h shrinks: the slope falls towards 1. Steps: h = h_max·10^(−k/2) for
    k = 0 … 2·n_decades.
    Which decades count is chosen from the data: rounding spoils r(h) once |r| falls to ``noise`` times the size of
    the terms it is computed from, max(|fun(x)|, |fun(x + hv)|, |h⟨grad, v⟩|), so the steps from the largest down to
    the first such one are usable, and the fit takes the smallest ``decades`` decades of those: the O(h³) term is
    weakest there and a gradient error strongest. noise = 3e-14 is ~135 ε: an O(1) function evaluated in float64 to
    a few ε has r within ~2 % there, which moves a slope fitted over two decades by ≤ 0.01; raise it for functions
    evaluated less accurately (float32 inside, very long sums). Passes when the fitted steps span ``decades`` and
    |slope − 2| ≤ ``tol``; the O(h³) term moves a correct gradient's slope most along directions of small
    curvature (tests/test_gradcheck.py measures how far on refvit's model). h_max = 0.1 suits x and fun of order
    one: for other scales, pass an h_max at which r(h) is well above rounding. A v along which fun is nearly linear
    leaves too few decades or a slope near 3: draw another.

    fun: x -> float; grad: the gradient at x, the structure of x. Returns a ``Taylor``.
    """
    _check_grad(grad, x)
    if not (h_max > 0 and n_decades >= decades > 0 and noise > 0 and tol > 0):
        raise ValueError("need h_max > 0, noise > 0, tol > 0 and n_decades ≥ decades > 0")
    v = _direction(x, rng)
    f0, gv = float(fun(x)), _dot(grad, v)
    h = h_max * 10.0 ** (-np.arange(2 * n_decades + 1) / 2)
    r, floor = np.empty_like(h), np.empty_like(h)
    for k, t in enumerate(h):
        ft = float(fun(_step(x, t, v)))
        r[k] = abs(ft - f0 - t * gv)
        floor[k] = noise * max(abs(f0), abs(ft), abs(t * gv))
    above = np.isfinite(r) & (r > floor)
    used = np.cumprod(above).astype(bool)          # from the largest h down to the first one lost in rounding
    if used.any():                                 # keep the smallest ``decades`` of them: the O(h³) term is least
        used &= h <= h[used].min() * 10 ** (decades + 1e-9)
    span = float(np.log10(h[used].max() / h[used].min())) if used.any() else 0.0
    if used.sum() < 2:
        return Taylor(h, r, used, math.nan, span, False)
    slope = float(np.polyfit(np.log10(h[used]), np.log10(r[used]), 1)[0])
    return Taylor(h, r, used, slope, span, span >= decades - 1e-9 and abs(slope - 2) <= tol)


def hessian_symmetry_check(grad_fun: Callable, x, rng: np.random.Generator, eps: float = 1e-5) -> tuple[float, float]:
    """⟨u, grad(x + εv) − grad(x − εv)⟩ / 2ε and ⟨v, grad(x + εu) − grad(x − εu)⟩ / 2ε for random unit u, v.

    Both estimate uᵀ∇²fun v, equal when grad_fun is the gradient of some function (the Hessian is symmetric).
    A transposed, mis-signed or mis-scaled block makes the derivative of grad_fun non-symmetric; a factor common to
    every block does not (use ``taylor_check`` for that). Central differences: error O(ε²) + O(ε_mach/ε), ~1e-10
    relative at ε = 1e-5 on O(1) problems. grad_fun: x -> gradient (the structure of x). Returns the two numbers;
    compare them with ``rel_error``.
    """
    u, v = _direction(x, rng), _direction(x, rng)
    gu = [p - m for p, m in zip(_blocks(grad_fun(_step(x, eps, u)), "grad"), _blocks(grad_fun(_step(x, -eps, u))))]
    gv = [p - m for p, m in zip(_blocks(grad_fun(_step(x, eps, v)), "grad"), _blocks(grad_fun(_step(x, -eps, v))))]
    return _dot(u, tuple(gv)) / (2 * eps), _dot(v, tuple(gu)) / (2 * eps)


def complex_step_check(fun: Callable, grad, x, rng: np.random.Generator, h: float = 1e-30) -> tuple[float, float]:
    """⟨grad, v⟩ and Im fun(x + i h v) / h along a random unit v: the second is the directional derivative.

    For fun analytic in each entry, fun(x + ihv) = fun(x) + ih⟨∇fun, v⟩ + O(h²): the imaginary part is the
    derivative with no subtraction, so h can be tiny and the result is exact to rounding (~1e-15 relative to
    ‖∇fun‖); h = 1e-30 makes the O(h²) term vanish in float64. fun must be *complex-safe*: written only with
    operations that extend analytically to complex input. Arithmetic, @, sums, exp, log, log1p, sqrt, sin, tanh
    and a softmax or log-sum-exp that subtracts its row maximum are safe (the shift cancels whatever its value,
    docs/math.md (3.5), complex shifts included, so the max being non-analytic does no harm). Not safe: np.abs (use ``np.where(z.real < 0, -z, z)``), np.logaddexp and
    scipy.special.expit (they refuse complex input; use log1p(exp(−z)), with the halves z.real ≥ 0 and < 0 written
    separately if |z| can be large), np.sign, np.linalg.norm, np.vdot and .conj() (they conjugate or take moduli;
    use sum(a * b)), and anything that casts to float. fun: complex x -> complex scalar; grad: the gradient at x.
    Returns (analytic, numeric).
    """
    _check_grad(grad, x)
    v = _direction(x, rng)
    return _dot(grad, v), float(np.imag(fun(_step(x, 1j * h, v)))) / h
