"""The phase study: the three phases of docs/math.md §12.4 measured (§12.5) over seeds, N·SNR², η and ‖μ‖.

Two settings: the dynamics setting (docs/math.md §10.2: M=3, d=2048, η=0.01, exactly ``steps`` updates) and the
Figure-1 cell (§10.1: M=16, d=1024, η=0.1, stop at training loss < 0.01). In each, a ‖μ‖ sweep at the setting's N
and η crosses the boundary N·SNR² ≈ 2.5, and at one harmful and one benign ‖μ‖ the rate η and the size N are varied
alone, so that the exponents of N·SNR², η and ‖μ‖ in the phase lengths can be told apart (docs/math.md (12.9)).

Run (N, ‖μ‖, r) draws from ``streams(seed, *cell_key(N, ‖μ‖, r))`` at every η: the rate conditions are paired with
the base rate on the same data and init. Every run is one history file ``<setting>/runs/N010_mu030_lr0.01_r003.npz``,
written atomically, whose summary names its setting, N, ‖μ‖, η, seed and repeat; a rerun skips the files that load
and name their own run, and quarantines (moves aside, never deletes) the others, which are then recomputed.
While it runs, a study holds the folder's lock (``refvit.runstore.claim``): a second one on the same folder is refused.
Tables: ``phases.csv`` (one row per run: boundaries and lengths), ``summary.csv`` (per condition: medians with
bootstrap intervals, censored counts) and ``scaling.csv`` (the fitted exponents, per setting and side of the boundary).
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import BENIGN_LOSS, BOUNDARY_N_SNR2, dynamics_setting, figure1_setting
from ..dynamics import run_one
from ...io import FileProblem, save_csv, write_manifest
from ..phases import DELTA_SETTLED, DELTA_UNIFORM, detect_phases
from ... import runstore
from ...runstore import claim, compute_missing
from .lr_rule import lr_tag

SETTINGS = ("dynamics", "figure1")
PHASE_KEYS = ("t1", "t2", "t3", "len1", "len2", "len3")


def setting_configs(setting: str, N: int, mu: float, lr: float, steps: int):
    """(data, model, train) of one phase run: the setting's preset with N, ‖μ‖ and η replaced, span coordinates,
    no per-step test evaluation (the phases need the training series only)."""
    if setting == "dynamics":
        data, model, train = dynamics_setting(mu_norm=float(mu))
        train = train.replace(steps=steps)
    elif setting == "figure1":
        data, model, train = figure1_setting(N=N, mu_norm=float(mu))
    else:
        raise ValueError(f"unknown phase setting {setting!r}; choose one of {', '.join(map(repr, SETTINGS))}")
    return data.replace(N=N), model, train.replace(lr=float(lr), coords="span", eval_every=0)


def run_file(N: int, mu: int, lr: float, repeat: int) -> str:
    return f"N{N:03d}_mu{mu:03d}_lr{lr_tag(lr)}_r{repeat:03d}.npz"


def design(N: int, mus: tuple, lr: float, pair_mus: tuple, lrs: tuple, Ns: tuple) -> tuple:
    """The conditions (N, ‖μ‖, η) of one setting: the ‖μ‖ sweep at (N, η), then at each of ``pair_mus`` the rates
    ``lrs`` at N and the sizes ``Ns`` at η."""
    conds = [(N, mu, lr) for mu in mus]
    conds += [(N, mu, x) for mu in pair_mus for x in lrs] + [(n, mu, lr) for mu in pair_mus for n in Ns]
    return tuple(dict.fromkeys(conds))


@dataclass(frozen=True)
class PhaseStudy:
    """conditions : {setting: ((N, ‖μ‖, η), ...)}.   runs : seeds per condition.   steps : budget of the dynamics
    setting (the Figure-1 cell stops at its threshold).   n_boot : resamples of every interval."""
    name: str
    conditions: dict
    runs: int
    seed: int = 0
    steps: int = 500
    n_boot: int = 1000

    def __post_init__(self):
        conds = {}
        for setting, cs in self.conditions.items():
            conds[setting] = tuple((int(N), int(mu), float(lr)) for N, mu, lr in cs)
            for N, mu, lr in conds[setting]:
                setting_configs(setting, N, mu, lr, self.steps)        # validates every condition now
        object.__setattr__(self, "conditions", conds)
        if isinstance(self.runs, bool) or not isinstance(self.runs, int) or self.runs <= 0:
            raise ValueError(f"runs must be a positive integer, got {self.runs!r}")

    @classmethod
    def quick(cls, seed: int = 0) -> "PhaseStudy":
        """6 conditions per setting, 3 seeds (the dynamics setting at 300 steps): 36 runs."""
        return cls("quick", {"dynamics": design(10, (10, 30), 0.01, (10, 30), (0.02,), (20,)),
                             "figure1": design(20, (40, 80), 0.1, (40, 80), (0.2,), (10,))}, 3, seed, steps=300,
                   n_boot=200)

    @classmethod
    def full(cls, seed: int = 0) -> "PhaseStudy":
        """16 dynamics + 15 Figure-1 conditions, 10 seeds: 310 runs."""
        return cls("full", {"dynamics": design(10, (5, 10, 15, 20, 25, 30, 40, 60), 0.01, (10, 30), (0.005, 0.02),
                                               (20, 40)),
                            "figure1": design(20, (20, 30, 40, 50, 60, 80, 100), 0.1, (40, 80), (0.05, 0.2),
                                              (10, 40))}, 10, seed)

    def to_dict(self) -> dict:
        return {"study": "phases", "name": self.name, "runs": self.runs, "seed": self.seed, "steps": self.steps,
                "n_boot": self.n_boot, "delta_uniform": DELTA_UNIFORM, "delta_settled": DELTA_SETTLED,
                "benign_loss": BENIGN_LOSS, "boundary_N_snr2": BOUNDARY_N_SNR2,
                "conditions": {s: [list(c) for c in cs] for s, cs in self.conditions.items()}}


def phase_run(setting: str, N: int, mu: int, lr: float, steps: int, seed: int, repeat: int) -> dict:
    """One phase run (executes in a worker): ``refvit.jiang2024.dynamics.run_one`` on the setting's configs, with the setting
    and η added to the stored summary so that a saved file names its whole condition."""
    arrays = run_one(*setting_configs(setting, N, mu, lr, steps), seed, repeat)
    summary = {**json.loads(str(arrays["summary"])), "setting": setting, "lr": float(lr)}
    return {**arrays, "summary": np.array(json.dumps(summary, sort_keys=True, default=float))}


def _identity(setting: str, N: int, mu: int, lr: float, seed: int, repeat: int) -> dict:
    return {"setting": setting, "N": N, "mu_norm": float(mu), "lr": float(lr), "seed": seed, "repeat": repeat}


PHASE_SERIES = ("h_attn_signal", "h_attn_noise", "h_train_loss")


def load_run(path: Path, expect: dict, series=PHASE_SERIES):
    """(summary, arrays) of a saved run; ``FileProblem`` if it does not load, is another run than ``expect``, or
    lacks a per-step series of steps + 1 rows (``refvit.runstore.load_run``)."""
    s, a = runstore.load_run(path, expect, series)
    if len(a["step"]) != s["steps"] + 1:
        raise FileProblem(path, f"has {len(a['step'])} history rows, not one per step ({s['steps'] + 1})")
    return s, a


def run_phases(study: PhaseStudy, out, executor=None, workers: int | None = None, progress: bool = True) -> None:
    """Every missing run into out/<setting>/runs/, then the tables (``write_phase_tables``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with claim(out, "phase study"):                  # one process owns the folder while it runs
        _run_phases(study, out, executor, workers, progress)


def _run_phases(study: PhaseStudy, out: Path, executor, workers, progress) -> None:
    write_manifest(out / "study.json", study.to_dict())
    jobs = [(out / setting / "runs" / run_file(N, mu, lr, r), _identity(setting, N, mu, lr, study.seed, r), phase_run,
             (setting, N, mu, lr, study.steps, study.seed, r))
            for setting, conds in study.conditions.items() for N, mu, lr in conds for r in range(study.runs)]
    compute_missing(jobs, f"phases {study.name}", executor, workers, progress, where=out, series=PHASE_SERIES,
                    load=load_run)
    write_phase_tables(study.to_dict(), out)


def median_ci(x: np.ndarray, rng: np.random.Generator, n_boot: int, level: float = 0.95) -> tuple:
    """(median, lo, hi): the median of ``x`` and its percentile-bootstrap interval (NaN for an empty x)."""
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    boots = np.median(x[rng.integers(0, len(x), size=(n_boot, len(x)))], axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(np.median(x)), float(lo), float(hi)


def power_fit(rows: list[dict], key: str, rng: np.random.Generator, n_boot: int) -> dict:
    """Least squares log(key) = c + p₁ log N·SNR² + p₂ log η + p₃ log ‖μ‖ over the rows with key > 0 (docs/math.md
    (12.9)); percentile-bootstrap intervals over runs. A term whose variable is constant over the rows is dropped."""
    use = [r for r in rows if r[key] is not None and not (isinstance(r[key], float) and math.isnan(r[key]))
           and r[key] > 0]
    out = {"key": key, "n": len(use), "n_excluded": len(rows) - len(use)}
    names = ("N_snr2", "lr", "mu_norm")
    if len(use) < 5:
        return {**out, **{f"p_{n}": math.nan for n in names}}
    F = np.array([[math.log(r[n]) for n in names] for r in use])
    keep = [j for j in range(3) if np.ptp(F[:, j]) > 0]
    A = np.column_stack([np.ones(len(use)), F[:, keep]])
    y = np.log([float(r[key]) for r in use])

    def solve(idx):
        return np.linalg.lstsq(A[idx], y[idx], rcond=None)[0][1:]

    est = solve(np.arange(len(y)))
    boots = np.array([solve(rng.integers(0, len(y), size=len(y))) for _ in range(n_boot)])
    for i, j in enumerate(keep):
        lo, hi = np.quantile(boots[:, i], [0.025, 0.975])
        out.update({f"p_{names[j]}": float(est[i]), f"p_{names[j]}_lo": float(lo), f"p_{names[j]}_hi": float(hi)})
    for j in set(range(3)) - set(keep):
        out[f"p_{names[j]}"] = math.nan
    return out


RUN_COLUMNS = ["setting", "N", "mu_norm", "lr", "N_snr2", "repeat", "status", "steps", "test_loss", "benign",
               "winner", "gap_change", *PHASE_KEYS]
SUMMARY_STATS = [f"{k}_{s}" for k in PHASE_KEYS for s in ("median", "lo", "hi", "censored")]


def _stream(seed: int, *names) -> np.random.Generator:
    """The bootstrap generator of one interval, keyed by what it summarizes (and apart from every run stream), so
    that adding or removing a condition leaves the other intervals unchanged."""
    return np.random.default_rng([seed, 0xFA5E, zlib.crc32(repr(names).encode())])


def write_phase_tables(meta: dict, out) -> dict:
    """phases.csv (per run), summary.csv (per condition) and scaling.csv (per setting, side and phase)."""
    out = Path(out)
    rows, summary, scaling = [], [], []
    for setting, conds in meta["conditions"].items():
        for N, mu, lr in conds:
            group = []
            M = setting_configs(setting, N, mu, lr, meta["steps"])[0].M      # tokens per image of this condition
            for r in range(meta["runs"]):
                s, a = load_run(out / setting / "runs" / run_file(N, mu, lr, r),
                                _identity(setting, N, mu, lr, meta["seed"], r))
                ok = s["status"] in ("converged", "max_steps")
                ph = detect_phases(a["h_attn_signal"], a["h_attn_noise"], a["h_train_loss"], M) if ok else None
                lengths = ph.lengths() if ph else (None, None, None)
                nan = (lambda v: math.nan if v is None else float(v))
                row = {"setting": setting, "N": N, "mu_norm": float(mu), "lr": lr, "N_snr2": s["N_snr2"],
                       "repeat": r, "status": s["status"], "steps": s["steps"], "test_loss": s["test_loss"],
                       "benign": bool(ok and s["test_loss"] < BENIGN_LOSS),
                       "winner": (ph.winner if ph else None) or "none",
                       "gap_change": ph.gap_change if ph else math.nan,
                       **{k: nan(v) for k, v in zip(PHASE_KEYS, (*(ph[:3] if ph else (None,) * 3), *lengths))}}
                group.append(row)
            rows += group
            stats = {"setting": setting, "N": N, "mu_norm": float(mu), "lr": lr, "N_snr2": group[0]["N_snr2"],
                     "n_runs": len(group), "n_benign": sum(g["benign"] for g in group),
                     "n_signal_winner": sum(g["winner"] == "signal" for g in group)}
            rng = _stream(meta["seed"], setting, N, mu, lr)
            for k in PHASE_KEYS:
                x = np.array([g[k] for g in group], dtype=float)
                med = median_ci(x[np.isfinite(x)], rng, meta["n_boot"])
                stats.update({f"{k}_median": med[0], f"{k}_lo": med[1], f"{k}_hi": med[2],
                              f"{k}_censored": int(np.sum(~np.isfinite(x)))})
            summary.append(stats)
        for side in ("harmful", "benign"):
            part = [r for r in rows if r["setting"] == setting and
                    ((r["N_snr2"] >= BOUNDARY_N_SNR2) == (side == "benign"))]
            for k in ("len1", "len2", "t3"):
                scaling.append({"setting": setting, "side": side,
                                **power_fit(part, k, _stream(meta["seed"], setting, side, k), meta["n_boot"])})
    save_csv(out / "phases.csv", rows, RUN_COLUMNS)
    save_csv(out / "summary.csv", summary, ["setting", "N", "mu_norm", "lr", "N_snr2", "n_runs", "n_benign",
                                            "n_signal_winner", *SUMMARY_STATS])
    cols = ["setting", "side", "key", "n", "n_excluded"] + [f"p_{n}{s}" for n in ("N_snr2", "lr", "mu_norm")
                                                            for s in ("", "_lo", "_hi")]
    save_csv(out / "scaling.csv", [{c: r.get(c, math.nan) for c in cols} for r in scaling], cols)
    return {"rows": rows, "summary": summary, "scaling": scaling}


if __name__ == "__main__":    # a library module: say which command runs it rather than exit 0 having done nothing
    raise SystemExit("refvit.jiang2024.studies.phases is a library module; run it with "
                     "`refvit study phases --preset quick|full` "
                     "(or `python -m refvit.cli …`); `refvit --help` lists the commands")
