"""The design of the second setting's study (``refvit study signgd``): the paper's two figures and what lies beyond
them, as a resumable folder of verified runs (docs/math.md §14, §15). ``refvit.li2025.experiment`` runs it and
``refvit.li2025.tables`` reads it back.

Three parts, each a folder of history files (``refvit.runstore``: checked against their identity on every read,
quarantined and recomputed when they are not what they claim to be):

    dynamics/  SignGD and Adam at the Figure-1 regime (‖μ‖ = ``dyn_mu``) on a log-spaced grid of steps: the
               tracked quantities, the stages (docs/math.md §14.2) and the training-loss rates
    snr/       GD, SignGD and Adam over an SNR grid: test error and loss, the threshold of each (docs/math.md §15.1)
    adam/      Adam's ε and (β₁, β₂) at one SNR, each against SignGD on the same data and init

The data and init of a cell depend on (seed, N, ‖μ‖, repeat) only (``refvit.jiang2024.experiment.cell_key``), so
GD, SignGD and Adam see the same data and start from the same weights. Tables are rebuilt from the verified files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import TrainConfig
from ..runstore import settings_hash
from .config import LiDataConfig, LiModelConfig

PRESETS = ("quick", "full")
OPTIMIZERS = ("gd", "signgd", "adam")
GOOD_ERROR = 0.1          # a trained run generalizes when its test 0-1 error is at most this (math 15.1)
# (optimizer, lr, steps), ours: SignGD and Adam for the 900 steps over which the paper draws its dynamics; GD for
# η·T = 150 (η = 0.5, 300 steps gives the test errors of η = 0.05, 3000 steps at the defaults, docs/li2025.md)
SCHEDULES = (("gd", 0.5, 300), ("signgd", 1e-3, 900), ("adam", 1e-3, 900))


@dataclass(frozen=True)
class SignGDStudy:
    """What the study runs. ``data``/``model`` are templates (‖μ‖ replaced per condition)."""
    name: str
    seed: int = 0
    runs: int = 3                       # repeats (seeds) per condition
    data: LiDataConfig = LiDataConfig()
    model: LiModelConfig = LiModelConfig()
    dyn_mu: float = 0.02                # ‖μ‖ of the dynamics part (‖μ‖ ≪ σ_p √s: the noise dominates)
    per_decade: int = 20                # dynamics: steps 0, 1, 2 and ``per_decade`` per decade are recorded
    snrs: tuple = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0)
    schedules: tuple = SCHEDULES
    adam_snr: float = 1.0
    adam_eps: tuple = (1e-12, 1e-8, 1e-4, 1e-2)
    adam_betas: tuple = ((0.9, 0.999), (0.9, 0.99), (0.0, 0.0))

    def __post_init__(self):
        for name in ("runs", "per_decade"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("snrs", "adam_eps"):
            vals = tuple(float(v) for v in getattr(self, name))
            if not vals or any(not (math.isfinite(v) and v > 0) for v in vals) or len(set(vals)) != len(vals):
                raise ValueError(f"{name} must be distinct finite positive numbers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, vals)
        for v in (self.dyn_mu, self.adam_snr):
            self.data.replace(mu_norm=float(v))          # validated like any ‖μ‖ (refvit.li2025.config)
        object.__setattr__(self, "adam_betas", tuple((float(a), float(b)) for a, b in self.adam_betas))
        for a, b in self.adam_betas:
            TrainConfig(optimizer="adam", adam_betas=(a, b))
        sched = tuple((str(o), float(lr), int(t)) for o, lr, t in self.schedules)
        if sorted(o for o, _, _ in sched) != sorted(OPTIMIZERS):
            raise ValueError(f"schedules must give (lr, steps) for each of {OPTIMIZERS}, got {self.schedules!r}")
        for o, lr, t in sched:
            TrainConfig(optimizer=o, lr=lr, steps=t)
        object.__setattr__(self, "schedules", sched)

    @classmethod
    def quick(cls, seed: int = 0) -> "SignGDStudy":
        """2 seeds, 7 SNRs, 4 ε × 2 β pairs (docs/li2025.md gives its time)."""
        return cls("quick", seed, runs=2, adam_betas=((0.9, 0.999), (0.0, 0.0)))

    @classmethod
    def full(cls, seed: int = 0) -> "SignGDStudy":
        """10 seeds, 12 SNRs, 7 ε × 3 β pairs (docs/li2025.md gives its time)."""
        return cls("full", seed, runs=10, snrs=(0.04, 0.06, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 1.5, 2.5, 4.0, 6.0),
                   adam_eps=(1e-16, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2))

    @classmethod
    def from_dict(cls, d: dict) -> "SignGDStudy":
        """The study a saved ``study.json`` describes (its settings hash is checked by the caller)."""
        if not isinstance(d, dict):
            raise ValueError(f"a study spec is a JSON object, got {type(d).__name__}")
        fields = {k: v for k, v in d.items() if k != "settings_hash"}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown study field(s) {unknown}; valid fields are {sorted(known)}")
        fields["data"] = LiDataConfig.from_dict(fields.get("data", {}))
        fields["model"] = LiModelConfig.from_dict(fields.get("model", {}))
        for k in ("snrs", "adam_eps"):
            if k in fields:
                fields[k] = tuple(fields[k])
        for k in ("schedules", "adam_betas"):
            if k in fields:
                fields[k] = tuple(tuple(x) for x in fields[k])
        return cls(**fields)

    def to_dict(self) -> dict:
        return {"name": self.name, "seed": self.seed, "runs": self.runs, "data": self.data.to_dict(),
                "model": self.model.to_dict(), "dyn_mu": self.dyn_mu, "per_decade": self.per_decade, "snrs": list(self.snrs), "schedules": [list(s) for s in self.schedules],
                "adam_snr": self.adam_snr, "adam_eps": list(self.adam_eps),
                "adam_betas": [list(b) for b in self.adam_betas]}

    def settings_hash(self) -> str:
        """What determines every run's numbers: all but the name and the grids (a resumed study may grow them)."""
        d = self.to_dict()
        for k in ("name", "runs", "snrs", "adam_eps", "adam_betas"):
            d.pop(k)
        return settings_hash(d)

    def mu_of(self, snr: float) -> float:
        """‖μ‖ of an SNR: SNR·σ_p·√(noise_dims) (docs/math.md (13.4))."""
        return float(snr) * self.data.sigma_p * math.sqrt(self.data.noise_dims)

    def train_cfg(self, optimizer: str, **changes) -> TrainConfig:
        lr, steps = {o: (lr, t) for o, lr, t in self.schedules}[optimizer]
        return TrainConfig(optimizer=optimizer, lr=lr, steps=steps, backend="auto", **changes)   # sparse path


