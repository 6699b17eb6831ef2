"""Running the second setting's study: one run of a cell (in a worker), and the whole study into its folder.

A cell's data and init come from ``streams(seed, *cell_key(N, ‖μ‖, repeat))``, so GD, SignGD and Adam at the same
(‖μ‖, repeat) see the same data and start from the same weights.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..results import history_arrays
from ..runstore import claim, compute_missing, renew_manifest
from ..streams import cell_key, streams
from ..trainer import run
from .config import LiDataConfig, LiModelConfig
from .data import make_dataset
from .model import init_params
from .objective import make_objective
from .study import SignGDStudy, identity, specs
from .tables import write_tables


def run_cell(study_dict: dict, part: str, optimizer: str, mu: float, repeat: int, train: dict,
             reference: dict | None = None) -> dict:
    """One run (executes in a worker): data and init from the cell's streams, trained, its history file's arrays.

    reference : a second TrainConfig (as a dict) to train from the same data and init; its test error and the
        distance ‖θ − θ_ref‖ / ‖θ_ref − θ₀‖ go into the summary (the Adam part: Adam against SignGD).
    """
    data_cfg = LiDataConfig.from_dict(study_dict["data"]).replace(mu_norm=float(mu))
    model_cfg = LiModelConfig.from_dict(study_dict["model"])
    rng = streams(study_dict["seed"], *cell_key(data_cfg.N, data_cfg.mu_norm, repeat))
    data = make_dataset(data_cfg, rng.data, rng.test)
    params0 = init_params(model_cfg, data_cfg.d, rng.init)
    cfg = TrainConfig.from_dict(train)
    params, hist = run(make_objective(params0, data, model_cfg, cfg.backend), cfg)
    summary = {"part": part, "optimizer": optimizer, "mu_norm": float(mu), "repeat": int(repeat),
               "seed": study_dict["seed"], "settings_hash": study_dict["settings_hash"], "snr": data_cfg.snr,
               "lr": cfg.lr, "adam_eps": cfg.adam_eps, "adam_betas": list(cfg.adam_betas), "status": hist.status,
               "steps": hist.steps, "train_loss": hist.final_train_loss, "test_loss": hist.final_test_loss,
               "test_error": hist.final_test_error, "message": hist.message}
    if reference is not None:
        ref_cfg = TrainConfig.from_dict(reference)
        ref, ref_hist = run(make_objective(params0, data, model_cfg, ref_cfg.backend), ref_cfg)
        moved = math.sqrt(sum(float(np.sum((r - p0) ** 2)) for r, p0 in zip(ref, params0)))
        gap = math.sqrt(sum(float(np.sum((p - r) ** 2)) for p, r in zip(params, ref)))
        summary.update(ref_test_error=ref_hist.final_test_error, ref_distance=gap / moved if moved else math.nan)
    return history_arrays(hist, summary)


def run_study(study: SignGDStudy, out, executor=None, workers: int | None = None, progress: bool = True) -> None:
    """Every missing or damaged run into out/<part>/runs/ on an executor, then the tables (``write_tables``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {**study.to_dict(), "settings_hash": study.settings_hash()}
    with claim(out, "study"):                       # one process owns the folder while it runs
        renew_manifest(out / "study.json", manifest, ignore=("name", "runs", "snrs", "adam_eps", "adam_betas"))
        jobs = [(out / part / "runs" / fname, identity(study, part, opt, mu, r), run_cell,
                 (manifest, part, opt, mu, r, cfg, ref)) for part, opt, mu, r, cfg, ref, fname in specs(study)]
        compute_missing(jobs, f"signgd {study.name}", executor, workers, progress, where=out, series=("h_train_loss",))
        write_tables(study, out)


if __name__ == "__main__":    # a library module: say which command runs it rather than exit 0 having done nothing
    raise SystemExit("refvit.li2025.experiment is a library module; run it with "
                     "`refvit study signgd --preset quick|full` "
                     "(or `python -m refvit.cli …`); `refvit --help` lists the commands")
