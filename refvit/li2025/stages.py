"""The four stages of a training run of the two-token transformer of Li et al. (ICLR 2025), trained by SignGD, Adam
or GD: operational definitions of our own (docs/math.md §14.2), a detector with censoring and a summary over seeds
(docs/math.md §14.3).

Input: the recorded series of one run, ``series[key]`` with row k taken at step ``steps[k]`` (every step, or a
log-spaced grid, ``refvit.trainer.log_steps``), keys and per-row shapes as in
``refvit.li2025.tracking.TRACKED_SHAPES``. With the thresholds of ``StageRule``:

    T₁  the value noise grows linearly: the slopes of the mean value noise over the last w recorded intervals agree
        to a relative tolerance                                                                        (14.8)
    T₂  the query and key noise signs agree: a fraction ≥ θ of the (s, i) pairs, held for h steps      (14.9)
    T₃  the query and key signals have their final signs, given by the majority vote of the noise signs,
        for the rest of the run (at least h steps)                                                      (14.10)
    T₄  the noise query stops attending to the signal key (s21 < ε) while the signal query still splits its
        attention (|s11 − 1/2| ≤ β), for a fraction ≥ q of the samples                                  (14.11)
    and the decay of s11 after T₄: the first step where fewer than a fraction q of the samples keep
    |s11 − 1/2| ≤ β                                                                                     (14.12)

Each boundary is detected on its own (none is searched for only after another), so a run whose stages overlap
shows it (``Stages.ordered``). A boundary the run does not reach is censored: reported at the last recorded step
with ``censored=True``, never extrapolated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.stats import binom

from ..config import _Config
from .tracking import TRACKED_SHAPES

# The series the detector reads (TRACKED_SHAPES gives their per-row shapes).
STAGE_KEYS = ("value_noise", "key_noise", "qk_noise_agree", "query_signal", "key_signal", "query_signal_vote",
              "key_signal_vote", "s11", "s21")
BOUNDARY_NAMES = ("t1", "t2", "t3", "t4", "s11_exit")


def _unit(name: str, value, closed: bool = False) -> None:
    """A number in (0, 1) (``closed``: (0, 1])."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (0 < value < 1 or (closed and value == 1)):
        raise ValueError(f"{name} must be a number in (0, {'1]' if closed else '1)'}, got {value!r}")


@dataclass(frozen=True)
class StageRule(_Config):
    """The thresholds of the stage definitions (docs/math.md (14.8)–(14.12)); every default is ours."""
    window: int = 2            # w: recorded intervals whose value-noise slopes must agree (math 14.8)
    slope_rtol: float = 0.05   # their largest deviation from the mean slope, relative to it (math 14.8)
    agree: float = 0.95        # θ: fraction of (s, i) with equal query and key noise signs (math 14.9)
    hold: int = 10             # h: steps a condition must keep holding to count (math 14.9, 14.10)
    vote: float = 1.0          # ν: fraction of s whose signal signs agree with the vote (math 14.10)
    s21_max: float = 0.01      # ε: s21 below this counts as "no attention to the signal" (math 14.11)
    s11_band: float = 0.1      # β: s11 within 1/2 ± β counts as "split attention" (math 14.11, 14.12)
    fraction: float = 0.9      # q: fraction of samples a softmax condition must hold for (math 14.11, 14.12)

    def __post_init__(self):
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 2:
            raise ValueError(f"window must be an integer >= 2 (intervals whose slopes are compared), got "
                             f"{self.window!r}")
        if isinstance(self.hold, bool) or not isinstance(self.hold, int) or self.hold < 0:
            raise ValueError(f"hold must be a non-negative integer (steps), got {self.hold!r}")
        _unit("slope_rtol", self.slope_rtol)
        _unit("agree", self.agree, closed=True)
        _unit("vote", self.vote, closed=True)
        _unit("s21_max", self.s21_max)
        _unit("fraction", self.fraction, closed=True)
        if not (isinstance(self.s11_band, (int, float)) and 0 < self.s11_band < 0.5):
            raise ValueError(f"s11_band must be a number in (0, 0.5), got {self.s11_band!r}")


class Boundary(NamedTuple):
    """One stage boundary. The event happened at a step in [earliest, step] (the rows between are not recorded);
    censored: not reached by the last recorded step, then step = that last step and earliest = step + 1."""
    step: int
    censored: bool
    earliest: int


