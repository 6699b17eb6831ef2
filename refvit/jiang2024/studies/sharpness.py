"""The sharpness study: how the fitted boundary N·SNR^a = C and the width of its transition change with d and with
the data model (docs/math.md §12.1–§12.3).

Conditions. One ``Sweep`` per token dimension d of ``ds`` on the Figure-1 setting, and at d = ``variant_d`` one per
data variant of ``VARIANTS`` (one switch of docs/math.md §9.2 changed at a time, towards the theory's reading). Every
condition uses the same SNR grid in the theory's convention (σ_p, docs/math.md (1.6)): ‖μ‖ = round(SNR·σ_p·√d), so
every d covers the same N·SNR² range. The rate follows ``lr_scaling`` (docs/math.md (12.1)); the initialisation is
the authors' U(±1/√d)/16, whose initial value and logit scales do not depend on d (docs/math.md (12.2)).

Before any run, ``SharpnessStudy`` refuses a grid whose rate puts the first step outside the stable small-step
regime, η·λ ≥ 2 with λ the curvature bound of docs/math.md (12.3), naming the rule, the condition and the cell.
Runs that fail anyway keep their status (``max_steps``, ``diverged``, ``overflow``, ``nonfinite_test``) and are
counted per condition, never fitted (``refvit.fit``).

Streams: run (N, ‖μ‖, r) of every condition draws from ``streams(seed, N, ‖μ‖, r)``, so the variants at d = 1024
share their draws with the d = 1024 condition wherever the data model allows (paired comparisons).
"""
from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import BENIGN_LOSS, DataConfig, ModelConfig, figure1_setting
from ...config import TrainConfig
from ...executors import executor_context
from ..boundary import fit_sweep
from ...fit import fit_width
from ...io import load_json, save_csv
from ...runstore import renew_manifest
from ...results import COLUMNS, counted
from ..sweep import Sweep, run_sweep, verified_table

LR_SCALINGS = ("inverse_d", "fixed")
# one switch of docs/math.md §9.2 at a time, from the authors' data model towards the theory's reading
VARIANTS = {"projected": {"project_noise": True}, "zero_tokens": {"other_tokens": "zero"},
            "rademacher": {"labels": "rademacher"}}
STABLE_STEP = 2.0     # GD on a quadratic with curvature λ diverges when η·λ > 2 (docs/math.md (12.3))


def mu_grid(snrs, sigma_p: float, d: int) -> tuple:
    """The integer ‖μ‖ of each SNR of ``snrs`` at (σ_p, d): round(SNR·σ_p·√d) ≥ 1, without repeats, increasing."""
    return tuple(sorted({max(1, int(round(s * sigma_p * math.sqrt(d)))) for s in snrs}))


def step_curvature(data: DataConfig, model: ModelConfig) -> float:
    """λ of docs/math.md (12.3): the largest curvature of the training loss in W_V at initialisation, for expected
    token norms, uniform attention and ℓ'' = 1/4 (its value at f = 0). The largest label class is N/2 under balanced
    labels and at most N under Rademacher labels (the bound is taken)."""
    if model.init != "torch_uniform_scaled":
        raise ValueError(f"the step bound is derived for init='torch_uniform_scaled' (w_O ~ U(±1/√d_v)), "
                         f"got init={model.init!r}")
    w_o2 = 1.0 / 3.0                                     # E‖w_O‖² = d_v · (1/√d_v)²/3 (docs/math.md (3.8))
    noise = data.sigma_p ** 2 * (data.d - 2 if data.project_noise else data.d)
    others = (data.M - 2) * data.sigma_w ** 2 * data.d if data.other_tokens == "weak_gaussian" else 0.0
    n_class = data.N / 2 if data.labels == "balanced" else data.N
    return w_o2 * (noise + others + n_class * data.mu_norm ** 2) / (4.0 * data.M ** 2 * data.N)


