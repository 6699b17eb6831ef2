"""The tables of the second setting's study, rebuilt from its verified run files (the figures and the summary read
these, never a trainer).

Tables (CSV, one home for each quantity the figures and the summary report):
    snr.csv          one row per run of the SNR part (GD, SignGD, Adam): test error and loss, generalizes or not
    thresholds.csv   per optimizer: the SNR* of docs/math.md (15.3) with its interval, or the separable bracket
    stages.csv       per dynamics run: the stage boundaries of docs/math.md §14.2 (step and censored flag)
    stage_summary.csv per optimizer and boundary: median and order-statistic interval over runs (math 14.13, 14.14)
    rates.csv        per dynamics run: its final losses and test error, the training-loss rate fits of
                     docs/math.md (15.4), (15.5)
    adam.csv         per Adam variant and run: test error, SignGD's on the same data, and their distance
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..fit import fit_threshold
from ..io import save_csv
from ..results import TRAINED
from ..runstore import load_or_quarantine
from .stages import BOUNDARY_NAMES, STAGE_KEYS, detect_stages, stage_summary
from .study import GOOD_ERROR, SignGDStudy, identity, specs

RATE_FROM = 10            # the rate fits use the rows from this step on (after stage I, docs/math.md (15.4))


def load_part(study: SignGDStudy, out, part: str) -> list[tuple[dict, dict]]:
    """(summary, arrays) of every run of one part, in ``specs`` order; a missing or bad file is an error here
    (``run_study`` recomputes them)."""
    got = []
    for p, opt, mu, r, _, _, fname in specs(study):
        if p != part:
            continue
        run = load_or_quarantine(Path(out) / part / "runs" / fname, identity(study, part, opt, mu, r),
                                 ("h_train_loss",))
        if run is None:
            raise ValueError(f"run {fname} of {Path(out) / part} is missing or was damaged; run the study again "
                             "to recompute it")
        got.append(run)
    return got


def rate_fits(steps: np.ndarray, loss: np.ndarray, start: int = RATE_FROM) -> dict:
    """Least-squares fits of log L over the rows with t ≥ ``start`` and 0 < L < ∞ (docs/math.md (15.4), (15.5)):
    linear rate log L = a − r·t, and power law log L = b − p·log t; their R², and which fits better."""
    t, L = np.asarray(steps, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    keep = (t >= start) & np.isfinite(L) & (L > 0)
    t, logL = t[keep], np.log(L[keep])
    out = {"rows": int(keep.sum()), "rate": math.nan, "r2_linear": math.nan, "power": math.nan,
           "r2_power": math.nan, "better": "none"}
    if len(t) < 3 or np.ptp(logL) == 0:
        return out
    total = float(np.sum((logL - logL.mean()) ** 2))
    for x, k, r2 in ((t, "rate", "r2_linear"), (np.log(t), "power", "r2_power")):
        A = np.column_stack([np.ones(len(x)), x])
        coef, *_ = np.linalg.lstsq(A, logL, rcond=None)
        resid = logL - A @ coef
        out[k], out[r2] = float(-coef[1]), float(1 - np.sum(resid ** 2) / total)
    out["better"] = "linear" if out["r2_linear"] > out["r2_power"] else "power"
    return out


def generalizes(summary: dict) -> bool:
    """Trained (converged or ran all steps) and test error at most ``GOOD_ERROR`` (docs/math.md (15.1))."""
    return summary["status"] in TRAINED and summary["test_error"] <= GOOD_ERROR


def write_tables(study: SignGDStudy, out, n_boot: int = 1000) -> dict:
    """Rebuild every table from the verified run files; returns {table name: rows}."""
    out = Path(out)
    rng = np.random.default_rng([study.seed, 15])       # the bootstrap's own stream
    tables = {}
    snr_rows = [{"optimizer": s["optimizer"], "snr": s["snr"], "mu_norm": s["mu_norm"], "repeat": s["repeat"],
                 "status": s["status"], "steps": s["steps"], "train_loss": s["train_loss"],
                 "test_loss": s["test_loss"], "test_error": s["test_error"], "generalizes": generalizes(s)}
                for s, _ in load_part(study, out, "snr")]
    tables["snr"] = snr_rows
    thr = []
    for opt, _, _ in study.schedules:
        rows = [r for r in snr_rows if r["optimizer"] == opt and r["status"] in TRAINED]
        fit = fit_threshold([r["snr"] for r in rows], [float(r["generalizes"]) for r in rows], rng, n_boot)
        ci, br = fit["ci_threshold"] or [math.nan] * 2, fit["bracket"] or [math.nan] * 2
        thr.append({"optimizer": opt, "threshold": fit["threshold"] if fit["threshold"] is not None else math.nan,
                    "lo": ci[0], "hi": ci[1], "separable": fit["separable"], "bracket_lo": br[0],
                    "bracket_hi": br[1], "n": fit["n"], "n_good": fit["n_benign"], "message": fit["message"]})
    tables["thresholds"] = thr
    stage_rows, rate_rows, by_opt = [], [], {}
    for s, a in load_part(study, out, "dynamics"):
        series = {k: a[f"h_{k}"] for k in STAGE_KEYS}
        st = detect_stages(series, a["step"]) if s["status"] in TRAINED else None
        if st is not None:
            by_opt.setdefault(s["optimizer"], []).append(st)
            row = {"optimizer": s["optimizer"], "repeat": s["repeat"]}
            for name in BOUNDARY_NAMES:
                b = getattr(st, name)
                row.update({name: b.step, f"{name}_censored": b.censored})
            stage_rows.append({**row, "key_growth": st.key_growth})
        rate_rows.append({"optimizer": s["optimizer"], "repeat": s["repeat"], "status": s["status"],
                          "train_loss": s["train_loss"], "test_loss": s["test_loss"], "test_error": s["test_error"],
                          **rate_fits(a["step"], a["h_train_loss"])})
    tables["stages"], tables["rates"] = stage_rows, rate_rows
    tables["stage_summary"] = [{"optimizer": opt, "boundary": name, **summ._asdict()}
                               for opt, sts in by_opt.items() for name, summ in stage_summary(sts).items()]
    tables["adam"] = [{"adam_eps": s["adam_eps"], "beta1": s["adam_betas"][0], "beta2": s["adam_betas"][1],
                       "repeat": s["repeat"], "status": s["status"], "train_loss": s["train_loss"],
                       "test_error": s["test_error"], "ref_test_error": s["ref_test_error"],
                       "ref_distance": s["ref_distance"]} for s, _ in load_part(study, out, "adam")]
    for name, rows in tables.items():
        if rows:
            save_csv(out / f"{name}.csv", rows, list(rows[0]))
    return tables
