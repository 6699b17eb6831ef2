"""Reading back the first setting's saved files, checked against what they claim to be: the Figure-3 dynamics runs
(``refvit.jiang2024.dynamics`` writes them; the identity each must carry, the loader the resumed runs and the
figures share) and the coefficient files (``refvit.jiang2024.coefficients``). Reads only; never trains.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..io import FileProblem, load_json, load_npz
from ..results import SETTINGS_HASH, STATUSES, dynamics_run_file
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


# --- coefficient files (``refvit.jiang2024.coefficients``: ``refvit coefficients train|weights``) ----------------

COEFFICIENT_SETTINGS = ("figure1", "dynamics")     # the settings ``refvit coefficients train`` runs
TRACKED = ("h_gamma_plus", "h_gamma_minus", "h_rho", "h_abar", "h_Z2")   # (T, …) series of a "train" file


def load_coefficients(path) -> tuple[dict, dict]:
    """(summary, arrays) of a coefficient file, checked to be what it claims: a "train" file (its summary names a
    setting, ‖μ‖, status, …) or a "weights" file; y (N,) and the recovered y_iρ_i (N,) of its N; the recovered γ₊,
    γ₋ finite; for "train", every tracked series of one length T = the recorded losses, and a known status.
    ``FileProblem`` naming the file and the first thing wrong."""
    arrays = load_npz_checked(path, ("summary", "y", "recovered_rho", "recovered_gamma_plus",
                                     "recovered_gamma_minus"))
    try:
        meta = json.loads(str(arrays.pop("summary")))
    except json.JSONDecodeError as e:
        raise FileProblem(path, f"its summary is not valid JSON ({e.msg})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("N"), int) or not isinstance(meta.get("setting"), str):
        raise FileProblem(path, "its summary names no setting and N: not a coefficient file")
    N = meta["N"]
    for key in ("y", "recovered_rho"):
        if arrays[key].shape != (N,):
            raise FileProblem(path, f"{key} has shape {arrays[key].shape}, not ({N},) for the N={N} it claims")
    gammas = [float(arrays[k]) if arrays[k].size == 1 else math.nan
              for k in ("recovered_gamma_plus", "recovered_gamma_minus")]
    if "mu_norm" not in meta:                       # a "weights" file: decomposed from two snapshots
        if not all(map(math.isfinite, gammas)):
            raise FileProblem(path, "its recovered γ₊, γ₋ are not finite")
        return meta, arrays
    if meta["setting"] not in COEFFICIENT_SETTINGS:
        raise FileProblem(path, f"setting is {meta['setting']!r}, not one of {', '.join(COEFFICIENT_SETTINGS)}")
    if meta.get("status") not in STATUSES:
        raise FileProblem(path, f"unknown status {meta.get('status')!r}")
    if not isinstance(meta.get("train_w_O"), bool) or not isinstance(meta.get("steps"), int):
        raise FileProblem(path, "its summary lacks train_w_O or steps: not a coefficient file of `train`")
    if meta["status"] in ("converged", "max_steps") and not all(map(math.isfinite, gammas)):
        raise FileProblem(path, f"its recovered γ₊, γ₋ are not finite although status is {meta['status']!r}")
    T = len(arrays.get("train_loss", ()))
    bad = [k for k in TRACKED if k not in arrays or arrays[k].ndim < 1 or len(arrays[k]) != T]
    if bad or (arrays["h_rho"].shape[1:] != (N,)):
        raise FileProblem(path, f"its tracked series {bad or ['h_rho']} are not one row per step ({T}) for N={N}")
    return meta, arrays


def load_npz_checked(path, keys) -> dict:
    """The arrays of an .npz, with every one of ``keys`` present (``FileProblem`` naming those lacking)."""
    arrays = load_npz(path)
    lacking = [k for k in keys if k not in arrays]
    if lacking:
        raise FileProblem(path, f"lacks the array(s) {lacking}: not a file of this kind")
    return arrays
