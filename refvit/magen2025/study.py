"""The design of the third setting's study (``refvit study single-head``): two steps of GD and the maximum-margin
interpolator over a grid of (n, SNR), as a resumable folder of verified runs (docs/math.md §17).
``refvit.magen2025.experiment`` runs it and ``refvit.magen2025.tables`` reads it back.

Three parts, each a folder of history files (``refvit.runstore``: checked against their identity on every read,
quarantined and recomputed when they are not what they claim to be):

    twostep/    two full-batch GD steps from zero with step size ``step_size`` at every (n, SNR, repeat)
    maxmargin/  the maximum-margin interpolator (``refvit.magen2025.maxmargin``) on the same training sets
    probe/      two GD steps at every (n, SNR, repeat) for every step size of ``probe_lrs``: how the default
                was chosen (docs/math.md (17.4))
    longrun/    beyond the paper: ``long_steps`` GD steps from zero with the small step size ``long_step_size``
                (docs/math.md (17.11)); no part when ``long_steps`` is 0
    tokens/     beyond the paper: two GD steps from zero on samples of ``tokens`` tokens (one signal, ``tokens`` − 1
                noise) with step size ``tokens_step_size`` (docs/math.md (17.12)); no part when ``tokens`` is 0
    query/      beyond the paper: ``query_steps`` GD steps of the query form ``query_model`` (trained W_Q, W_K and v
                from a Gaussian init) with step size ``query_step_size`` (docs/math.md (17.13)); no part when
                ``query_steps`` is 0

The data of a run depend on (seed, n, ρ, repeat) and its number of tokens only (``refvit.streams.cell_key``), so
every part but ``tokens`` sees the same training sets. Tables are rebuilt from the verified files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import TrainConfig
from ..runstore import settings_hash
from .config import MagenDataConfig, MagenModelConfig

PRESETS = ("quick", "full")
PARTS = ("twostep", "maxmargin", "probe", "longrun", "tokens", "query")
GOOD_ERROR = 0.1          # benign: interpolates and its clean test 0-1 error is at most this (math 17.3)
STEP_SCALINGS = ("n", "fixed")
# Two GD steps from zero, η = STEP_SIZE·n (step_scaling "n"): the rule of docs/math.md (17.4) applied to the full
# preset's probe (docs/singlehead.md): the probed step size under which the most training sets are benign (ours)
STEP_SIZE = 0.002
# The study's data (ours): flips "exact" so that every training set has round(η·n) flipped samples, whose attention
# the study reports; d = 2000 ≫ n; the other fields are MagenDataConfig's defaults
DATA = MagenDataConfig(flips="exact")
# The query form's model (ours): W_Q, W_K (16 × d) and v from N(0, 0.01²), a fixed random unit query q; trained W_Q,
# W_K and v (docs/math.md (16.6), (16.10))
QUERY_MODEL = MagenModelConfig(form="query", init="gaussian")


def _positive_floats(name: str, vals) -> tuple:
    vals = tuple(float(v) for v in vals)
    if not vals or any(not (math.isfinite(v) and v > 0) for v in vals) or len(set(vals)) != len(vals):
        raise ValueError(f"{name} must be distinct finite positive numbers, got {vals!r}")
    return vals


def eta_of(step: float, n: int, M: int, scaling: str) -> float:
    """η = η₀·n·M/2 (scaling "n") or η₀·M/2 ("fixed"): docs/math.md (17.1), (17.12); M/2 = 1 but in the tokens part."""
    return float(step) * (n if scaling == "n" else 1) * M / 2


@dataclass(frozen=True)
class SingleHeadStudy:
    """What the study runs. ``data`` is a template: N and ρ are replaced per cell (ρ = SNR·σ·√d, (16.4)), and M by
    ``tokens`` in the tokens part. Each part beyond the paper is a switch: ``long_steps``, ``tokens`` or
    ``query_steps`` at 0 leaves it out."""
    name: str
    seed: int = 0
    runs: int = 3                       # repeats (training sets) per (n, SNR)
    data: MagenDataConfig = DATA
    ns: tuple = (20, 40, 80)
    snrs: tuple = (0.05, 0.1, 0.2, 0.4, 0.8)
    step_size: float = STEP_SIZE        # η₀ of the two GD steps (switch; default: ours, see STEP_SIZE)
    step_scaling: str = "n"             # "n": η = η₀·n (ours, docs/math.md (17.1)); "fixed": η = η₀
    probe_lrs: tuple = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016)
    mm_random: int = 2                  # random starts of the max-margin solver, beside its two fixed ones
    long_steps: int = 300               # beyond the paper: steps of the long runs (0: no longrun part; ours)
    long_step_size: float = 0.0002      # η₀ of the long runs, scaled like step_size (ours: a tenth of it)
    tokens: int = 4                     # beyond the paper: M of the tokens part (0: no tokens part; ours)
    tokens_step_size: float = STEP_SIZE  # its η₀, η = η₀·n·M/2: v₁'s per-token terms of (16.21) as at M = 2 (ours)
    query_steps: int = 300              # beyond the paper: GD steps of the query part (0: no query part; ours)
    query_step_size: float = STEP_SIZE  # its η₀, scaled like step_size (ours; (17.13) says why not long_step_size)
    query_model: MagenModelConfig = QUERY_MODEL   # the query part's model (form "query"; ours)

    def __post_init__(self):
        for name in ("runs",):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("seed", "mm_random", "long_steps", "tokens", "query_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if not isinstance(self.data, MagenDataConfig) or self.data.M != 2:
            raise ValueError("data must be a MagenDataConfig with M = 2 (the paper's two tokens)")
        if self.tokens in (1, 2):
            raise ValueError(f"tokens must be 0 (no tokens part) or >= 3 (M > 2 tokens), got {self.tokens}")
        if not isinstance(self.query_model, MagenModelConfig) or self.query_model.form != "query":
            raise ValueError("query_model must be a MagenModelConfig with form='query'")
        ns = tuple(self.ns)
        if not ns or any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in ns) or len(set(ns)) != len(ns):
            raise ValueError(f"ns must be distinct integers >= 2, got {self.ns!r}")
        object.__setattr__(self, "ns", ns)
        object.__setattr__(self, "snrs", _positive_floats("snrs", self.snrs))
        object.__setattr__(self, "probe_lrs", _positive_floats("probe_lrs", self.probe_lrs))
        if self.step_scaling not in STEP_SCALINGS:
            raise ValueError(f"step_scaling must be one of {STEP_SCALINGS}, got {self.step_scaling!r}")
        for lr in (self.step_size, self.long_step_size, self.tokens_step_size, self.query_step_size, *self.probe_lrs):
            TrainConfig(optimizer="gd", lr=lr, steps=2)      # validated like any step size

    @classmethod
    def quick(cls, seed: int = 0) -> "SingleHeadStudy":
        """4 repeats, n ∈ {20, 40, 80}, 9 SNRs, 500 test samples, one random max-margin start (time:
        docs/singlehead.md)."""
        return cls("quick", seed, runs=4, data=DATA.replace(n_test=500), ns=(20, 40, 80),
                   snrs=(0.04, 0.058, 0.084, 0.12, 0.17, 0.25, 0.36, 0.53, 0.77), mm_random=1)

    @classmethod
    def full(cls, seed: int = 0) -> "SingleHeadStudy":
        """8 repeats, n ∈ {20, 40, 80, 160}, 12 SNRs (time: docs/singlehead.md)."""
        return cls("full", seed, runs=8, ns=(20, 40, 80, 160),
                   snrs=(0.03, 0.042, 0.059, 0.083, 0.12, 0.16, 0.23, 0.32, 0.45, 0.63, 0.89, 1.2))

    @classmethod
    def from_dict(cls, d: dict) -> "SingleHeadStudy":
        """The study a saved ``study.json`` describes (its settings hash is checked by the caller)."""
        if not isinstance(d, dict):
            raise ValueError(f"a study spec is a JSON object, got {type(d).__name__}")
        fields = {k: v for k, v in d.items() if k != "settings_hash"}
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown study field(s) {unknown}; valid fields are {sorted(cls.__dataclass_fields__)}")
        fields["data"] = MagenDataConfig.from_dict(fields.get("data", {}))
        if "query_model" in fields:
            fields["query_model"] = MagenModelConfig.from_dict(fields["query_model"])
        for k in ("ns", "snrs", "probe_lrs"):
            if k in fields:
                fields[k] = tuple(fields[k])
        return cls(**fields)

    def to_dict(self) -> dict:
        return {"name": self.name, "seed": self.seed, "runs": self.runs, "data": self.data.to_dict(),
                "ns": list(self.ns), "snrs": list(self.snrs), "step_size": self.step_size,
                "step_scaling": self.step_scaling, "long_steps": self.long_steps,
                "long_step_size": self.long_step_size, "tokens": self.tokens,
                "tokens_step_size": self.tokens_step_size, "query_steps": self.query_steps,
                "query_step_size": self.query_step_size, "query_model": self.query_model.to_dict(),
                "probe_lrs": list(self.probe_lrs), "mm_random": self.mm_random}

    def settings_hash(self) -> str:
        """What determines every run's numbers: all but the name and the grids (a resumed study may grow them)."""
        d = self.to_dict()
        for k in ("name", "runs", "ns", "snrs", "probe_lrs"):
            d.pop(k)
        return settings_hash(d)

    def eta(self, n: int, step: float, M: int = 2) -> float:
        """The step size of GD at n samples of M tokens: step·n ("n") or step ("fixed") (docs/math.md (17.1)),
        times M/2 (docs/math.md (17.12))."""
        return eta_of(step, n, M, self.step_scaling)

    def rho_of(self, snr: float) -> float:
        """ρ of an SNR: SNR·σ·√d (docs/math.md (16.4))."""
        return MagenDataConfig.rho_for_snr(float(snr), self.data.d, self.data.sigma)


