"""What the studies share: the regime of a cell, the trainer of an optimizer, and group statistics of run tables.

Presets ``quick`` (minutes on 2 cores) and ``full``. Every study is a set of ``Sweep`` folders (each resumable:
a killed study restarted on the same folder recomputes only the missing runs; the rate choice is recomputed from the
saved pilots, so it is the same) plus tidy tables assembled from them. ``refvit study …`` drives them (``refvit.pipelines``);
figures and text summaries are drawn by ``analysis/`` from the saved results only.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import BOUNDARY_N_SNR2

PRESETS = ("quick", "full")


def coords_for(optimizer: str) -> dict:
    """TrainConfig changes for ``optimizer``: GD on exact span coordinates (docs/math.md §8) with the numpy core, the
    one the committed summaries of these studies were made with (the numba kernel agrees with it to rounding);
    SignGD and Adam on dense weights (their elementwise updates leave the token span) with the fastest core."""
    return {"coords": "span", "backend": "numpy"} if optimizer == "gd" else {"coords": "dense", "backend": "auto"}


def regime_of(n_snr2: float, factor: float = 2.0) -> str:
    """'benign' if N·SNR² ≥ factor·2.5, 'harmful' if ≤ 2.5/factor, else 'transition' (SNR with σ_p; docs/math.md (1.9)).

    factor = 2 keeps the cells within a factor 2 of the curve (where seeds disagree; setting of docs/math.md §10.1) out
    of both groups.
    """
    if not factor >= 1:
        raise ValueError(f"factor must be >= 1, got {factor!r}")
    if n_snr2 >= factor * BOUNDARY_N_SNR2:
        return "benign"
    if n_snr2 <= BOUNDARY_N_SNR2 / factor:
        return "harmful"
    return "transition"


def group_stats(rows: list[dict]) -> dict:
    """Steps (converged runs), test loss and test 0-1 error (converged runs) of a group of runs."""
    conv = [r for r in rows if r["converged"]]
    steps = np.array([r["steps"] for r in conv], dtype=float)
    loss = np.array([r["test_loss"] for r in conv], dtype=float)
    err = np.array([r["test_error"] for r in conv], dtype=float)
    q = (lambda a, x: float(np.quantile(a, x)) if len(a) else math.nan)
    m = (lambda a: float(a.mean()) if len(a) else math.nan)
    s = (lambda a: float(a.std()) if len(a) else math.nan)
    return {"n_runs": len(rows), "n_converged": len(conv), "steps_median": q(steps, 0.5),
            "steps_min": q(steps, 0.0), "steps_max": q(steps, 1.0), "test_loss_mean": m(loss),
            "test_loss_std": s(loss), "test_loss_median": q(loss, 0.5), "test_error_mean": m(err),
            "test_error_std": s(err)}


SUMMARY_COLUMNS = ["n_runs", "n_converged", "steps_median", "steps_min", "steps_max", "test_loss_mean",
                   "test_loss_std", "test_loss_median", "test_error_mean", "test_error_std"]