class Stages(NamedTuple):
    t1: Boundary           # end of stage I: value noise linear in t (math 14.8)
    t2: Boundary           # end of stage II: query/key noise signs aligned (math 14.9)
    t3: Boundary           # end of stage III: signal signs final, set by the majority vote (math 14.10)
    t4: Boundary           # stage IV reached: s21 ≈ 0 while s11 ≈ 1/2 (math 14.11)
    s11_exit: Boundary     # s11 leaves 1/2 ± β after t4 (math 14.12)
    key_growth: float      # rms key noise at t1 over its rms at the first row (NaN if t1 is censored)

    def ordered(self) -> bool:
        """Whether the uncensored boundaries among t1..t4 come in the order of the stages."""
        seen = [b.step for b in (self.t1, self.t2, self.t3, self.t4) if not b.censored]
        return all(a <= b for a, b in zip(seen, seen[1:]))


def _check(series: dict, steps) -> tuple[dict, np.ndarray]:
    steps = np.asarray(steps)
    if steps.ndim != 1 or len(steps) < 1 or not np.issubdtype(steps.dtype, np.integer) or np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be a non-empty 1-D array of strictly increasing integers")
    missing = [k for k in STAGE_KEYS if k not in series]
    if missing:
        raise ValueError(f"series lacks {missing}; record them with refvit.li2025.tracking.tracked")
    out = {}
    for k in STAGE_KEYS:
        a = np.asarray(series[k], dtype=np.float64)
        if a.ndim != 1 + len(TRACKED_SHAPES[k]):
            raise ValueError(f"series[{k!r}] must be (K, {', '.join(TRACKED_SHAPES[k]) or '-'}) with one row per "
                             f"step, got shape {a.shape}")
        if a.shape[0] != len(steps):
            raise ValueError(f"series[{k!r}] has {a.shape[0]} rows but steps has {len(steps)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"series[{k!r}] has non-finite entries (a diverged run has no stages)")
        out[k] = a
    return out, steps.astype(np.int64)


def _boundary(row: int | None, steps: np.ndarray) -> Boundary:
    """The Boundary of a first hit at ``row`` (None: censored at the last row)."""
    if row is None:
        return Boundary(int(steps[-1]), True, int(steps[-1]) + 1)
    return Boundary(int(steps[row]), False, int(steps[row - 1]) + 1 if row > 0 else int(steps[0]))


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _linear_rows(mean_value_noise: np.ndarray, steps: np.ndarray, rule: StageRule) -> np.ndarray:
    """(K,) bool: row b ends w recorded intervals over which the mean value noise has one positive slope (14.8)."""
    slope = np.diff(mean_value_noise) / np.diff(steps)            # (K − 1,) slope of interval [t_k, t_{k+1}]
    ok = np.zeros(len(steps), dtype=bool)
    w = rule.window
    for b in range(w, len(steps)):
        s = slope[b - w:b]                                          # the w intervals ending at row b
        mean = s.mean()
        ok[b] = mean > 0 and np.max(np.abs(s - mean)) <= rule.slope_rtol * mean
    return ok


def _held(ok: np.ndarray, steps: np.ndarray, hold: int) -> np.ndarray:
    """(K,) bool: ``ok`` at every recorded step of [t_b, t_b + hold], which lies inside the run."""
    out = np.zeros(len(steps), dtype=bool)
    for b in range(len(steps)):
        end = steps[b] + hold
        if end <= steps[-1]:
            out[b] = bool(np.all(ok[b:np.searchsorted(steps, end, side="right")]))
    return out


def _settled_row(sig: np.ndarray, vote_ok: np.ndarray, steps: np.ndarray, hold: int) -> int | None:
    """The first row from which the signal signs never change and the vote condition always holds (14.10)."""
    changed = np.any(np.sign(sig[1:]) != np.sign(sig[:-1]), axis=1)  # (K − 1,) signs at k + 1 differ from k
    stable_from = int(np.flatnonzero(changed)[-1]) + 1 if changed.any() else 0
    bad = np.flatnonzero(~vote_ok)
    vote_from = int(bad[-1]) + 1 if len(bad) else 0
    row = max(stable_from, vote_from)
    if row >= len(steps) or steps[-1] - steps[row] < hold:
        return None                                       # not reached, or not held long enough to tell
    return row


def detect_stages(series: dict, steps, rule: StageRule | None = None) -> Stages:
    """The stage boundaries (14.8)–(14.12) of one run.

    Parameters
    ----------
    series : key -> (K, *shape) array, row k recorded at step steps[k], for the keys ``STAGE_KEYS`` with the
        per-row shapes of ``refvit.li2025.tracking.TRACKED_SHAPES`` (value_noise (K, n), key_noise (K, m_k, n),
        query_signal and key_signal (K, m_k), s11 and s21 (K, n), the fractions (K,)).
    steps : (K,) strictly increasing ints.
    rule : the thresholds (default ``StageRule()``).
    """
    rule = StageRule() if rule is None else rule
    x, steps = _check(series, steps)
    n = x["s11"].shape[1]
    need = math.ceil(rule.fraction * n - 1e-9)     # "a fraction ≥ q of the n samples": at least ⌈q n⌉ of them

    row1 = _first(_linear_rows(x["value_noise"].mean(axis=1), steps, rule))
    row2 = _first(_held(x["qk_noise_agree"] >= rule.agree, steps, rule.hold))
    vote_ok = (x["query_signal_vote"] >= rule.vote) & (x["key_signal_vote"] >= rule.vote)
    row3 = _settled_row(np.concatenate([x["query_signal"], x["key_signal"]], axis=1), vote_ok, steps, rule.hold)
    in_band = np.sum(np.abs(x["s11"] - 0.5) <= rule.s11_band, axis=1)      # (K,) samples with s11 ≈ 1/2
    row4 = _first((np.sum(x["s21"] < rule.s21_max, axis=1) >= need) & (in_band >= need))
    row5 = None
    if row4 is not None:
        hit = _first(in_band[row4:] < need)
        row5 = None if hit is None else row4 + hit

    key_growth = math.nan
    if row1 is not None:
        rms = np.sqrt(np.mean(x["key_noise"] ** 2, axis=(1, 2)))             # (K,)
        key_growth = float(rms[row1] / rms[0]) if rms[0] > 0 else math.inf
    return Stages(*(_boundary(r, steps) for r in (row1, row2, row3, row4, row5)), key_growth)


class BoundarySummary(NamedTuple):
    """One boundary over runs. Values that fall on censored runs are +inf ("after the last recorded step")."""
    n: int                 # runs
    n_censored: int        # runs that did not reach the boundary
    median: float          # sample median of the steps, censored runs ranked last (math 14.13)
    lo: float              # order-statistic interval [x_(j), x_(n+1−j)] for the median (math 14.14)
    hi: float
    coverage: float        # its coverage, 1 − 2 P(B ≤ j − 1), B ~ Binomial(n, 1/2) (math 14.14)


def _summary(bounds: list[Boundary], level: float) -> BoundarySummary:
    n = len(bounds)
    seen = [b.step for b in bounds if not b.censored]
    cut = [b.step for b in bounds if b.censored]
    if seen and cut and min(cut) < max(seen):
        raise ValueError(f"a run censored at step {min(cut)} and a boundary observed at step {max(seen)}: the ranks "
                         "are ambiguous; record every seed for the same number of steps")
    x = np.sort(np.array(seen + [math.inf] * len(cut), dtype=np.float64))    # censored last (math 14.13)
    median = float(x[n // 2]) if n % 2 else float((x[n // 2 - 1] + x[n // 2]) / 2)
    tail = binom.cdf(np.arange(n // 2 + 1), n, 0.5)                 # P(B ≤ j − 1) for j = 1 .. n//2 + 1
    # the largest j (narrowest symmetric interval) whose coverage 1 − 2 P(B ≤ j − 1) is still ≥ level; j = 1 if none
    ok = np.flatnonzero(1 - 2 * tail[: (n + 1) // 2] >= level)
    j = int(ok[-1]) + 1 if len(ok) else 1
    return BoundarySummary(n, len(cut), median, float(x[j - 1]), float(x[n - j]), float(1 - 2 * tail[j - 1]))


def stage_summary(stages_list, level: float = 0.95) -> dict:
    """Median and distribution-free interval of each boundary over runs (docs/math.md (14.13), (14.14)).

    stages_list : ``Stages`` of several runs (seeds) recorded for the same number of steps.
    Returns {name: BoundarySummary} for the names ``BOUNDARY_NAMES``. A censored run is ranked after every observed
    boundary (it happened later, or never); a median or bound that lands on one is +inf. With too few runs for
    ``level`` (n ≤ 5 at 0.95) the interval is the whole range [min, max] and ``coverage`` says what it achieves.
    """
    stages_list = list(stages_list)
    if not stages_list:
        raise ValueError("stages_list must hold the Stages of at least one run")
    _unit("level", level)
    return {name: _summary([getattr(s, name) for s in stages_list], level) for name in BOUNDARY_NAMES}