@dataclass(frozen=True)
class SharpnessStudy:
    """d grid × variants on the Figure-1 setting; one ``Sweep`` per condition (docs/math.md §12).

    ds : token dimensions.      Ns : training-set sizes (even).      snrs : SNR grid, theory convention (1.6).
    repeats : seeds per cell.   variants : names of ``VARIANTS`` run at ``variant_d``.
    lr_scaling : "inverse_d" (η = η_ref·d_ref/d: η‖ξ‖² fixed, docs/math.md (12.1)) or "fixed" (η = η_ref).
    ref_d : the d at which η = η_ref = ``train.lr`` (1024 and 0.1: the Figure-1 setting).
    n_boot : bootstrap resamples of each condition's fit.
    """
    name: str
    ds: tuple
    Ns: tuple
    snrs: tuple
    repeats: int
    seed: int = 0
    variants: tuple = tuple(VARIANTS)
    variant_d: int = 1024
    lr_scaling: str = "inverse_d"
    ref_d: int = 1024
    n_boot: int = 1000
    data: DataConfig = field(default_factory=lambda: figure1_setting()[0])
    model: ModelConfig = field(default_factory=lambda: figure1_setting()[1])
    train: TrainConfig = field(default_factory=lambda: figure1_setting()[2])

    def __post_init__(self):
        object.__setattr__(self, "ds", tuple(int(d) for d in self.ds))
        object.__setattr__(self, "snrs", tuple(float(s) for s in self.snrs))
        object.__setattr__(self, "variants", tuple(self.variants))
        if self.lr_scaling not in LR_SCALINGS:
            raise ValueError(f"unknown lr_scaling {self.lr_scaling!r}; choose one of "
                             f"{', '.join(map(repr, LR_SCALINGS))} (docs/math.md (12.1))")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown data variant(s) {unknown}; choose from {list(VARIANTS)}")
        if not self.ds or len(set(self.ds)) != len(self.ds) or min(self.ds) < 2:
            raise ValueError(f"ds must be distinct token dimensions >= 2, got {self.ds}")
        if not self.snrs or min(self.snrs) <= 0 or not all(map(math.isfinite, self.snrs)):
            raise ValueError(f"snrs must be positive finite SNR values, got {self.snrs}")
        if self.variants and self.variant_d not in self.ds:
            raise ValueError(f"variant_d={self.variant_d} must be one of ds={self.ds} (the variants are compared "
                             "with the authors' data model at the same d)")
        for cond in self.conditions():          # builds (and so validates) every Sweep, then the step bound
            step, N, mu = self.worst_step(cond)
            if step >= STABLE_STEP:
                raise ValueError(
                    f"lr_scaling={self.lr_scaling!r} (--lr-scaling {self.lr_scaling}) gives η = {self.lr(cond[1]):g} "
                    f"at d = {cond[1]} ({cond[0]}), where the cell N = {N}, ‖μ‖ = {mu} has η·λ = {step:.2f} >= "
                    f"{STABLE_STEP:g} (docs/math.md (12.3)): the first step leaves the small-step regime the study "
                    "measures; use lr_scaling='inverse_d' (the default), a lower largest SNR, or fewer large d")

    # --- presets ------------------------------------------------------------------------------------------------
    @classmethod
    def quick(cls, seed: int = 0, lr_scaling: str = "inverse_d") -> "SharpnessStudy":
        """d ∈ {256, 512, 1024, 2048} + the 3 variants, N ∈ {2, 4, 8, 16}, 14 SNRs, 3 seeds: 1,176 runs."""
        return cls("quick", (256, 512, 1024, 2048), (2, 4, 8, 16), snr_grid(0.28, 1.3, 14), 3, seed, n_boot=200,
                   lr_scaling=lr_scaling)

    @classmethod
    def full(cls, seed: int = 0, lr_scaling: str = "inverse_d") -> "SharpnessStudy":
        """d ∈ {256, …, 4096} + the 3 variants, N ∈ {2, 4, 8, 16}, 40 SNRs, 10 seeds: 12,760 runs (rounding merges
        two SNRs into one ‖μ‖ at d = 256)."""
        return cls("full", (256, 512, 1024, 2048, 4096), (2, 4, 8, 16), snr_grid(0.28, 1.3, 40), 10, seed,
                   lr_scaling=lr_scaling)

    # --- conditions ---------------------------------------------------------------------------------------------
    def conditions(self) -> list[tuple[str, int, str]]:
        """(folder, d, variant) of every condition: the d grid with the authors' data ("authors"), then the
        variants at ``variant_d``."""
        return [(f"d{d:04d}", d, "authors") for d in self.ds] + \
            [(f"d{self.variant_d:04d}_{v}", self.variant_d, v) for v in self.variants]

    def lr(self, d: int) -> float:
        """η at token dimension d (docs/math.md (12.1))."""
        return self.train.lr * (self.ref_d / d if self.lr_scaling == "inverse_d" else 1.0)

    def sweep(self, cond) -> Sweep:
        name, d, variant = cond
        data = self.data.replace(d=d, **VARIANTS.get(variant, {}))
        train = self.train.replace(lr=self.lr(d), coords="span")
        return Sweep(f"sharpness-{name}", self.Ns, mu_grid(self.snrs, data.sigma_p, d), self.repeats, self.seed,
                     data, self.model, train)

    def worst_step(self, cond) -> tuple[float, int, int]:
        """(η·λ, N, ‖μ‖) of the cell of a condition with the largest η·λ (docs/math.md (12.3))."""
        sw = self.sweep(cond)
        return max((sw.train.lr * step_curvature(sw.data.replace(N=N, mu_norm=float(mu)), sw.model), N, mu)
                   for N in sw.Ns for mu in sw.mu_norms)

    def to_dict(self) -> dict:
        return {"study": "sharpness", "name": self.name, "ds": list(self.ds), "Ns": list(self.Ns),
                "snrs": list(self.snrs), "repeats": self.repeats, "seed": self.seed, "variants": list(self.variants),
                "variant_d": self.variant_d, "lr_scaling": self.lr_scaling, "ref_d": self.ref_d,
                "n_boot": self.n_boot, "data": self.data.to_dict(), "model": self.model.to_dict(),
                "train": self.train.to_dict(),
                "conditions": [{"folder": f, "d": d, "variant": v, "lr": self.lr(d),
                                "max_step": self.worst_step((f, d, v))[0]} for f, d, v in self.conditions()]}


