"""The layout of saved results: run file names, the run-table columns, and history files — one home for each.

A sweep folder holds ``sweep.json`` (its settings), ``runs/<sweep_run_file>`` (one JSON row per run) and
``table.csv`` (``COLUMNS``); a dynamics folder holds ``dynamics.json`` and one history file per run
(``dynamics_run_file``). A history file is an .npz written by ``save_history``: ``step``, ``h_<key>`` for every
``refvit.train.HISTORY_KEYS`` entry, ``summary`` (the run's summary row as JSON text) and any extra arrays.
"""
from __future__ import annotations

import json

import numpy as np

from .io import load_npz, save_npz

# One row per run. Order = column order of table.csv. The timing columns come last and are the only ones that may
# differ between an interrupted-and-resumed sweep and an uninterrupted one: "seconds" is the run's wall-clock time,
# "cpu_seconds" its CPU time (on a shared machine the wall clock also counts other processes).
COLUMNS = ("N", "mu_norm", "repeat", "seed", "snr", "snr_axis", "N_snr2", "N_snr_axis2", "steps", "status",
           "converged", "train_loss", "test_loss", "test_error", "attn_signal", "attn_noise", "seconds", "cpu_seconds")
TIMING_COLUMNS = ("seconds", "cpu_seconds")


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
    if "summary" not in arrays:
        raise ValueError(f"{path} is not a history file (it has no summary)")
    return json.loads(str(arrays.pop("summary"))), arrays
