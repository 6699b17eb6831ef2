"""The layout of saved results: run file names, the run-table columns, and history files — one home for each.

A sweep folder holds ``sweep.json`` (its settings), ``runs/<sweep_run_file>`` (one JSON row per run) and
``table.csv`` (``COLUMNS``); a dynamics folder holds ``dynamics.json`` and one history file per run
(``dynamics_run_file``). A history file is an .npz written by ``save_history``: ``step``, ``h_<key>`` for every
``refvit.jiang2024.objective.HISTORY_KEYS`` entry, ``summary`` (the run's summary row as JSON text) and any extra arrays.
"""
from __future__ import annotations

import json
import math

import numpy as np

from .io import FileProblem, load_npz, save_npz

# One row per run. Order = column order of table.csv. The timing columns come last and are the only ones that may
# differ between an interrupted-and-resumed sweep and an uninterrupted one: "seconds" is the run's wall-clock time,
# "cpu_seconds" its CPU time (on a shared machine the wall clock also counts other processes).
COLUMNS = ("N", "mu_norm", "repeat", "seed", "snr", "snr_axis", "N_snr2", "N_snr_axis2", "steps", "status",
           "converged", "train_loss", "test_loss", "test_error", "attn_signal", "attn_noise", "seconds", "cpu_seconds")
TIMING_COLUMNS = ("seconds", "cpu_seconds")
# The type of every column (a run file is checked against it before it enters a table, ``check_run_row``).
COLUMN_TYPES = {"N": int, "mu_norm": float, "repeat": int, "seed": int, "snr": float, "snr_axis": float,
                "N_snr2": float, "N_snr_axis2": float, "steps": int, "status": str, "converged": bool,
                "train_loss": float, "test_loss": float, "test_error": float, "attn_signal": float,
                "attn_noise": float, "seconds": float, "cpu_seconds": float}
# A run's outcome (``refvit.trainer.History.status``; "nonfinite_test": trained, but its test loss is not finite).
STATUSES = ("converged", "max_steps", "diverged", "overflow", "nonfinite_test")
TRAINED = ("converged", "max_steps")       # statuses whose losses and test error are promised finite
ALWAYS_FINITE = ("mu_norm", "snr", "snr_axis", "N_snr2", "N_snr_axis2", "seconds", "cpu_seconds")
SETTINGS_HASH = "settings_hash"            # the extra key of a run file: the hash of its sweep's settings


def counted(t) -> np.ndarray:
    """Which runs count in a fit, a cell mean or a benign fraction: converged, with a finite test loss (the authors
    stored the others as NaN, docs/math.md §10.1). ``t`` holds the columns "converged" and "test_loss" (arrays of
    one length, or one run's row); returns a bool array of that shape."""
    return np.asarray(t["converged"], dtype=bool) & np.isfinite(np.asarray(t["test_loss"], dtype=np.float64))


def check_run_row(path, row, expect: dict) -> dict:
    """``row`` (a run file's content) if it has the schema of ``COLUMNS`` and the identity ``expect`` (values of
    N, mu_norm, repeat, seed, settings_hash); else ``FileProblem`` naming ``path`` and the first thing wrong.

    Finiteness promised: ``ALWAYS_FINITE`` always; train/test loss and test error when the status is ``TRAINED``.
    """
    if not isinstance(row, dict) or not row:
        raise FileProblem(path, f"expected a run row (a JSON object), found {type(row).__name__} {row!r:.40}")
    lacking = [k for k in (*COLUMNS, SETTINGS_HASH) if k not in row]
    if lacking:
        raise FileProblem(path, f"lacks the column(s) {lacking}")
    for k, typ in COLUMN_TYPES.items():
        v = row[k]
        ok = isinstance(v, bool) if typ is bool else (
            isinstance(v, (int, float)) and not isinstance(v, bool) if typ is float else
            isinstance(v, typ) and not isinstance(v, bool))
        if not ok:
            raise FileProblem(path, f"column {k} should be {typ.__name__}, found {v!r}")
    for k, v in expect.items():
        if row[k] != v:
            raise FileProblem(path, f"{k} is {row[k]!r} but the file name and the sweep's manifest say {v!r}")
    if row["status"] not in STATUSES:
        raise FileProblem(path, f"unknown status {row['status']!r}")
    if row["converged"] != (row["status"] == "converged"):
        raise FileProblem(path, f"converged={row['converged']} contradicts status {row['status']!r}")
    finite = ALWAYS_FINITE + (("train_loss", "test_loss", "test_error") if row["status"] in TRAINED else ())
    bad = [k for k in finite if not math.isfinite(row[k])]
    if bad:
        raise FileProblem(path, f"{', '.join(bad)} not finite although status is {row['status']!r}")
    return row


def sweep_run_file(N: int, mu: int, repeat: int) -> str:
    """File name of sweep run (N, ‖μ‖, repeat) in a sweep's ``runs/`` folder."""
    return f"N{N:03d}_mu{mu:03d}_r{repeat:03d}.json"


def dynamics_run_file(regime: str, mu: int, repeat: int) -> str:
    """File name of dynamics run ``repeat`` of a regime (its name and ‖μ‖) in a dynamics folder."""
    return f"{regime}_mu{mu:03d}_r{repeat:03d}.npz"


def history_arrays(history, summary: dict, **extra) -> dict:
    """The arrays of a history file: ``step``, ``h_<key>`` per history series, ``summary`` (JSON text), ``extra``."""
    arrays = {"step": history.step, "summary": np.array(json.dumps(summary, sort_keys=True, default=float))}
    arrays.update({f"h_{k}": v for k, v in history.values.items()})
    arrays.update(extra)
    return arrays


def save_history(path, history, summary: dict, **extra):
    """Write one run's history file atomically (``history_arrays``)."""
    return save_npz(path, **history_arrays(history, summary, **extra))


def load_history(path) -> tuple[dict, dict]:
    """(summary, arrays) of a history file; ``arrays`` holds every array but ``summary``."""
    arrays = load_npz(path)
    if "summary" not in arrays or "step" not in arrays:
        raise FileProblem(path, "not a history file (it has no summary or no step array)")
    try:
        summary = json.loads(str(arrays.pop("summary")))
    except json.JSONDecodeError as e:
        raise FileProblem(path, f"its summary is not valid JSON ({e.msg})") from None
    if not isinstance(summary, dict):
        raise FileProblem(path, "its summary is not a JSON object")
    return summary, arrays
