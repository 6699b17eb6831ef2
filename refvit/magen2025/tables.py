"""The tables of the third setting's study, rebuilt from its verified run files (the figures and the summary read
these, never a trainer or a solver).

Tables (CSV, one home for each quantity the figures and the summary report):
    twostep.csv    one row per two-step GD run: train error after steps 1 and 2, test error against clean and
                   noisy labels, attention on the signal token (clean and flipped samples), benign or not
    maxmargin.csv  one row per maximum-margin run: norm, margin, KKT residuals, agreement of the starts, test errors
    probe.csv      one row per probe run (two GD steps at every cell for each probed step size)
    longrun.csv    one row per long run (beyond the paper: many small GD steps, docs/math.md (17.11))
    tokens.csv     one row per tokens run (beyond the paper: two GD steps on M > 2 tokens, docs/math.md (17.12))
    query.csv      one row per query run (beyond the paper: trained W_Q, W_K from a Gaussian init, (17.13))
    edges.csv      per method, edge and n: the SNR threshold of docs/math.md (17.9) with its interval or bracket
    boundary.csv   per method and edge: the exponent of SNR* against n and the constant c of SNR* = c/√n (17.10)
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..fit import fit_boundary, fit_threshold
from ..io import save_csv
from ..results import TRAINED
from ..runstore import load_or_quarantine
from .study import GOOD_ERROR, PARTS, SingleHeadStudy, identity, specs

METHODS = ("twostep", "maxmargin", "longrun", "tokens", "query")
EDGES = ("lower", "upper")
COMMON = ("n", "eta", "snr", "snr_sqrt_n", "rho", "repeat", "status", "n_flipped", "test_error", "test_error_noisy",
          "attn_signal_clean", "attn_signal_flipped")
COLUMNS = {"twostep": COMMON + ("train_error_step1", "train_error", "margin_min_step1", "margin_min"),
           "longrun": COMMON + ("steps", "train_error", "margin_min", "train_loss"),
           "tokens": COMMON + ("M", "train_error_step1", "train_error", "margin_min_step1", "margin_min"),
           "query": COMMON + ("steps", "train_error", "margin_min", "train_loss"),
           "probe": ("lr",) + COMMON + ("train_error_step1", "train_error", "margin_min_step1", "margin_min"),
           "maxmargin": COMMON + ("norm", "norm_p", "norm_v", "starts", "starts_ok", "norm_spread", "margin",
                                  "feasibility", "stationarity", "slackness", "n_active", "cpu_seconds")}


def load_part(study: SingleHeadStudy, out, part: str) -> list[tuple[dict, dict]]:
    """(summary, arrays) of every run of one part, in ``specs`` order; a missing or bad file is an error here
    (``run_study`` recomputes them)."""
    got = []
    for p, n, rho, r, lr, fname in specs(study):
        if p != part:
            continue
        run = load_or_quarantine(Path(out) / part / "runs" / fname, identity(study, part, n, rho, r, lr))
        if run is None:
            raise ValueError(f"run {fname} of {Path(out) / part} is missing or was damaged; run the study again "
                             "to recompute it")
        got.append(run)
    return got


def benign(summary: dict) -> bool:
    """Benign (docs/math.md (17.3)): the run ended as promised (trained, or the solver converged feasibly), every
    training label is fitted, and the clean test 0-1 error is at most ``GOOD_ERROR``."""
    fits = summary["part"] == "maxmargin" or summary["train_error"] == 0.0
    return summary["status"] in TRAINED and fits and summary["test_error"] <= GOOD_ERROR


def peak_snr(rows: list[dict]) -> float:
    """The SNR of the smallest mean clean test error over a set of rows (one n): the edges' split (math 17.9).
    Among equal means the middle one (by SNR) is taken, so a flat benign band splits at its centre."""
    snrs = sorted({r["snr"] for r in rows})
    means = np.array([np.mean([r["test_error"] for r in rows if r["snr"] == s]) for s in snrs])
    best = [s for s, m in zip(snrs, means) if m == means.min()]
    return best[(len(best) - 1) // 2]


def _edge_runs(rows: list[dict], edge: str) -> list[dict]:
    """Rows on one side of each n's peak (inclusive), trained ones only (math 17.9)."""
    out = []
    for n in sorted({r["n"] for r in rows}):
        rn = [r for r in rows if r["n"] == n and r["status"] in TRAINED]
        if rn:
            peak = peak_snr(rn)
            out += [r for r in rn if (r["snr"] <= peak if edge == "lower" else r["snr"] >= peak)]
    return out


def threshold_row(x: np.ndarray, good: np.ndarray, edge: str, rng, n_boot: int) -> dict:
    """fit_threshold of ``good`` on x (lower edge) or on 1/x (upper edge, so that good rises with the argument),
    mapped back to x: threshold, lo, hi, separable, bracket_lo, bracket_hi, n, n_good, message (math 17.9)."""
    inv = edge == "upper"
    fit = fit_threshold(1.0 / x if inv else x, good, rng, n_boot)
    t, ci, br = fit["threshold"], fit["ci_threshold"], fit["bracket"]
    back = (lambda a, b: (1.0 / b, 1.0 / a)) if inv else (lambda a, b: (a, b))
    lo, hi = back(*ci) if ci else (math.nan, math.nan)
    blo, bhi = back(*br) if br else (math.nan, math.nan)
    return {"threshold": (1.0 / t if inv else t) if t is not None else math.nan, "lo": lo, "hi": hi,
            "separable": fit["separable"], "bracket_lo": blo, "bracket_hi": bhi, "n_runs": fit["n"],
            "n_good": fit["n_benign"], "message": fit["message"]}


