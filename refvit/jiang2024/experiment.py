"""One experiment cell: derive the streams, draw data and init, train, and summarize — the unit of every sweep,
dynamics run, coefficient run, study and benchmark."""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from .config import DataConfig, ModelConfig
from ..config import TrainConfig
from .data import Dataset, make_dataset
from ..streams import cell_key, streams  # noqa: F401  (cell_key: imported by the sweep and the studies)
from .init import init_params
from .model import Params
from .tracking import CoefficientTracker, track_train
from ..trainer import History
from .train import train


class CellRun(NamedTuple):
    summary: dict          # one tidy row: settings, seed, outcome (JSON-able scalars)
    history: History
    params0: Params
    params: Params
    data: Dataset
    tracker: CoefficientTracker | None   # the coefficient tracker when run with track=True


def _last(series) -> float:
    return float(series[-1]) if len(series) else float("nan")


def draw_cell(data_cfg: DataConfig, model_cfg: ModelConfig, seed: int, key: tuple = ()) -> tuple[Dataset, Params]:
    """The data and the initial weights of a cell, from the streams of (seed, *key) (``refvit.streams.streams``).

    The initial weights come from a stream of their own, so they are drawn in a second thread while this one draws
    the data (numpy's generators release the GIL while they fill an array): the same numbers, in less wall time
    when a second core is free.
    """
    rng = streams(seed, *key)
    with ThreadPoolExecutor(max_workers=1) as pool:
        params0 = pool.submit(init_params, model_cfg, data_cfg.d, rng.init)
        data = make_dataset(data_cfg, rng.data, rng.test)
        return data, params0.result()


def run_cell(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int,
             key: tuple = (), track: bool = False, progress: bool = False) -> CellRun:
    """Train one cell with streams derived from (seed, *key); the same arguments always give the same numbers.

    track : train under ``refvit.jiang2024.tracking.CoefficientTracker`` (GD only), which records the signal and noise
        coefficients at every step without changing the trajectory.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    data, params0 = draw_cell(data_cfg, model_cfg, seed, key)
    tracker = None
    if track:
        params, hist, tracker = track_train(params0, data.X, data.y, config=train_cfg, X_test=data.X_test,
                                            y_test=data.y_test)
    else:
        params, hist = train(params0, data.X, data.y, X_test=data.X_test, y_test=data.y_test, config=train_cfg,
                             progress=progress)
    status = hist.status
    if status in ("converged", "max_steps") and not math.isfinite(hist.final_test_loss):
        status = "nonfinite_test"    # trained, but no finite test loss: its own status, never silently dropped
    summary = {
        "N": data_cfg.N, "mu_norm": float(data_cfg.mu_norm),
        "snr": data_cfg.snr, "snr_axis": data_cfg.snr_axis, "N_snr2": data_cfg.n_snr2,
        "N_snr_axis2": data_cfg.n_snr_axis2,
        "seed": int(seed), "key": [int(k) for k in key],
        "steps": hist.steps, "status": status, "converged": status == "converged",
        "train_loss": hist.final_train_loss, "test_loss": hist.final_test_loss,
        "test_error": hist.final_test_error,
        # NaN when the very first forward pass overflowed (no history row)
        "attn_signal": _last(hist["attn_signal"]), "attn_noise": _last(hist["attn_noise"]),
        "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0,
    }
    return CellRun(summary, hist, params0, params, data, tracker)
