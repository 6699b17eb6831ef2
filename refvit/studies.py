"""Optimizer and label-noise studies, built on the Figure-1 sweep machinery (``refvit.sweep``).

**Optimizers** (Li et al., ICLR 2025: SignGD, and Adam which behaves like it, converge fast but generalize poorly on
noisy data; PAPER §8). GD, SignGD and Adam are compared in two settings: the Figure-1 setting (PAPER §7.1;
``figure1_setting``) and the dynamics setting (PAPER §7.2; ``dynamics_setting``). GD runs on the exact span backend
(PAPER §5.5); SignGD and Adam need a dense backend ("auto"): their elementwise updates leave the token span.

Learning-rate rule. Each optimizer gets one rate per setting from the *same* log grid, chosen from **pilot runs**
only: a 2 × 2 grid of cells, one N·SNR² clearly below and one clearly above the boundary for each of two N, × 2
seeds. Pilot runs draw their data, test set and init from ``streams(seed, N, ‖μ‖, r, PILOT_STREAM_TAG)``, a key
no reported run of any seed uses (``Sweep.stream_tag``), so a pilot's test set is a *held-out* set for tuning, never a reported number.
A rate is *feasible* when every pilot run reaches training loss < 0.01 within the step budget without diverging.
The grid is scanned from the largest rate downward:

* ``lr_rule="heldout"`` (default): choose the feasible rate with the lowest mean held-out logistic loss of its
  pilot runs (ties: the larger rate); the scan stops at the first infeasible rate after a feasible one (smaller
  rates are only slower).
* ``lr_rule="largest_stable"``: choose the first feasible rate, and stop there.

Why "heldout" is the default: with the stopping rule "training loss < 0.01", every rate of the quick grid is
"stable" for SignGD and Adam (1e-4 … 1) and 1e-2 … 1 is for GD: large rates reach the threshold in one or two steps
without any non-finite value. The largest stable rate is then the top of whatever grid one writes down, while
SignGD's held-out loss grows with the rate (Figure-1 pilots of ``refvit study optimizers --preset quick``: 0.64 at
1e-3, 1.25 at 1e-2, 14.3 at 0.1, 143 at 1), so that rule would make the comparison a statement about the grid.
Tuning on held-out data gives every optimizer its best rate on the grid instead. Both choices are saved
(``lr_choice.json``); the pilot tables (``pilot.csv``) show held-out loss and steps at every scanned rate.

**Label noise** (Zhang et al. 2025, PAPER §8.1): ``DataConfig(flip_rate=p)`` flips exactly round(p·N) training
labels; test labels stay clean. GD at the authors' η = 0.1 on the span backend, Figure-1 setting otherwise.

Presets ``quick`` (minutes on 2 cores) and ``full``. Every study is a set of ``Sweep`` folders (each resumable:
a killed study restarted on the same folder recomputes only the missing runs; the rate choice is recomputed from the
saved pilots, so it is the same) plus tidy tables assembled from them. ``refvit study …`` drives it; figures are
drawn by ``analysis/fig_optimizers.py`` and ``analysis/fig_labelnoise.py`` from the saved results only.
"""
from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import OPTIMIZERS, DataConfig, ModelConfig, TrainConfig, dynamics_setting, figure1_setting
from .io import atomic_write, load_json, save_csv, save_json, write_manifest

PILOT_STREAM_TAG = (1,)      # pilot streams: streams(seed, N, ‖μ‖, r, 1), disjoint from every reported run
BOUNDARY = 2.5               # N·SNR² at the benign/harmful boundary, SNR with σ_p of the noise token (PAPER §1.3)
LOSS_THRESHOLD = 0.01        # "converged": training loss below it (PAPER §3, §7.1)
LR_RULES = ("heldout", "largest_stable")
STUDIES = ("optimizers", "label-noise")
PRESETS = ("quick", "full")


def _backend(optimizer: str) -> str:
    """GD: the exact span trainer (PAPER §5.5); SignGD/Adam: dense ("auto"; span refuses them)."""
    return "span" if optimizer == "gd" else "auto"


def lr_tag(lr: float) -> str:
    return f"{lr:g}"


def regime_of(n_snr2: float, factor: float = 2.0) -> str:
    """'benign' if N·SNR² ≥ factor·2.5, 'harmful' if ≤ 2.5/factor, else 'transition' (SNR with σ_p, PAPER §1.3).

    factor = 2 keeps the cells within a factor 2 of the curve (where seeds disagree, PAPER §7.1) out of both groups.
    """
    if not factor >= 1:
        raise ValueError(f"factor must be >= 1, got {factor!r}")
    if n_snr2 >= factor * BOUNDARY:
        return "benign"
    if n_snr2 <= BOUNDARY / factor:
        return "harmful"
    return "transition"


