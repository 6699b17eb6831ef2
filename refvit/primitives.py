"""The ground every setting stands on: stable loss and softmax primitives, input checks, the ``Evaluation`` that the
shared trainer receives from a model, and the overflow report.

Nothing here knows a model. Each setting's reference file (``refvit.jiang2024.model`` for the first setting,
``refvit.li2025.model`` for the second) builds on these, so the loss, its derivative and the softmax are written once.
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np
from scipy.special import expit


class Evaluation(NamedTuple):
    """One evaluation of the training objective: what the training loop needs at each step."""
    loss: float          # mean logistic loss L
    grads: tuple         # gradient of L with respect to the state, the same NamedTuple type as the state
    f: np.ndarray        # (n,) outputs on the training set
    cache: Any           # the model's forward intermediates (for the history and the trackers)


def check_generator(name: str, rng) -> np.random.Generator:
    """``rng`` if it is a numpy Generator, else a one-line ValueError naming the argument."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{name} must be a numpy.random.Generator (e.g. from refvit.streams.streams(seed)), "
                         f"got {type(rng).__name__}")
    return rng


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def check_fits_in_memory(nbytes: float, what: str, change: str) -> None:
    """Refuse, before allocating, arrays of ``nbytes`` that this machine's physical memory cannot hold: a one-line
    ValueError saying how much ``what`` needs, how much there is, and what to ``change``."""
    total = physical_memory()
    if total is not None and nbytes > total:
        raise ValueError(f"{what} needs about {nbytes / 2**30:.3g} GiB of arrays but this machine has "
                         f"{total / 2**30:.3g} GiB of memory; {change}")


def all_finite(a: np.ndarray) -> bool:
    """Whether every entry of the float array ``a`` is finite, in one read of it. A finite sum is proof (a NaN or ±inf
    entry makes the sum NaN or ±inf); only a sum that is not finite, which finite entries can also give by overflow,
    has its entries looked at one by one."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(a.sum()) or np.all(np.isfinite(a)))


def as_float_array(name: str, a, ndim: int) -> np.ndarray:
    """Return ``a`` as a C-contiguous float64 array of the given ndim, or raise a ValueError saying what to change."""
    arr = np.asarray(a)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"{name} has an empty dimension, shape {arr.shape}; every size must be positive")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not all_finite(arr):
        raise ValueError(f"{name} contains NaN or inf; check the data or the step size that produced it")
    return arr


def check_batch(X, d: int, y=None):
    """X as (n, tokens, d) float64 whose token dimension is the model's d, and, if given, y (n,) with entries ±1.
    Returns X or (X, y); a one-line ValueError says what to change."""
    X = as_float_array("X", X, 3)
    if X.shape[2] != d:
        raise ValueError(f"X has token dimension {X.shape[2]} but W_Q expects d = {d}")
    if y is None:
        return X
    y = as_float_array("y", y, 1)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape (n,) = ({X.shape[0]},), got {y.shape}")
    if not np.all(np.abs(y) == 1):
        raise ValueError("labels y must be +1 or -1")
    return X, y


def halves_of_one(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """The C-contiguous buffer (r, 2c) whose left and right halves are the views a and b (r, c), or None.

    An objective may keep two blocks of its state side by side so that one matrix product serves both; elementwise
    work (an update, a finiteness check) is then one pass over the buffer instead of two strided ones, with the
    same numbers."""
    buf = getattr(a, "base", None)
    if (not isinstance(buf, np.ndarray) or buf is not getattr(b, "base", None) or a.ndim != 2 or buf.ndim != 2
            or not buf.flags.c_contiguous or a.shape != b.shape or buf.shape != (a.shape[0], 2 * a.shape[1])
            or a.dtype != buf.dtype or b.dtype != buf.dtype or a.strides != buf.strides or b.strides != buf.strides):
        return None
    start = buf.ctypes.data
    if a.ctypes.data != start or b.ctypes.data != start + buf.itemsize * a.shape[1]:
        return None
    return buf


def merge_halves(arrays) -> list:
    """``arrays`` with every two neighbours that are the halves of one buffer (``halves_of_one``) replaced by it."""
    arrays, out, k = list(arrays), [], 0
    while k < len(arrays):
        buf = halves_of_one(arrays[k], arrays[k + 1]) if k + 1 < len(arrays) else None
        out.append(arrays[k] if buf is None else buf)
        k += 1 if buf is None else 2
    return out


def softmax(Z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (docs/math.md (2.4)); subtracting the row max changes nothing (docs/math.md (3.5))
    but prevents overflow."""
    E = np.exp(Z - Z.max(axis=-1, keepdims=True))
    return E / E.sum(axis=-1, keepdims=True)