def run_file(part: str, optimizer: str, mu: float, repeat: int, eps: float | None = None, betas=None) -> str:
    """File name of a run in its part's ``runs/`` folder."""
    tag = f"{optimizer}_mu{mu:.6g}_r{repeat:03d}"
    if eps is not None:
        tag += f"_eps{eps:.0e}_b{betas[0]:g}-{betas[1]:g}"
    return tag + ".npz"


def specs(study: SignGDStudy) -> list[tuple]:
    """Every run as (part, optimizer, ‖μ‖, repeat, TrainConfig dict, reference dict or None, file name)."""
    out = []
    for opt in ("signgd", "adam"):
        cfg = study.train_cfg(opt, history_every=0, history_per_decade=study.per_decade)
        for r in range(study.runs):
            out.append(("dynamics", opt, study.dyn_mu, r, cfg.to_dict(), None, run_file("dynamics", opt, study.dyn_mu, r)))
    for opt, _, steps in study.schedules:
        cfg = study.train_cfg(opt, history_every=0, history_per_decade=10, eval_every=max(1, steps // 25))
        for snr in study.snrs:
            mu = study.mu_of(snr)
            out += [("snr", opt, mu, r, cfg.to_dict(), None, run_file("snr", opt, mu, r)) for r in range(study.runs)]
    mu = study.mu_of(study.adam_snr)
    ref = study.train_cfg("signgd", history_every=0).to_dict()
    for eps in study.adam_eps:
        for betas in study.adam_betas:
            cfg = study.train_cfg("adam", adam_eps=eps, adam_betas=betas, history_every=0)
            out += [("adam", "adam", mu, r, cfg.to_dict(), ref, run_file("adam", "adam", mu, r, eps, betas))
                    for r in range(study.runs)]
    return out


def identity(study: SignGDStudy, part: str, optimizer: str, mu: float, repeat: int) -> dict:
    return {"part": part, "optimizer": optimizer, "mu_norm": float(mu), "repeat": repeat, "seed": study.seed,
            "settings_hash": study.settings_hash()}


if __name__ == "__main__":    # a library module: say which command runs it rather than exit 0 having done nothing
    raise SystemExit("refvit.li2025.study is a library module; run it with "
                     "`refvit study signgd --preset quick|full` "
                     "(or `python -m refvit.cli …`); `refvit --help` lists the commands")
