"""How two implementations' numbers are compared: one relative error per block, and per trajectory step.

``block_error`` is ``refvit.gradcheck.compare_error``; ``trajectory_error`` measures against the displacement from
the start (see ``TRAJ_FLOOR``); ``grad_zero_level`` is the level below which a gradient block counts as zero.
"""
from __future__ import annotations

import math

import numpy as np

from ..gradcheck import compare_error
from ..jiang2024.model import Params
from .cases import TRAJ_FLOOR


def block_error(yours, ref, zero: float = 0.0) -> float:
    """max|yours − ref| / max(max|yours|, max|ref|); inf on NaN, inf or a shape mismatch.

    Relative to the block's largest entry, so a near-zero entry does not dominate. When both blocks are zero up to
    ``zero`` (every entry |·| ≤ zero, e.g. dW_Q at M = 1 computed as rounding noise) the error is 0. This is
    ``refvit.gradcheck.compare_error`` under the name the reports use.
    """
    return compare_error(yours, ref, zero)


def grad_zero_level(dtype: str, *grads: Params) -> float:
    """The zero level (``zero`` of ``block_error``) of the gradient blocks: 100 ulps of the largest entry of any gradient block. A block that is
    exactly 0 mathematically (dW_Q at M = 1, or under a softmax over queries) comes out as rounding noise of the
    intermediate terms, measured ≤ 1e-16 × that entry. Even in float32 the level (1.2e-5 of the largest block)
    stays ≥ 60× below every block that is not exactly zero (smallest: dW_Q in "tiny_init", 8e-4 of the largest)."""
    return 100 * float(np.finfo(dtype).eps) * max(float(np.max(np.abs(b))) for g in grads for b in g)


def trajectory_error(yours: np.ndarray, ref: np.ndarray, start: np.ndarray) -> float:
    """Displacement-relative error of one parameter block at one step (see ``TRAJ_FLOOR``)."""
    a, b, s = (np.asarray(x, dtype=np.float64) for x in (yours, ref, start))
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.inf       # NaN or inf on either side fails (max(0.0, nan) would be 0.0)
    diff = float(np.max(np.abs(a - b), initial=0.0))
    if diff == 0.0:
        return 0.0
    scale = max(float(np.max(np.abs(a - s))), float(np.max(np.abs(b - s))), TRAJ_FLOOR * float(np.max(np.abs(b))))
    return diff / scale



def match_error(yours, predicted, zero: float = 0.0) -> float:
    """``block_error`` for comparing you with a mutant's prediction: NaN and inf must sit at the same entries with
    the same values (a mutant that overflows predicts where you overflow), then the finite entries are compared."""
    a, b = np.asarray(yours, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not (np.array_equal(fa, fb) and np.array_equal(np.isnan(a), np.isnan(b)) and np.all(a[~fa & ~np.isnan(a)]
                                                                                          == b[~fb & ~np.isnan(b)])):
        return math.inf
    if np.all(fa):
        return block_error(a, b, zero)
    return block_error(a[fa], b[fb], zero) if np.any(fa) else 0.0


def uniform_factor(yours, ref, tol: float):
    """c when ``yours`` is c × ``ref`` within ``tol`` (relative to the block's largest entry), else None.

    c is the least-squares factor ⟨yours, ref⟩ / ⟨ref, ref⟩; None also for a non-finite or zero block."""
    a, b = np.asarray(yours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return None
    bb = float(np.sum(b * b))
    if bb == 0.0:
        return None
    c = float(np.sum(a * b)) / bb
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))))
    if c == 0.0 or float(np.max(np.abs(a - c * b))) > tol * scale:
        return None
    return c


def describe_values(a) -> str:
    """"shape (4,), dtype float32" plus how many entries are NaN and how many ±inf (never one for the other)."""
    a = np.asarray(a)
    text = f"shape {a.shape}, dtype {a.dtype}"
    if np.issubdtype(a.dtype, np.floating):
        nan, pinf, ninf = int(np.sum(np.isnan(a))), int(np.sum(a == np.inf)), int(np.sum(a == -np.inf))
        parts = [f"{k} NaN" if k else "" for k in (nan,)] + [f"{pinf} +inf" if pinf else "",
                                                             f"{ninf} −inf" if ninf else ""]
        parts = [p for p in parts if p]
        if parts:
            text += f", {' and '.join(parts)} of {a.size} entries"
    return text


def rounding_budget(traj, grads, lr: float, u: float, eps_grad: float) -> list[np.ndarray]:
    """Per step t = 1 … T and per block, the float32 rounding an exact update accumulates (docs/crosscheck.md,
    "Tolerances"): Σ_{s<t} (u·max|θ_{s+1}| + eps_grad·lr·max|g_s|), one row of four numbers per step.

    ``traj``: the reference iterates θ_1 … θ_T (``Params``); ``grads``: the reference gradients g_0 … g_{T-1}.
    """
    total = np.zeros(4)
    out = []
    for p, g in zip(traj, grads):
        total = total + np.array([u * float(np.max(np.abs(a))) + eps_grad * lr * float(np.max(np.abs(b)))
                                  for a, b in zip(p, g)])
        out.append(total.copy())
    return out