# ---------------------------------------------------------------------------------------------------------------
# The learning-rate rule
# ---------------------------------------------------------------------------------------------------------------

def choose_lr(grid, evaluate, rule: str = "heldout") -> dict:
    """Pick one rate from ``grid`` by the stated rule (module docstring), scanning from the largest rate down.

    evaluate(lr) -> list of pilot rows, each a dict with "status" ("converged" means training loss < 0.01 reached
    within the budget; anything else, e.g. "max_steps" or "diverged", fails) and "test_loss" (held-out loss).
    Returns {"rule", "lr", "scanned": [{"lr", "feasible", "heldout_loss", "n", "n_converged"}, ...] in scan order,
    "largest_stable": first feasible rate, "heldout": best feasible rate (None if the scan could not decide it)}.
    """
    if rule not in LR_RULES:
        raise ValueError(f"unknown lr rule {rule!r}; choose one of {', '.join(LR_RULES)}")
    rates = sorted({float(x) for x in grid}, reverse=True)
    if not rates or any(not (math.isfinite(x) and x > 0) for x in rates):
        raise ValueError(f"the learning-rate grid must be non-empty and positive, got {list(grid)!r}")
    scanned = []
    for lr in rates:
        rows = list(evaluate(lr))
        if not rows:
            raise ValueError("evaluate(lr) returned no pilot runs")
        n_conv = sum(r["status"] == "converged" for r in rows)
        feasible = n_conv == len(rows)
        scanned.append({"lr": lr, "feasible": feasible, "n": len(rows), "n_converged": n_conv,
                        "heldout_loss": float(np.mean([r["test_loss"] for r in rows])) if feasible else math.nan})
        if feasible and rule == "largest_stable":
            break
        if not feasible and any(s["feasible"] for s in scanned[:-1]):
            break          # below a feasible rate, an infeasible one means the budget is now too short: stop
    ok = [s for s in scanned if s["feasible"]]
    if not ok:
        raise ValueError(f"no rate on the grid {rates} lets every pilot run reach training loss < "
                         f"{LOSS_THRESHOLD} within the step budget; extend the grid downward or raise the budget")
    largest = ok[0]["lr"]
    # the heldout choice is only decided if the scan went past the first feasible rate (rule "heldout")
    best = min(ok, key=lambda s: (s["heldout_loss"], -s["lr"]))["lr"] if rule == "heldout" else None
    return {"rule": rule, "lr": best if rule == "heldout" else largest, "largest_stable": largest,
            "heldout": best, "scanned": scanned, "grid": rates}


