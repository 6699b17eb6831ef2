"""The benign/harmful boundary of a saved Figure-1 sweep folder (docs/math.md §11): its run files, checked, fitted by
``refvit.fit.fit_boundary``; ``refvit fit SWEEP_DIR`` runs it from the command line.

The fit never trusts table.csv: it rebuilds the table from the folder's run files, each checked against sweep.json
(``refvit.jiang2024.sweep.verified_table``: a bad run file is quarantined and the fit refused until the sweep
recomputes it), and rewrites a table.csv that differs from them, with a warning, so the figures drawn from it agree
with the fit.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from .. import options
from ..fit import METHODS, describe, fit_boundary
from ..io import load_json, one_line_errors, save_json
from ..results import COLUMNS, counted
from .config import BENIGN_LOSS
from .sweep import verified_table


def default_n_boot(name: str) -> int:
    """Bootstrap resamples when none are asked for: 200 for the quick preset's sweep, 1000 for any other."""
    return 200 if name == "quick" else 1000


def fit_sweep(sweep_dir, n_boot: int | None = None, seed: int = 0, level: float = 0.95, save: bool = True,
              method: str = "mle") -> dict:
    """Fit the boundary of a saved sweep (its run files, checked: ``refvit.jiang2024.sweep.verified_table``); writes
    sweep_dir/fit.json and returns the dict. n_boot None: ``default_n_boot`` of the sweep's name.

    With method "mle" on separable labels the Firth fit is added as ``fit["firth"]`` (and named as such).
    ``mu_10_90`` gives, per N of the grid, the ‖μ‖ at which the fitted benign probability is 10 % and 90 %.
    """
    meta, rows = verified_table(sweep_dir)
    t = {k: np.array([r[k] for r in rows]) for k in COLUMNS}
    n_boot = default_n_boot(meta["name"]) if n_boot is None else n_boot
    fit = fit_columns(t, meta["data"], n_boot, seed, level, method)
    if save:
        save_json(Path(sweep_dir) / "fit.json", fit)
    return fit


def fit_columns(t: dict, d: dict, n_boot: int = 1000, seed: int = 0, level: float = 0.95, method: str = "mle") -> dict:
    """``fit_sweep`` on a run table's columns ``t`` (``COLUMNS``: N, snr, status, converged, test_loss) of a sweep
    whose data settings are ``d`` (sigma_p, snr_axis_sigma, d)."""
    ok = counted(t)
    # every run left out is counted by its status (a converged run with a non-finite test loss as nonfinite_test)
    why = np.where(t["converged"] & ~ok, "nonfinite_test", t["status"].astype(str))
    excluded = {str(k): int(n) for k, n in zip(*np.unique(why[~ok], return_counts=True))}
    benign = t["test_loss"][ok] < BENIGN_LOSS
    ratio = d["sigma_p"] / d["snr_axis_sigma"]
    # the bootstrap stream is keyed apart from every run stream (those have 3 keys)
    rng = np.random.default_rng([seed, 0xF17])
    fit = fit_boundary(t["N"][ok], t["snr"][ok], benign, rng, n_boot=n_boot, level=level, method=method,
                       sigma_ratio=ratio)
    if fit["a"] is None:
        fit["firth"] = fit_boundary(t["N"][ok], t["snr"][ok], benign, np.random.default_rng([seed, 0xF17]),
                                    n_boot=n_boot, level=level, method="firth", sigma_ratio=ratio)
    best = fit if fit["a"] is not None else fit["firth"]
    mu_per_snr = d["sigma_p"] * math.sqrt(d["d"])
    fit["mu_10_90"] = {str(int(n)): [mu_per_snr * (best["C"] / n) ** (1 / best["a"]) * math.exp(-best["width_log_snr"] * f)
                                     for f in (0.5, -0.5)] for n in np.unique(t["N"])}
    fit.update(benign_loss=BENIGN_LOSS, n_not_converged=int((~ok).sum()), excluded=excluded, seed=seed)
    return fit


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``refvit fit``."""
    p.add_argument("sweep_dir", help="folder with sweep.json and runs/ (made by refvit sweep or refvit reproduce)")
    options.add(p, "n_boot", "seed")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the bootstrap intervals")
    p.add_argument("--method", choices=METHODS, default="mle", help="exact maximum likelihood, or Firth's fit")


FIT_SETTINGS = ("n_boot", "seed", "level", "method")   # what a refit may change; the runs are the folder's


def cmd_fit(a) -> int:
    """Fit the folder, print the boundary, write fit.json (``fit_sweep``). A fit.json of other settings (e.g. the
    one ``reproduce`` wrote) is not overwritten silently: the line after the fit says what it held and was replaced."""
    path = Path(a.sweep_dir) / "fit.json"
    old = load_json(path, expect=dict) if path.exists() else None
    fit = fit_sweep(a.sweep_dir, a.n_boot, a.seed, a.level, method=a.method)
    print(describe(fit))
    if old is not None and old != json.loads(json.dumps(fit)):
        was = ", ".join(f"{k}={old.get(k)!r}" for k in FIT_SETTINGS if old.get(k) != fit.get(k)) or "other numbers"
        print(f"replaced {path}: it held a fit with {was}")
    return 0


@one_line_errors   # a missing or damaged sweep folder: one line, status 2
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Fit N·SNR^a = C to a saved sweep; print it and write fit.json.",
                                formatter_class=options.Formatter)
    add_arguments(p)
    return cmd_fit(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