def snr_grid(lo: float, hi: float, n: int) -> tuple:
    """n SNR values, geometric from lo to hi (the fit is in log SNR)."""
    return tuple(float(x) for x in np.geomspace(lo, hi, n))


CONDITION_COLUMNS = ["condition", "d", "variant", "lr", "max_step", "n_runs", "n_converged", "n_benign", "excluded",
                     "separable", "method", "a", "a_lo", "a_hi", "C", "C_lo", "C_hi", "width", "width_lo",
                     "width_hi", "mu_ratio_10_90"]


def run_sharpness(study: SharpnessStudy, out, executor=None, workers: int | None = None,
                  progress: bool = True) -> dict:
    """One Sweep per condition into out/<condition>/, each fitted (fit.json); then out/table.csv and
    out/conditions.csv."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    renew_manifest(out / "study.json", study.to_dict())   # damaged: set aside (the sweeps check their runs)
    t0 = time.perf_counter()
    with executor_context(executor, workers) as ex:
        for cond in study.conditions():
            run_sweep(study.sweep(cond), out / cond[0], executor=ex, progress=progress)
    for cond in study.conditions():
        fit_sweep(out / cond[0], n_boot=study.n_boot, seed=study.seed)
    write_sharpness_tables(study.to_dict(), out)
    return {"timing": {"sweeps_seconds": time.perf_counter() - t0}}


def condition_row(cond: dict, rows: list[dict], fit: dict) -> dict:
    """One row of conditions.csv: the condition, its run counts and the fit (MLE, or Firth's fit when the labels are
    separable; ``method`` says which) with its intervals. width: 10 %–90 % in log(N·SNR²) at fixed N (math 12.4)."""
    best = fit if fit["a"] is not None else fit["firth"]
    nan2 = [math.nan, math.nan]
    ci = {k: best.get(k, nan2) for k in ("ci_a", "ci_C", "ci_width_log_snr")}
    return {"condition": cond["folder"], "d": cond["d"], "variant": cond["variant"], "lr": cond["lr"],
            "max_step": cond["max_step"], "n_runs": len(rows), "n_converged": sum(r["converged"] for r in rows),
            "n_benign": best["n_benign"],
            "excluded": ";".join(f"{k}={v}" for k, v in sorted(fit["excluded"].items())) or "none",
            "separable": fit["separable"], "method": best["method"],
            "a": best["a"], "a_lo": ci["ci_a"][0], "a_hi": ci["ci_a"][1],
            "C": best["C"], "C_lo": ci["ci_C"][0], "C_hi": ci["ci_C"][1],
            "width": 2 * best["width_log_snr"], "width_lo": 2 * ci["ci_width_log_snr"][0],
            "width_hi": 2 * ci["ci_width_log_snr"][1], "mu_ratio_10_90": best["mu_ratio_10_90"]}


WIDTH_COLUMNS = ["condition", "d", "variant", "N", "n", "n_benign", "separable", "width", "width_lo", "width_hi",
                 "n_boot_no_estimate"]


def width_rows(cond: dict, rows: list[dict], seed: int, n_boot: int) -> list[dict]:
    """The width at each N of a condition (``refvit.fit.fit_width``, converged runs with a finite test loss)."""
    out = []
    for N in sorted({r["N"] for r in rows}):
        g = [r for r in rows if r["N"] == N and counted(r)]
        # one bootstrap stream per (condition, N), keyed apart from every run stream
        rng = np.random.default_rng([seed, 0x3D7, zlib.crc32(cond["folder"].encode()), N])
        w = fit_width(np.array([r["snr"] for r in g]), np.array([r["test_loss"] < BENIGN_LOSS for r in g]), rng,
                      n_boot)
        ci = w["ci_width"] or [math.nan, math.nan]
        out.append({"condition": cond["folder"], "d": cond["d"], "variant": cond["variant"], "N": N, "n": w["n"],
                    "n_benign": w["n_benign"], "separable": w["separable"],
                    "width": math.nan if w["width"] is None else w["width"], "width_lo": ci[0], "width_hi": ci[1],
                    "n_boot_no_estimate": w["n_boot_no_estimate"]})
    return out


def write_sharpness_tables(meta: dict, out) -> dict:
    """out/table.csv (every run, with condition, d and variant), out/conditions.csv (one fitted row each) and
    out/widths.csv (the width at each N of each condition)."""
    out = Path(out)
    table, conds, widths = [], [], []
    for cond in meta["conditions"]:
        rows = verified_table(out / cond["folder"])[1]
        table += [{"condition": cond["folder"], "d": cond["d"], "variant": cond["variant"], **r} for r in rows]
        conds.append(condition_row(cond, rows, load_json(out / cond["folder"] / "fit.json", expect=dict)))
        widths += width_rows(cond, rows, meta["seed"], meta["n_boot"])
    save_csv(out / "table.csv", table, ["condition", "d", "variant", *COLUMNS])
    save_csv(out / "conditions.csv", conds, CONDITION_COLUMNS)
    save_csv(out / "widths.csv", widths, WIDTH_COLUMNS)
    return {"table": table, "conditions": conds, "widths": widths}


if __name__ == "__main__":    # a library module: say which command runs it rather than exit 0 having done nothing
    raise SystemExit("refvit.jiang2024.studies.sharpness is a library module; run it with "
                     "`refvit study sharpness --preset quick|full` "
                     "(or `python -m refvit.cli …`); `refvit --help` lists the commands")
