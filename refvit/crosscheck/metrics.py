"""How two implementations' numbers are compared: one relative error per block, and per trajectory step.

``block_error`` is ``refvit.gradcheck.compare_error``; ``trajectory_error`` measures against the displacement from
the start (see ``TRAJ_FLOOR``); ``grad_zero_level`` is the level below which a gradient block counts as zero.
"""
from __future__ import annotations

import math

import numpy as np

from ..gradcheck import compare_error
from ..model import Params
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
    if a.shape != b.shape or not np.all(np.isfinite(a)):
        return math.inf
    diff = float(np.max(np.abs(a - b), initial=0.0))
    if diff == 0.0:
        return 0.0
    scale = max(float(np.max(np.abs(a - s))), float(np.max(np.abs(b - s))), TRAJ_FLOOR * float(np.max(np.abs(b))))
    return diff / scale