def run_file(part: str, n: int, rho: float, repeat: int, lr: float | None = None) -> str:
    """File name of a run in its part's ``runs/`` folder."""
    return f"n{n}_rho{rho:.6g}_r{repeat:03d}" + (f"_lr{lr:g}" if lr is not None else "") + ".npz"


def specs(study: SingleHeadStudy) -> list[tuple]:
    """Every run as (part, n, ρ, repeat, step size or None, file name), parts in ``PARTS`` order."""
    out = []
    for part in ("twostep", "maxmargin"):
        lr = study.step_size if part == "twostep" else None
        out += [(part, n, study.rho_of(s), r, lr, run_file(part, n, study.rho_of(s), r))
                for n in study.ns for s in study.snrs for r in range(study.runs)]
    out += [("probe", n, study.rho_of(s), r, lr, run_file("probe", n, study.rho_of(s), r, lr))
            for lr in study.probe_lrs for n in study.ns for s in study.snrs for r in range(study.runs)]
    for part, on, lr in (("longrun", study.long_steps, study.long_step_size),
                         ("tokens", study.tokens, study.tokens_step_size),
                         ("query", study.query_steps, study.query_step_size)):
        if on:
            out += [(part, n, study.rho_of(s), r, lr, run_file(part, n, study.rho_of(s), r, lr))
                    for n in study.ns for s in study.snrs for r in range(study.runs)]
    return out


def identity(study: SingleHeadStudy, part: str, n: int, rho: float, repeat: int, lr: float | None) -> dict:
    return {"part": part, "n": int(n), "rho": float(rho), "repeat": int(repeat), "lr": lr, "seed": study.seed,
            "settings_hash": study.settings_hash()}
