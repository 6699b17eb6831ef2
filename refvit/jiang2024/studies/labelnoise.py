"""The label-noise study: the Figure-1 grid at several training-label flip rates.

**Label noise** (Zhang et al. 2025; flips as in docs/math.md (1.5)):
``DataConfig(flip_rate=p)`` flips exactly round(p·N) training
labels; test labels stay clean. GD at the authors' η = 0.1 on the span backend, Figure-1 setting otherwise.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import BOUNDARY_N_SNR2, DataConfig, ModelConfig, figure1_setting
from ...config import TrainConfig
from ...executors import executor_context
from ...io import save_csv
from ...runstore import renew_manifest
from ...results import COLUMNS
from ..sweep import Sweep, run_sweep, verified_table
from .common import SUMMARY_COLUMNS, coords_for, group_stats, regime_of
from .lr_rule import lr_tag


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
        return Sweep(f"labelnoise-p{p:g}", self.Ns, self.mu_norms, self.repeats, self.seed,
                     self.data.replace(flip_rate=float(p)), self.model,
                     self.train.replace(**coords_for("gd")))

    def to_dict(self) -> dict:
        return {"study": "label-noise", "name": self.name, "flip_rates": list(self.flip_rates), "Ns": list(self.Ns),
                "mu_norms": list(self.mu_norms), "repeats": self.repeats, "seed": self.seed,
                "benign_factor": self.benign_factor, "boundary_N_snr2": BOUNDARY_N_SNR2, "data": self.data.to_dict(),
                "model": self.model.to_dict(), "train": self.train.replace(**coords_for("gd")).to_dict(),
                "folders": {lr_tag(p): p_folder(p) for p in self.flip_rates}}


def p_folder(p: float) -> str:
    return f"p{p:.2f}"


def run_label_noise(study: LabelNoiseStudy, out, executor=None, workers: int | None = None,
                    progress: bool = True) -> dict:
    """One Sweep per flip rate into out/p<p>/; then out/table.csv (with flip_rate) and out/summary.csv."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    renew_manifest(out / "study.json", study.to_dict())   # damaged: set aside (the sweeps check their runs)
    t0 = time.perf_counter()
    ctx = executor_context(executor, workers)
    with ctx as ex:
        for p in study.flip_rates:
            run_sweep(study.sweep(p), out / p_folder(p), executor=ex, progress=progress)
    timing = {"sweeps_seconds": time.perf_counter() - t0}
    write_label_noise_tables(study.to_dict(), out)
    return {"timing": timing}


def write_label_noise_tables(meta: dict, out) -> dict:
    """out/table.csv (every run, with flip_rate, n_flipped and group) and out/summary.csv (per p and group)."""
    out = Path(out)
    table, summary = [], []
    for p in meta["flip_rates"]:
        rows = verified_table(out / p_folder(p))[1]
        for r in rows:
            table.append({"flip_rate": p, "n_flipped": int(round(p * r["N"])),
                          "group": regime_of(r["N_snr2"], meta["benign_factor"]), **r})
        for group in ("benign", "transition", "harmful"):
            g = [r for r in table if r["flip_rate"] == p and r["group"] == group]
            if g:
                summary.append({"flip_rate": p, "group": group, **group_stats(g)})
    save_csv(out / "table.csv", table, ["flip_rate", "n_flipped", "group", *COLUMNS])
    save_csv(out / "summary.csv", summary, ["flip_rate", "group", *SUMMARY_COLUMNS])
    return {"table": table, "summary": summary}


if __name__ == "__main__":    # a library module: say which command runs it rather than exit 0 having done nothing
    raise SystemExit("refvit.jiang2024.studies.labelnoise is a library module; run it with "
                     "`refvit study label-noise --preset quick|full` "
                     "(or `python -m refvit.cli …`); `refvit --help` lists the commands")
