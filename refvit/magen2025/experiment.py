"""Running the third setting's study: one run (in a worker), and the whole study into its folder.

A run's training and test sets come from ``streams(seed, *cell_key(n, ρ, repeat))``, so the two-step GD run, the
maximum-margin run, the probe, long and query runs of one (n, ρ, repeat) see the same data (the tokens runs draw
M > 2 tokens from the same stream). The init is zero (the paper's) but in the query part, whose Gaussian init comes
from the cell's init stream.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..primitives import mean_loss
from ..results import history_arrays
from ..runstore import claim, compute_missing, renew_manifest
from ..streams import cell_key, streams
from ..trainer import run
from .config import MagenDataConfig, MagenModelConfig
from .data import make_dataset
from .maxmargin import max_margin
from .model import MagenParams, forward_cache, init_params
from .objective import MagenObjective, signal_attention
from .study import SingleHeadStudy, eta_of, identity, specs
from .tables import write_tables

MODEL = MagenModelConfig()          # the paper's prompt form from zero: p = v = 0 (docs/math.md (16.10))
GROUP_KEYS = ("attn_signal_clean", "attn_signal_flipped", "margin_min", "margin_clean_min", "margin_flipped_min")


def noisy_error(clean_error: float, flip_rate: float) -> float:
    """Expected 0-1 error against test labels flipped at rate η, given the error against clean labels:
    η + (1 − 2η)·err_clean (docs/math.md (17.2))."""
    return flip_rate + (1.0 - 2.0 * flip_rate) * clean_error


def two_steps(data, lr: float, steps: int = 2, model: MagenModelConfig = MODEL, rng=None):
    """Two (or ``steps``) full-batch GD steps with step size ``lr`` (η of (17.1), (17.11)) on the shared trainer,
    from zero, or from ``model``'s Gaussian init drawn from ``rng`` (query part, (17.13)): (params, History); the
    history keeps every row of two steps, the final row of longer runs."""
    cfg = TrainConfig(optimizer="gd", lr=lr, steps=steps, backend="numpy", history_every=1 if steps <= 2 else 0)
    return run(MagenObjective(init_params(model, data.X.shape[-1], rng), data, model), cfg)


def _data(study_dict: dict, n: int, rho: float, repeat: int, M: int = 2):
    cfg = MagenDataConfig.from_dict(study_dict["data"]).replace(N=int(n), rho=float(rho), M=int(M))
    rng = streams(study_dict["seed"], *cell_key(cfg.N, cfg.rho, repeat))
    return cfg, make_dataset(cfg, rng.data, rng.test), rng.init


def _twostep(cfg, data, lr: float, base: dict, steps: int = 2, model: MagenModelConfig = MODEL, rng=None) -> dict:
    _, hist = two_steps(data, lr, steps, model, rng)
    first = 1 if steps == 2 else -1                            # the row after step 1 (two-step runs only)
    rec = {k: float(hist[k][-1]) for k in GROUP_KEYS}          # at the final parameters (math 16.22)
    summary = {**base, "status": hist.status, "steps": hist.steps, "train_loss": hist.final_train_loss,
               "test_loss": hist.final_test_loss, "train_error": float(hist["train_error"][-1]),
               "train_error_step1": float(hist["train_error"][first]) if steps == 2 else float("nan"),
               "margin_min_step1": float(hist["margin_min"][first]) if steps == 2 else float("nan"),
               "test_error": hist.final_test_error, "test_error_noisy": noisy_error(hist.final_test_error,
                                                                                    cfg.flip_rate),
               **rec, "message": hist.message}
    return history_arrays(hist, summary)


def _maxmargin(cfg, data, rng, mm_random: int, base: dict) -> dict:
    t0 = time.process_time()
    gd, _ = two_steps(data, base["eta"])
    f_gd = forward_cache(gd, data.X)[0]
    starts = []
    if np.all(data.y * f_gd > 0):      # the two-step solution, v rescaled to margin 1 (f is linear in v)
        starts.append((gd.p, gd.v / np.min(data.y * f_gd)))
    mm = max_margin(data.X, data.y, rng, init=starts, n_random=mm_random)
    summary = {**base, "status": "converged" if mm.success else "diverged", "steps": 0, "norm": mm.norm,
               "norm_p": float(np.linalg.norm(mm.p)), "norm_v": float(np.linalg.norm(mm.v)),
               "starts": len(mm.norms), "starts_ok": mm.n_ok,
               "norm_spread": float(np.nanmax(mm.norms) / np.nanmin(mm.norms) - 1) if mm.n_ok else float("nan"),
               "margin": mm.kkt.margin, "feasibility": mm.kkt.feasibility, "stationarity": mm.kkt.stationarity,
               "slackness": mm.kkt.slackness, "n_active": mm.kkt.n_active, "train_loss": float("nan"),
               "test_loss": float("nan"), "test_error": float("nan"), "test_error_noisy": float("nan"),
               "attn_signal_clean": float("nan"), "attn_signal_flipped": float("nan"),
               "message": "" if mm.success else "no start ended converged and feasible"}
    if mm.success:
        params = MagenParams(mm.p, mm.v)
        f, cache = forward_cache(params, data.X)
        f_test, cache_test = forward_cache(params, data.X_test)
        err = float(np.mean(np.sign(f_test) != data.y_test))
        att = signal_attention(cache.S, data.signal_pos)
        clean = data.y == data.y_clean
        summary.update(train_loss=mean_loss(f, data.y), test_loss=mean_loss(f_test, data.y_test), test_error=err,
                       test_error_noisy=noisy_error(err, cfg.flip_rate),
                       attn_signal_clean=float(att[clean].mean()) if clean.any() else float("nan"),
                       attn_signal_flipped=float(att[~clean].mean()) if (~clean).any() else float("nan"))
    summary["cpu_seconds"] = time.process_time() - t0
    return {"step": np.zeros(1, dtype=np.int64), "norms": mm.norms, "lam": mm.kkt.lam,
            "summary": np.array(json.dumps(summary, sort_keys=True, default=float))}


def run_cell(study_dict: dict, part: str, n: int, rho: float, repeat: int, lr: float | None) -> dict:
    """One run (executes in a worker): its data from the cell's streams, then two GD steps (parts twostep, probe;
    tokens with M = ``tokens``), the maximum-margin interpolator (part maxmargin), ``long_steps`` GD steps (part
    longrun) or ``query_steps`` GD steps of ``query_model`` (part query). Returns its history file's arrays."""
    cfg, data, rng = _data(study_dict, n, rho, repeat, study_dict["tokens"] if part == "tokens" else 2)
    base = {"part": part, "n": int(n), "rho": float(rho), "repeat": int(repeat), "lr": lr,
            "seed": study_dict["seed"], "settings_hash": study_dict["settings_hash"], "snr": cfg.snr,
            "snr_sqrt_n": cfg.snr * float(np.sqrt(n)), "flip_rate": cfg.flip_rate, "M": cfg.M,
            "n_flipped": int(np.sum(data.y != data.y_clean)), "step_size": study_dict["step_size"]}
    step = lr if lr is not None else study_dict["step_size"]
    base["eta"] = eta_of(step, n, cfg.M, study_dict["step_scaling"])   # η₀·n·M/2 or η₀·M/2  (math 17.1, 17.12)
    if part == "maxmargin":
        return _maxmargin(cfg, data, rng, study_dict["mm_random"], base)
    if part == "query":
        return _twostep(cfg, data, base["eta"], base, study_dict["query_steps"],
                        MagenModelConfig.from_dict(study_dict["query_model"]), rng)
    steps = study_dict["long_steps"] if part == "longrun" else 2
    return _twostep(cfg, data, base["eta"], base, steps)


def run_study(study: SingleHeadStudy, out, executor=None, workers: int | None = None, progress: bool = True) -> None:
    """Every missing or damaged run into out/<part>/runs/ on an executor, then the tables (``write_tables``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {**study.to_dict(), "settings_hash": study.settings_hash()}
    with claim(out, "study"):                       # one process owns the folder while it runs
        renew_manifest(out / "study.json", manifest, ignore=("name", "runs", "ns", "snrs", "probe_lrs"))
        jobs = [(out / part / "runs" / fname, identity(study, part, n, rho, r, lr), run_cell,
                 (manifest, part, n, rho, r, lr)) for part, n, rho, r, lr, fname in specs(study)]
        compute_missing(jobs, f"single-head {study.name}", executor, workers, progress, where=out)
        write_tables(study, out)