def exponent_row(runs: list[dict], rng, n_boot: int) -> dict:
    """The boundary N·SNR^a = C fitted by ``refvit.fit.fit_boundary`` (Firth's estimate when the labels are
    separable) and the exponent −1/a of SNR* ∝ n^(−1/a) with its interval (math 17.10)."""
    nan = {"fit_method": "", "a": math.nan, "a_lo": math.nan, "a_hi": math.nan, "exponent": math.nan,
           "exponent_lo": math.nan, "exponent_hi": math.nan, "fit_message": ""}
    N, snr = [r["n"] for r in runs], [r["snr"] for r in runs]
    good = [float(r["benign"]) for r in runs]
    try:
        fit = fit_boundary(N, snr, good, rng, n_boot)
        if fit["a"] is None:
            fit = fit_boundary(N, snr, good, rng, n_boot, method="firth")
    except (ValueError, ArithmeticError) as e:   # no boundary to fit, or a contour beyond float range
        return {**nan, "fit_message": str(e) or type(e).__name__}
    lo, hi = fit.get("ci_a", [math.nan, math.nan])
    ci = (-1.0 / lo, -1.0 / hi) if lo * hi > 0 else (math.nan, math.nan)   # −1/a is increasing on each side of 0
    return {"fit_method": fit["method"], "a": fit["a"], "a_lo": lo, "a_hi": hi, "exponent": -1.0 / fit["a"],
            "exponent_lo": ci[0], "exponent_hi": ci[1], "fit_message": fit.get("message", "")}


def per_n_slope(edge_rows: list[dict]) -> float:
    """Least-squares slope of log SNR*(n) on log n over the n with a threshold (the bracket's geometric middle when
    separable); NaN with fewer than two (docs/math.md (17.10))."""
    pts = []
    for e in edge_rows:
        t = e["threshold"]
        if not (isinstance(t, float) and math.isfinite(t)) and math.isfinite(e["bracket_lo"]):
            t = math.sqrt(e["bracket_lo"] * e["bracket_hi"])
        if isinstance(t, float) and math.isfinite(t) and t > 0:
            pts.append((math.log(e["n"]), math.log(t)))
    if len({p[0] for p in pts}) < 2:
        return math.nan
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def probe_rule(probe_rows: list[dict]) -> float:
    """The step size of docs/math.md (17.4): the probed one under which the most probe runs are benign (the
    smallest among ties); NaN without probe runs."""
    lrs = sorted({r["lr"] for r in probe_rows})
    counts = [sum(r["benign"] for r in probe_rows if r["lr"] == lr) for lr in lrs]
    return lrs[counts.index(max(counts))] if lrs else math.nan


def _row(summary: dict, part: str) -> dict:
    row = {k: summary[k] for k in COLUMNS[part]}
    return {**row, "benign": benign(summary)}


def write_tables(study: SingleHeadStudy, out, n_boot: int = 500) -> dict:
    """Rebuild every table from the verified run files; returns {table name: rows}."""
    out = Path(out)
    rng = np.random.default_rng([study.seed, 17])       # the bootstraps' own stream
    tables = {part: [_row(s, part) for s, _ in load_part(study, out, part)] for part in PARTS}
    edges, bounds = [], []
    for method in (m for m in METHODS if tables[m]):
        for edge in EDGES:
            runs = _edge_runs(tables[method], edge)
            for n in study.ns:
                rn = [r for r in runs if r["n"] == n]
                x = np.array([r["snr"] for r in rn])
                fit = threshold_row(x, np.array([float(r["benign"]) for r in rn]), edge, rng, n_boot) if rn else \
                    {"message": "no trained runs"}
                edges.append({"method": method, "edge": edge, "n": n, **{k: fit.get(k, math.nan) for k in (
                    "threshold", "lo", "hi", "separable", "bracket_lo", "bracket_hi", "n_runs", "n_good")},
                    "message": fit["message"]})
            x = np.array([r["snr_sqrt_n"] for r in runs])
            c = threshold_row(x, np.array([float(r["benign"]) for r in runs]), edge, rng, n_boot) if runs else \
                {"threshold": math.nan, "lo": math.nan, "hi": math.nan, "separable": False, "bracket_lo": math.nan,
                 "bracket_hi": math.nan, "n_runs": 0, "n_good": 0, "message": "no trained runs"}
            bounds.append({"method": method, "edge": edge, "runs": len(runs), "n_good": c["n_good"],
                           "c": c["threshold"], "c_lo": c["lo"], "c_hi": c["hi"], "c_separable": c["separable"],
                           "c_bracket_lo": c["bracket_lo"], "c_bracket_hi": c["bracket_hi"],
                           "c_message": c["message"], **exponent_row(runs, rng, n_boot)})
    for b in bounds:
        b["slope_per_n"] = per_n_slope([e for e in edges if (e["method"], e["edge"]) == (b["method"], b["edge"])])
    tables["edges"], tables["boundary"] = edges, bounds
    for name, rows in tables.items():
        if rows:
            save_csv(out / f"{name}.csv", rows, list(rows[0]))
    return tables