# ---------------------------------------------------------------------------------------------------------------
# Study definitions
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One experimental setting of the optimizer comparison.

    data/model/train : templates (N and ‖μ‖ replaced per run; train.steps is the step budget, stop at loss < 0.01).
    Ns, mu_norms, repeats : the comparison grid (one ``Sweep`` per optimizer).
    pilot_Ns, pilot_mus, pilot_repeats : the pilot grid of the learning-rate rule.
    regimes, curve_runs, curve_steps, curve_eval_every : fixed-length training curves (``refvit.dynamics``) at the
        chosen rates, ``curve_runs`` per regime (none if curve_runs = 0). eval_every: test loss every k steps.
    curve_optimizers : which optimizers get curves (None: all). A dense step of the dynamics setting costs ~0.1 s of
        CPU (d=2048, d_h=1024) and a dense test evaluation ~0.25 s, so the quick preset draws GD and SignGD only.
    references : extra (optimizer, rate) pairs run on the same grid and streams *outside* the rule, e.g. GD at the
        authors' rate of the setting (PAPER §7.1: 0.1, §7.2: 0.01), so that the chosen rates can be compared with
        the paper's own runs. reference_curve_steps : length of their curves (0: curve_steps).
    """
    name: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    Ns: tuple
    mu_norms: tuple
    repeats: int
    pilot_Ns: tuple
    pilot_mus: tuple
    pilot_repeats: int = 2
    regimes: tuple = ()
    curve_runs: int = 0
    curve_steps: int = 0
    curve_eval_every: int = 1
    snr_axis_sigma: float = 0.2
    curve_optimizers: tuple | None = None
    references: tuple = ()
    reference_curve_steps: int = 0

    def __post_init__(self):
        object.__setattr__(self, "references", tuple((str(o), float(lr)) for o, lr in self.references))
        if self.train.loss_threshold is None:
            raise ValueError("the setting's train template needs loss_threshold (the convergence criterion)")
        if self.curve_runs and (self.curve_steps <= 0 or not self.regimes):
            raise ValueError("curves need curve_steps > 0 and at least one regime")

    def sweep(self, kind: str, optimizer: str, lr: float, seed: int):
        """The ``Sweep`` of the pilot (kind="pilot") or of the comparison (kind="compare") for one optimizer/rate."""
        from .sweep import Sweep
        train = self.train.replace(optimizer=optimizer, lr=float(lr), backend=_backend(optimizer))
        if kind == "pilot":
            return Sweep(f"{self.name}-pilot-{optimizer}-{lr_tag(lr)}", self.pilot_Ns, self.pilot_mus,
                         self.pilot_repeats, seed, self.data, self.model, train, self.snr_axis_sigma,
                         stream_tag=PILOT_STREAM_TAG)
        return Sweep(f"{self.name}-{optimizer}", self.Ns, self.mu_norms, self.repeats, seed, self.data, self.model,
                     train, self.snr_axis_sigma)

    def curves(self, optimizer: str, lr: float, seed: int, steps: int | None = None):
        """The ``Dynamics`` spec of the fixed-length curves (exactly ``steps`` updates, default curve_steps)."""
        from .dynamics import Dynamics
        train = self.train.replace(optimizer=optimizer, lr=float(lr), backend=_backend(optimizer),
                                   steps=steps or self.curve_steps, loss_threshold=None,
                                   eval_every=self.curve_eval_every)
        return Dynamics(f"{self.name}-{optimizer}", self.regimes, self.curve_runs, seed, self.data, self.model, train)

    def to_dict(self) -> dict:
        return {"name": self.name, "data": self.data.to_dict(), "model": self.model.to_dict(),
                "train": self.train.to_dict(), "Ns": list(self.Ns), "mu_norms": list(self.mu_norms),
                "repeats": self.repeats, "pilot_Ns": list(self.pilot_Ns), "pilot_mus": list(self.pilot_mus),
                "pilot_repeats": self.pilot_repeats, "regimes": [list(r) for r in self.regimes],
                "curve_runs": self.curve_runs, "curve_steps": self.curve_steps,
                "curve_eval_every": self.curve_eval_every, "snr_axis_sigma": self.snr_axis_sigma,
                "curve_optimizers": None if self.curve_optimizers is None else list(self.curve_optimizers),
                "references": [list(r) for r in self.references],
                "reference_curve_steps": self.reference_curve_steps}

    def series(self, choice: dict, optimizers) -> list[dict]:
        """Every comparison run set of this setting: the chosen rate of each optimizer, then the references.

        Each is {"series", "optimizer", "lr", "reference", "folder", "curves" (folder or None), "curve_steps"}.
        """
        curve_opts = self.curve_optimizers or optimizers
        out = []
        for opt in optimizers:
            out.append({"series": opt, "optimizer": opt, "lr": choice[opt]["lr"], "reference": False, "folder": opt,
                        "curves": f"{opt}_curves" if self.curve_runs and opt in curve_opts else None,
                        "curve_steps": self.curve_steps})
        for opt, lr in self.references:
            name = f"{opt}@{lr_tag(lr)}"
            out.append({"series": name, "optimizer": opt, "lr": lr, "reference": True,
                        "folder": f"ref_{opt}_lr{lr_tag(lr)}",
                        "curves": f"ref_{opt}_lr{lr_tag(lr)}_curves" if self.curve_runs else None,
                        "curve_steps": self.reference_curve_steps or self.curve_steps})
        return out


def figure1_optimizer_setting(Ns, mus, repeats, budget) -> Setting:
    """Figure-1 setting (PAPER §7.1). Pilot cells N ∈ {8, 16} × ‖μ‖ ∈ {30, 100}: N·SNR² = 0.44, 0.88 (harmful)
    and 4.9, 9.8 (benign) against the boundary 2.5 (PAPER §1.3)."""
    data, model, train = figure1_setting()
    return Setting("figure1", data, model, train.replace(steps=budget, loss_threshold=LOSS_THRESHOLD),
                   tuple(Ns), tuple(mus), repeats, (8, 16), (30, 100), 2, references=(("gd", train.lr),))


def dynamics_optimizer_setting(repeats, curve_runs, curve_steps, eval_every, budget=500,
                               curve_optimizers=None) -> Setting:
    """Dynamics setting (PAPER §7.2), N = 10: the harmful ‖μ‖ = 1 (N·SNR² = 0.005) and the benign ‖μ‖ = 30 (4.4)
    of ``refvit.dynamics``; the pilot uses the same two cells (the N grid has one value)."""
    from .dynamics import REGIMES
    data, model, train = dynamics_setting()
    mus = tuple(mu for _, mu in REGIMES)
    return Setting("dynamics", data, model, train.replace(steps=budget, loss_threshold=LOSS_THRESHOLD),
                   (data.N,), mus, repeats, (data.N,), mus, 2, REGIMES, curve_runs, curve_steps, eval_every,
                   snr_axis_sigma=data.sigma_w, curve_optimizers=curve_optimizers,
                   references=(("gd", train.lr),), reference_curve_steps=train.steps)


@dataclass(frozen=True)
class OptimizerStudy:
    """GD vs SignGD vs Adam in each ``Setting``, rates by ``choose_lr`` on the shared ``lr_grid``."""
    name: str
    settings: tuple
    lr_grid: tuple
    optimizers: tuple = OPTIMIZERS
    lr_rule: str = "heldout"
    seed: int = 0

    def __post_init__(self):
        if self.lr_rule not in LR_RULES:
            raise ValueError(f"unknown lr rule {self.lr_rule!r}; choose one of {', '.join(LR_RULES)}")
        for o in self.optimizers:
            if o not in OPTIMIZERS:
                raise ValueError(f"unknown optimizer {o!r}; choose from {', '.join(OPTIMIZERS)}")

    @classmethod
    def quick(cls, seed: int = 0, lr_rule: str = "heldout") -> "OptimizerStudy":
        """Figure 1: 5 N × 5 ‖μ‖ × 2 seeds per optimizer, budget 300 steps; dynamics setting: 3 seeds per regime
        to convergence (budget 500) and, for GD and SignGD, 2 curves per regime of 60 steps (test loss every 5);
        rate grid 1 … 1e-4 (decades)."""
        return cls("quick", (figure1_optimizer_setting((4, 8, 12, 16, 20), (20, 40, 60, 80, 100), 2, 300),
                             dynamics_optimizer_setting(3, 2, 60, 5, curve_optimizers=("gd", "signgd"))),
                   (1.0, 0.1, 0.01, 1e-3, 1e-4), lr_rule=lr_rule, seed=seed)

    @classmethod
    def full(cls, seed: int = 0, lr_rule: str = "heldout") -> "OptimizerStudy":
        """Figure 1: 10 N × 10 ‖μ‖ × 5 seeds, the authors' 1000-step budget; dynamics setting: 10 seeds and the
        authors' 10 curves × 500 steps per regime (test loss every 5 steps), all optimizers; rate grid 3 … 1e-5
        (half decades)."""
        grid = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
        return cls("full", (figure1_optimizer_setting(tuple(range(2, 21, 2)), tuple(range(10, 101, 10)), 5, 1000),
                            dynamics_optimizer_setting(10, 10, 500, 5)),
                   grid, lr_rule=lr_rule, seed=seed)

    def to_dict(self) -> dict:
        return {"study": "optimizers", "name": self.name, "settings": [s.to_dict() for s in self.settings],
                "lr_grid": list(self.lr_grid), "optimizers": list(self.optimizers), "lr_rule": self.lr_rule,
                "seed": self.seed, "pilot_stream_tag": list(PILOT_STREAM_TAG), "loss_threshold": LOSS_THRESHOLD,
                "boundary_N_snr2": BOUNDARY}


@dataclass(frozen=True)
class LabelNoiseStudy:
    """Figure-1 grid at several flip rates (one ``Sweep`` per rate); GD at the authors' η = 0.1, span backend.

    Ns should be multiples of 10 so that round(p·N) = p·N exactly for p ∈ {0.1, 0.2, 0.3} (``data.flip_labels``).
    benign_factor : benign-regime cells are those with N·SNR² ≥ benign_factor·2.5 (``regime_of``).
    """
    name: str
    flip_rates: tuple
    Ns: tuple
    mu_norms: tuple
    repeats: int
    seed: int = 0
    benign_factor: float = 2.0
    data: DataConfig = field(default_factory=lambda: figure1_setting()[0])
    model: ModelConfig = field(default_factory=lambda: figure1_setting()[1])
    train: TrainConfig = field(default_factory=lambda: figure1_setting()[2])

    def __post_init__(self):
        for p in self.flip_rates:
            self.data.replace(flip_rate=p)          # validates 0 ≤ p < 0.5
        if len(set(self.flip_rates)) != len(self.flip_rates):
            raise ValueError("flip_rates must not repeat values")

    @classmethod
    def quick(cls, seed: int = 0) -> "LabelNoiseStudy":
        """p ∈ {0, 0.1, 0.2} × N ∈ {10, 20, 40} × ‖μ‖ ∈ {20, …, 100} × 2 seeds = 90 runs."""
        return cls("quick", (0.0, 0.1, 0.2), (10, 20, 40), (20, 40, 60, 80, 100), 2, seed)

    @classmethod
    def full(cls, seed: int = 0) -> "LabelNoiseStudy":
        """p ∈ {0, 0.1, 0.2, 0.3} × N ∈ {10, 20, 30, 40} × ‖μ‖ ∈ {10, …, 100} × 5 seeds = 800 runs."""
        return cls("full", (0.0, 0.1, 0.2, 0.3), (10, 20, 30, 40), tuple(range(10, 101, 10)), 5, seed)

    def sweep(self, p: float):
        from .sweep import Sweep
        return Sweep(f"labelnoise-p{p:g}", self.Ns, self.mu_norms, self.repeats, self.seed,
                     self.data.replace(flip_rate=float(p)), self.model,
                     self.train.replace(backend=_backend("gd")))

    def to_dict(self) -> dict:
        return {"study": "label-noise", "name": self.name, "flip_rates": list(self.flip_rates), "Ns": list(self.Ns),
                "mu_norms": list(self.mu_norms), "repeats": self.repeats, "seed": self.seed,
                "benign_factor": self.benign_factor, "boundary_N_snr2": BOUNDARY, "data": self.data.to_dict(),
                "model": self.model.to_dict(), "train": self.train.replace(backend=_backend("gd")).to_dict(),
                "folders": {lr_tag(p): p_folder(p) for p in self.flip_rates}}


def p_folder(p: float) -> str:
    return f"p{p:.2f}"


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------

def run_optimizers(study: OptimizerStudy, out, executor=None, workers: int | None = None,
                   progress: bool = True) -> dict:
    """Pilots → rate choice → comparison sweep (→ curves) for every setting and optimizer, into folder ``out``.

    Layout: out/study.json; out/<setting>/pilot/<opt>_lr<η>/ (Sweep folders), out/<setting>/lr_choice.json,
    out/<setting>/series.json (``Setting.series``: what was compared, and where), out/<setting>/<opt>/ (the
    comparison Sweep: table.csv), out/<setting>/<opt>_curves/ (Dynamics runs), out/<setting>/ref_gd_lr<η>/ (the
    references); out/pilot.csv, out/table.csv (all comparison runs, with setting/series/optimizer/lr columns),
    out/summary.csv.
    Returns {"choices": {setting: {optimizer: choice}}, "timing": {...}}.
    """
    from .dynamics import run_dynamics
    from .sweep import executor_context, run_sweep
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out / "study.json", study.to_dict())
    choices, timing = {}, {}
    ctx = executor_context(executor, workers)
    with ctx as ex:
        for setting in study.settings:
            sdir = out / setting.name
            t0 = time.perf_counter()
            choices[setting.name] = {}
            for opt in study.optimizers:
                def evaluate(lr, opt=opt):
                    sw = setting.sweep("pilot", opt, lr, study.seed)
                    return run_sweep(sw, sdir / "pilot" / f"{opt}_lr{lr_tag(lr)}", executor=ex, progress=progress)
                choices[setting.name][opt] = choose_lr(study.lr_grid, evaluate, study.lr_rule)
            save_json(sdir / "lr_choice.json", choices[setting.name])
            timing[f"{setting.name}_pilot_seconds"] = time.perf_counter() - t0
            series = setting.series(choices[setting.name], study.optimizers)
            save_json(sdir / "series.json", series)
            t0 = time.perf_counter()
            for s in series:
                run_sweep(setting.sweep("compare", s["optimizer"], s["lr"], study.seed), sdir / s["folder"],
                          executor=ex, progress=progress)
            timing[f"{setting.name}_compare_seconds"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for s in series:
                if s["curves"]:
                    run_dynamics(setting.curves(s["optimizer"], s["lr"], study.seed, s["curve_steps"]),
                                 sdir / s["curves"], executor=ex, progress=progress)
            timing[f"{setting.name}_curves_seconds"] = time.perf_counter() - t0
    write_optimizer_tables(study, out)
    return {"choices": choices, "timing": timing}


def run_label_noise(study: LabelNoiseStudy, out, executor=None, workers: int | None = None,
                    progress: bool = True) -> dict:
    """One Sweep per flip rate into out/p<p>/; then out/table.csv (with flip_rate) and out/summary.csv."""
    from .sweep import executor_context, run_sweep
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out / "study.json", study.to_dict())
    t0 = time.perf_counter()
    ctx = executor_context(executor, workers)
    with ctx as ex:
        for p in study.flip_rates:
            run_sweep(study.sweep(p), out / p_folder(p), executor=ex, progress=progress)
    timing = {"sweeps_seconds": time.perf_counter() - t0}
    write_label_noise_tables(study.to_dict(), out)
    return {"timing": timing}


# ---------------------------------------------------------------------------------------------------------------
# Tidy tables (read only saved results)
# ---------------------------------------------------------------------------------------------------------------

def _table_rows(path) -> list[dict]:
    from .sweep import load_table
    t = load_table(path)
    n = len(next(iter(t.values())))
    return [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in t.items()} for i in range(n)]


def _stats(rows: list[dict]) -> dict:
    """Steps (converged runs), test loss and test 0-1 error (converged runs) of a group of runs."""
    conv = [r for r in rows if r["converged"]]
    steps = np.array([r["steps"] for r in conv], dtype=float)
    loss = np.array([r["test_loss"] for r in conv], dtype=float)
    err = np.array([r["test_error"] for r in conv], dtype=float)
    q = (lambda a, x: float(np.quantile(a, x)) if len(a) else math.nan)
    m = (lambda a: float(a.mean()) if len(a) else math.nan)
    s = (lambda a: float(a.std()) if len(a) else math.nan)
    return {"n_runs": len(rows), "n_converged": len(conv), "steps_median": q(steps, 0.5),
            "steps_min": q(steps, 0.0), "steps_max": q(steps, 1.0), "test_loss_mean": m(loss),
            "test_loss_std": s(loss), "test_loss_median": q(loss, 0.5), "test_error_mean": m(err),
            "test_error_std": s(err)}


SUMMARY_COLUMNS = ["n_runs", "n_converged", "steps_median", "steps_min", "steps_max", "test_loss_mean",
                   "test_loss_std", "test_loss_median", "test_error_mean", "test_error_std"]


def write_optimizer_tables(study: OptimizerStudy | dict, out) -> dict:
    """Assemble out/pilot.csv, out/table.csv and out/summary.csv from the saved sweep folders. Returns them."""
    from .sweep import COLUMNS
    meta = study.to_dict() if isinstance(study, OptimizerStudy) else study
    out = Path(out)
    pilot, table, summary = [], [], []
    for s in meta["settings"]:
        sdir = out / s["name"]
        choice = load_json(sdir / "lr_choice.json")
        regimes = {int(mu): name for name, mu in s["regimes"]}
        for opt in meta["optimizers"]:
            for sc in choice[opt]["scanned"]:
                for r in _table_rows(sdir / "pilot" / f"{opt}_lr{lr_tag(sc['lr'])}" / "table.csv"):
                    pilot.append({"setting": s["name"], "optimizer": opt, "lr": sc["lr"],
                                  "chosen": sc["lr"] == choice[opt]["lr"], **r})
        for ser in load_json(sdir / "series.json"):
            head = {"setting": s["name"], "series": ser["series"], "optimizer": ser["optimizer"], "lr": ser["lr"],
                    "reference": ser["reference"]}
            rows = [{**head, "group": regimes.get(int(r["mu_norm"])) or regime_of(r["N_snr2"]), **r}
                    for r in _table_rows(sdir / ser["folder"] / "table.csv")]
            table += rows
            for group in ("benign", "transition", "harmful"):
                g = [r for r in rows if r["group"] == group]
                if g:
                    summary.append({**head, "group": group, **_stats(g)})
    head = ["setting", "series", "optimizer", "lr", "reference", "group"]
    save_csv(out / "pilot.csv", pilot, ["setting", "optimizer", "lr", "chosen", *COLUMNS])
    save_csv(out / "table.csv", table, [*head, *COLUMNS])
    save_csv(out / "summary.csv", summary, [*head, *SUMMARY_COLUMNS])
    return {"pilot": pilot, "table": table, "summary": summary}


def write_label_noise_tables(meta: dict, out) -> dict:
    """out/table.csv (every run, with flip_rate, n_flipped and group) and out/summary.csv (per p and group)."""
    from .sweep import COLUMNS
    out = Path(out)
    table, summary = [], []
    for p in meta["flip_rates"]:
        rows = _table_rows(out / p_folder(p) / "table.csv")
        for r in rows:
            table.append({"flip_rate": p, "n_flipped": int(round(p * r["N"])),
                          "group": regime_of(r["N_snr2"], meta["benign_factor"]), **r})
        for group in ("benign", "transition", "harmful"):
            g = [r for r in table if r["flip_rate"] == p and r["group"] == group]
            if g:
                summary.append({"flip_rate": p, "group": group, **_stats(g)})
    save_csv(out / "table.csv", table, ["flip_rate", "n_flipped", "group", *COLUMNS])
    save_csv(out / "summary.csv", summary, ["flip_rate", "group", *SUMMARY_COLUMNS])
    return {"table": table, "summary": summary}


def read_csv(path) -> list[dict]:
    """A tidy CSV written here, as a list of dicts with numbers parsed (ints stay ints; "True"/"False" → bool)."""
    def parse(v):
        if v in ("True", "False"):
            return v == "True"
        for f in (int, float):
            try:
                return f(v)
            except ValueError:
                pass
        return v
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


# ---------------------------------------------------------------------------------------------------------------
# Text summaries
# ---------------------------------------------------------------------------------------------------------------

def _fmt(x, spec=".3g"):
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def optimizer_summary_text(out, command: str = "") -> str:
    out = Path(out)
    meta = load_json(out / "study.json")
    lines = [command or f"refvit study optimizers --preset {meta['name']}",
             f"rate rule: {meta['lr_rule']} on the grid {meta['lr_grid']} (pilot streams tagged {PILOT_STREAM_TAG});"
             f" converged = training loss < {LOSS_THRESHOLD}"]
    summary = read_csv(out / "summary.csv")
    for s in meta["settings"]:
        choice = load_json(out / s["name"] / "lr_choice.json")
        lines.append(f"[{s['name']}] budget {s['train']['steps']} steps; comparison grid {len(s['Ns'])} N x "
                     f"{len(s['mu_norms'])} |mu| x {s['repeats']} seeds")
        for opt in meta["optimizers"]:
            c = choice[opt]
            scan = ", ".join(f"{lr_tag(x['lr'])}:{'ok' if x['feasible'] else 'fail'}"
                             + (f"/{x['heldout_loss']:.3g}" if x["feasible"] else "") for x in c["scanned"])
            lines.append(f"  {opt:6s} lr={lr_tag(c['lr'])} (largest stable {lr_tag(c['largest_stable'])}, "
                         f"heldout {lr_tag(c['heldout']) if c['heldout'] is not None else '-'}); scan "
                         f"lr:feasible/heldout loss = {scan}")
        for ser in load_json(out / s["name"] / "series.json"):
            ref = ", a reference: not chosen by the rule" if ser["reference"] else ""
            lines.append(f"  {ser['series']} (lr = {ser['lr']:g}{ref}):")
            for r in summary:
                if r["setting"] == s["name"] and r["series"] == ser["series"]:
                    lines.append(f"      {r['group']:10s} runs {r['n_converged']}/{r['n_runs']} converged; steps "
                                 f"median {_fmt(r['steps_median'], 'g')} [{_fmt(r['steps_min'], 'g')}, "
                                 f"{_fmt(r['steps_max'], 'g')}]; test loss {_fmt(r['test_loss_mean'])} ± "
                                 f"{_fmt(r['test_loss_std'])}; test error {_fmt(r['test_error_mean'])}")
    return "\n".join(lines) + "\n"


def label_noise_summary_text(out, command: str = "") -> str:
    out = Path(out)
    meta = load_json(out / "study.json")
    lines = [command or f"refvit study label-noise --preset {meta['name']}",
             f"GD lr={meta['train']['lr']:g}, budget {meta['train']['steps']} steps, {len(meta['Ns'])} N x "
             f"{len(meta['mu_norms'])} |mu| x {meta['repeats']} seeds per flip rate; benign cells: N*SNR^2 >= "
             f"{meta['benign_factor']:g} x {BOUNDARY} (sigma_p), harmful: <= {BOUNDARY}/{meta['benign_factor']:g}"]
    for r in read_csv(out / "summary.csv"):
        lines.append(f"  p={r['flip_rate']:<4g} {r['group']:10s} runs {r['n_converged']}/{r['n_runs']} converged; "
                     f"test 0-1 error {_fmt(r['test_error_mean'])} ± {_fmt(r['test_error_std'])}; test loss "
                     f"{_fmt(r['test_loss_mean'])}; steps median {_fmt(r['steps_median'], 'g')}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# `refvit study`
# ---------------------------------------------------------------------------------------------------------------

def study_tag(kind: str, preset: str, lr_rule: str = "heldout") -> str:
    """Name of a study run: "optimizers_quick", "labelnoise_full", "optimizers_quick_largest_stable", …"""
    rule = f"_{lr_rule}" if kind == "optimizers" and lr_rule != "heldout" else ""
    return f"{kind.replace('-', '')}_{preset}{rule}"


def draw(kind: str, tag: str, results="results", figures="figures") -> list[Path]:
    """Draw a study's figures from its saved results (results/study_<tag>/) into figures/; returns the PNGs."""
    d = Path(results) / f"study_{tag}"
    figures = Path(figures)
    if kind == "optimizers":
        from analysis import fig_optimizers
        outs = [figures / f"{tag}_heatmaps.png", figures / f"{tag}_dynamics.png"]
        fig_optimizers.main([str(d), "--out-heatmaps", str(outs[0]), "--out-dynamics", str(outs[1])])
        return outs
    from analysis import fig_labelnoise
    out = figures / f"{tag}.png"
    fig_labelnoise.main([str(d), "--out", str(out)])
    return [out]


