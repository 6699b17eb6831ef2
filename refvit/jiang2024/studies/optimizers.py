"""The optimizer study: GD, SignGD and Adam in the Figure-1 and the dynamics settings.

**Optimizers** (Li et al., ICLR 2025: SignGD, and Adam which behaves like it, converge fast but generalize poorly on
noisy data; docs/math.md (6.2), (6.3)). GD, SignGD and Adam are compared in two settings: the Figure-1 setting
(docs/math.md §10.1; ``figure1_setting``) and the dynamics setting (docs/math.md §10.2; ``dynamics_setting``). GD runs
on the exact span backend (docs/math.md §8); SignGD and Adam need a dense backend ("auto"): their elementwise updates
leave the token span. Each optimizer's rate comes from ``refvit.jiang2024.studies.lr_rule``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..config import BOUNDARY_N_SNR2, LOSS_THRESHOLD, DataConfig, ModelConfig, dynamics_setting, figure1_setting
from ...config import OPTIMIZERS, TrainConfig
from ..dynamics import REGIMES, Dynamics, run_dynamics
from ...executors import executor_context
from ...io import load_json, save_csv, save_json
from ...runstore import renew_manifest
from ...results import COLUMNS
from ..sweep import Sweep, run_sweep, verified_table
from .common import SUMMARY_COLUMNS, coords_for, group_stats, regime_of
from .lr_rule import LR_RULES, choose_lr, lr_tag

PILOT_STREAM_TAG = (1,)      # pilot streams: streams(seed, N, ‖μ‖, r, 1), disjoint from every reported run


@dataclass(frozen=True)
class Setting:
    """One experimental setting of the optimizer comparison.

    data/model/train : templates (N and ‖μ‖ replaced per run; train.steps is the step budget, stop at loss < 0.01).
    Ns, mu_norms, repeats : the comparison grid (one ``Sweep`` per optimizer).
    pilot_Ns, pilot_mus, pilot_repeats : the pilot grid of the learning-rate rule.
    regimes, curve_runs, curve_steps, curve_eval_every : fixed-length training curves (``refvit.jiang2024.dynamics``) at the
        chosen rates, ``curve_runs`` per regime (none if curve_runs = 0). eval_every: test loss every k steps.
        curve_optimizers : which optimizers get curves (None: all). A dense step of the dynamics setting costs ~0.1 s of
        CPU (d=2048, d_h=1024) and a dense test evaluation ~0.25 s, so the quick preset draws GD and SignGD only.
        references : extra (optimizer, rate) pairs run on the same grid and streams *outside* the rule, e.g. GD at the
        authors' rate of the setting (0.1: docs/math.md §10.1; 0.01: §10.2), so that the chosen rates can be compared
        with the paper's own runs. reference_curve_steps : length of their curves (0: curve_steps).
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
        train = self.train.replace(optimizer=optimizer, lr=float(lr), **coords_for(optimizer))
        if kind == "pilot":
            return Sweep(f"{self.name}-pilot-{optimizer}-{lr_tag(lr)}", self.pilot_Ns, self.pilot_mus,
                         self.pilot_repeats, seed, self.data, self.model, train, stream_tag=PILOT_STREAM_TAG)
        return Sweep(f"{self.name}-{optimizer}", self.Ns, self.mu_norms, self.repeats, seed, self.data, self.model,
                     train)

    def curves(self, optimizer: str, lr: float, seed: int, steps: int | None = None):
        """The ``Dynamics`` spec of the fixed-length curves (exactly ``steps`` updates, default curve_steps)."""
        train = self.train.replace(optimizer=optimizer, lr=float(lr), **coords_for(optimizer),
                                   steps=steps or self.curve_steps, loss_threshold=None,
                                   eval_every=self.curve_eval_every)
        return Dynamics(f"{self.name}-{optimizer}", self.regimes, self.curve_runs, seed, self.data, self.model, train)

    def to_dict(self) -> dict:
        return {"name": self.name, "data": self.data.to_dict(), "model": self.model.to_dict(),
                "train": self.train.to_dict(), "Ns": list(self.Ns), "mu_norms": list(self.mu_norms),
                "repeats": self.repeats, "pilot_Ns": list(self.pilot_Ns), "pilot_mus": list(self.pilot_mus),
                "pilot_repeats": self.pilot_repeats, "regimes": [list(r) for r in self.regimes],
                "curve_runs": self.curve_runs, "curve_steps": self.curve_steps,
                "curve_eval_every": self.curve_eval_every,
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
    """Figure-1 setting (docs/math.md §10.1). Pilot cells N ∈ {8, 16} × ‖μ‖ ∈ {30, 100}: N·SNR² = 0.44, 0.88 (harmful)
    and 4.9, 9.8 (benign) against the boundary 2.5 (docs/math.md (1.9))."""
    data, model, train = figure1_setting()
    return Setting("figure1", data, model, train.replace(steps=budget, loss_threshold=LOSS_THRESHOLD),
                   tuple(Ns), tuple(mus), repeats, (8, 16), (30, 100), 2, references=(("gd", train.lr),))


def dynamics_optimizer_setting(repeats, curve_runs, curve_steps, eval_every, budget=500,
                               curve_optimizers=None) -> Setting:
    """Dynamics setting (docs/math.md §10.2), N = 10: the harmful ‖μ‖ = 1 (N·SNR² = 0.005) and the benign ‖μ‖ = 30 (4.4)
    of ``refvit.jiang2024.dynamics``; the pilot uses the same two cells (the N grid has one value)."""
    data, model, train = dynamics_setting()
    mus = tuple(mu for _, mu in REGIMES)
    return Setting("dynamics", data, model, train.replace(steps=budget, loss_threshold=LOSS_THRESHOLD),
                   (data.N,), mus, repeats, (data.N,), mus, 2, REGIMES, curve_runs, curve_steps, eval_every,
                   curve_optimizers=curve_optimizers,
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
                "boundary_N_snr2": BOUNDARY_N_SNR2}


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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    renew_manifest(out / "study.json", study.to_dict())   # damaged: set aside (the sweeps check their runs)
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


def write_optimizer_tables(study: OptimizerStudy | dict, out) -> dict:
    """Assemble out/pilot.csv, out/table.csv and out/summary.csv from the saved sweep folders. Returns them."""
    meta = study.to_dict() if isinstance(study, OptimizerStudy) else study
    out = Path(out)
    pilot, table, summary = [], [], []
    for s in meta["settings"]:
        sdir = out / s["name"]
        choice = load_json(sdir / "lr_choice.json")
        regimes = {int(mu): name for name, mu in s["regimes"]}
        for opt in meta["optimizers"]:
            for sc in choice[opt]["scanned"]:
                for r in verified_table(sdir / "pilot" / f"{opt}_lr{lr_tag(sc['lr'])}")[1]:
                    pilot.append({"setting": s["name"], "optimizer": opt, "lr": sc["lr"],
                                  "chosen": sc["lr"] == choice[opt]["lr"], **r})
        for ser in load_json(sdir / "series.json"):
            head = {"setting": s["name"], "series": ser["series"], "optimizer": ser["optimizer"], "lr": ser["lr"],
                    "reference": ser["reference"]}
            rows = [{**head, "group": regimes.get(int(r["mu_norm"])) or regime_of(r["N_snr2"]), **r}
                    for r in verified_table(sdir / ser["folder"])[1]]
            table += rows
            for group in ("benign", "transition", "harmful"):
                g = [r for r in rows if r["group"] == group]
                if g:
                    summary.append({**head, "group": group, **group_stats(g)})
    head = ["setting", "series", "optimizer", "lr", "reference", "group"]
    save_csv(out / "pilot.csv", pilot, ["setting", "optimizer", "lr", "chosen", *COLUMNS])
    save_csv(out / "table.csv", table, [*head, *COLUMNS])
    save_csv(out / "summary.csv", summary, [*head, *SUMMARY_COLUMNS])
    return {"pilot": pilot, "table": table, "summary": summary}


if __name__ == "__main__":    # a library module: say which command runs it rather than exit 0 having done nothing
    raise SystemExit("refvit.jiang2024.studies.optimizers is a library module; run it with "
                     "`refvit study optimizers --preset quick|full` "
                     "(or `python -m refvit.cli …`); `refvit --help` lists the commands")