def logistic_loss(margins: np.ndarray) -> np.ndarray:
    """ℓ(z) = log(1 + e^{-z}) as logaddexp(0, -z): no overflow, no lost digits (docs/math.md (3.1))."""
    return np.logaddexp(0.0, -margins)


def logistic_loss_derivative(margins: np.ndarray) -> np.ndarray:
    """ℓ'(z) = -1 / (1 + e^{z}) = -expit(-z) ∈ (-1, 0), stable for any z (docs/math.md (3.2))."""
    return -expit(-margins)


def mean_loss(f: np.ndarray, y: np.ndarray) -> float:
    """L = (1/n) Σ_i ℓ(y_i f_i), the training objective L_S of docs/math.md (3.3)."""
    return float(np.mean(logistic_loss(y * f)))


def dloss_df(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dL/df_i = ℓ'(y_i f_i) y_i / n for L = (1/n) Σ_i ℓ(y_i f_i) (docs/math.md (4.1)). Shape (n,)."""
    return logistic_loss_derivative(y * f) * y / f.shape[0]


class ModelOverflow(ValueError):
    """The forward pass on finite inputs gave a non-finite value: the scale of the data or the weights is too large
    for float64 (not a step-size problem: no update was taken)."""


def overflow_scales(X: np.ndarray, f: np.ndarray, cache=None) -> str:
    """The scales that make a forward pass overflow: max token norm of X, max |logit| (a cache field ``Z``) and
    max |f|."""
    def biggest(a) -> str:
        a = np.abs(np.asarray(a))
        n_nan = int(np.isnan(a).sum())
        return f"{np.max(a, initial=0.0, where=~np.isnan(a)):.3g}" + (f" ({n_nan} NaN)" if n_nan else "")

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        peak = np.max(np.abs(X), axis=-1, keepdims=True)            # norms without overflow: ‖x‖ = m·‖x/m‖
        norms = peak[..., 0] * np.linalg.norm(np.divide(X, peak, out=np.zeros_like(X), where=peak > 0), axis=-1)
        parts = [f"max token norm {biggest(norms)}"]
        if cache is not None and getattr(cache, "Z", None) is not None:
            parts.append(f"max |logit| {biggest(cache.Z)}")
        parts.append(f"max |f| {biggest(f)}")
    return ", ".join(parts)


def check_forward_finite(X: np.ndarray, f: np.ndarray, cache=None, what: str = "X") -> None:
    """Raise ``ModelOverflow`` naming the scales when the forward pass on finite ``X`` gave a non-finite f."""
    if not np.all(np.isfinite(f)):
        raise ModelOverflow(f"the model overflowed in float64 on {what} (finite inputs, non-finite output): "
                            f"{overflow_scales(X, f, cache)}; reduce the scale of the data or of the weights")


def check_evaluation_finite(X: np.ndarray, f: np.ndarray, cache, loss: float, grads) -> None:
    """``check_forward_finite``, then raise ``ModelOverflow`` naming the scales when the loss or a gradient block
    is not finite (finite inputs: the scale of the data or of the weights, not a step size)."""
    check_forward_finite(X, f, cache)
    if not (np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads)):
        raise ModelOverflow(f"the loss or its gradient overflowed in float64 (finite inputs): "
                            f"{overflow_scales(X, f, cache)}; reduce the scale of the data or of the weights")