def run_study(kind: str, preset: str, results="results", figures="figures", seed: int = 0, workers=None,
              executor=None, progress: bool = True, lr_rule: str = "heldout", figures_only: bool = False) -> str:
    """Run (or resume) one study preset, write its tables, figures and a text summary; return the summary."""
    if kind not in STUDIES:
        raise ValueError(f"unknown study {kind!r}; choose one of {', '.join(STUDIES)} or 'all'")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    tag = study_tag(kind, preset, lr_rule)
    d = Path(results) / f"study_{tag}"
    t0 = time.perf_counter()
    if not figures_only:
        if kind == "optimizers":
            run_optimizers(getattr(OptimizerStudy, preset)(seed=seed, lr_rule=lr_rule), d, executor, workers,
                           progress)
        else:
            run_label_noise(getattr(LabelNoiseStudy, preset)(seed=seed), d, executor, workers, progress)
    elif not (d / "study.json").exists():
        raise ValueError(f"no saved study in {d}; run `refvit study {kind} --preset {preset}` first")
    seconds = time.perf_counter() - t0
    draw(kind, tag, results, figures)
    cmd = f"refvit study {kind} --preset {preset}" + (f" --seed {seed}" if seed else "") + \
        (f" --lr-rule {lr_rule}" if kind == "optimizers" and lr_rule != "heldout" else "")
    text = (optimizer_summary_text if kind == "optimizers" else label_noise_summary_text)(d, cmd)
    if not figures_only:
        text += f"wall clock {seconds:.1f} s for the runs (resumed runs are not recomputed)\n"
    elif (d / "summary.txt").exists():          # a redraw keeps the timing of the run that made the results
        text += "".join(line for line in (d / "summary.txt").read_text().splitlines(keepends=True)
                        if line.startswith("wall clock"))
    atomic_write(d / "summary.txt", lambda fh: fh.write(text.encode()))
    Path(figures).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(figures) / f"{tag}_summary.txt", lambda fh: fh.write(text.encode()))
    print(text, end="")
    return text


