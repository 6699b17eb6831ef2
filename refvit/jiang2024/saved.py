"""Reading back saved Figure-3 dynamics runs (``refvit.jiang2024.dynamics`` writes them): the identity each file
must carry and the checked loader the resumed runs and the figures share. Reads only; never trains.
"""
from __future__ import annotations

from pathlib import Path

from ..io import FileProblem, load_json
from ..results import SETTINGS_HASH, dynamics_run_file
from ..runstore import load_run, settings_hash

SERIES = ("h_train_loss", "h_test_loss")      # per-step series every dynamics file holds, one row per step
CATEGORIES = {"coefficients": ("tracked", "none")}   # the allowed values of its categorical summary fields


def run_identity(manifest: dict, name: str, mu: int, repeat: int) -> dict:
    """Identity of run (regime ``name``, ‖μ‖, repeat) of the dynamics folder whose ``dynamics.json`` is
    ``manifest``: regime, mu_norm, repeat, seed and settings_hash (of the seed and configs; each run replaces ‖μ‖)."""
    data = {k: v for k, v in manifest["data"].items() if k != "mu_norm"}
    settings = {"seed": manifest["seed"], "data": data, "model": manifest["model"], "train": manifest["train"]}
    return {"regime": name, "mu_norm": float(mu), "repeat": repeat, "seed": manifest["seed"],
            SETTINGS_HASH: settings_hash(settings)}


def load_runs(folder) -> tuple[dict, dict]:
    """(manifest, {regime name: [(summary, arrays) per run]}) of a dynamics folder, every file checked against its
    identity (``FileProblem`` naming the first one that fails; ValueError when runs are missing). Reads only."""
    folder = Path(folder)
    meta = load_json(folder / "dynamics.json", expect=dict)
    lacking = [k for k in ("regimes", "runs", "seed", "data", "model", "train") if k not in meta]
    if lacking:
        raise FileProblem(folder / "dynamics.json", f"lacks {lacking}: not a dynamics manifest")
    runs = {}
    for name, mu in meta["regimes"]:
        files = [folder / dynamics_run_file(name, mu, r) for r in range(meta["runs"])]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise ValueError(f"{len(missing)} runs missing in {folder} (e.g. {missing[0]}); run the dynamics first")
        runs[name] = [load_run(f, run_identity(meta, name, mu, r), SERIES, CATEGORIES) for r, f in enumerate(files)]
    return meta, runs