def cmd_study(args) -> int:
    kinds = STUDIES if args.study == "all" else (args.study,)
    for kind in kinds:
        run_study(kind, args.preset, args.results, args.figures, seed=args.seed, workers=args.workers,
                  progress=not args.no_progress, lr_rule=args.lr_rule, figures_only=args.figures_only)
    return 0


def add_subcommand(sub) -> None:
    p = sub.add_parser("study", help="optimizer (GD/SignGD/Adam) and label-noise studies",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Run a study preset into RESULTS/study_<name>_<preset>/ (resumable: rerun to "
                                   "finish a killed run), then draw its figures and a text summary into FIGURES.")
    p.add_argument("study", choices=(*STUDIES, "all"))
    p.add_argument("--preset", choices=PRESETS, default="quick",
                   help="quick: coarse grids, a few minutes on 2 cores; full: larger grids, more seeds")
    p.add_argument("--seed", type=int, default=0, help="base seed of every random stream")
    p.add_argument("--lr-rule", choices=LR_RULES, default="heldout",
                   help="optimizer study: how each optimizer's rate is picked from the grid (see refvit.studies)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core; 0: serial)")
    p.add_argument("--results", default="results", help="folder for saved runs")
    p.add_argument("--figures", default="figures", help="folder for figures and summaries")
    p.add_argument("--figures-only", action="store_true", help="only redraw figures/summaries from saved results")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_study)
