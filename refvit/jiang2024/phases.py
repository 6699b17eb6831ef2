"""The three phases of a training run, detected from its recorded history (docs/math.md §12.4).

Inputs are the per-step series every run records (``refvit.jiang2024.objective.HISTORY_KEYS``, row t = before update t): the mean
attention to the signal token a_s(t) and to the noise token a_n(t), and the training loss L(t). With
δ₁ = ``DELTA_UNIFORM``, δ₂ = ``DELTA_SETTLED`` and τ = ``LOSS_THRESHOLD``:

    T₁ = min { t : max(|a_s(t) − 1/M|, |a_n(t) − 1/M|) ≥ δ₁/M }            end of phase 1 (12.6)
    T₂ = min { t ≥ T₁ : |Δg(t)| ≥ (1 − δ₂)·max_s |Δg(s)| },  Δg = g − g(0),  g = a_s − a_n     end of phase 2 (12.7)
    T₃ = min { t : L(t) < τ }                                                 end of phase 3 (12.8)

A boundary that is never reached is ``None`` (censored; T₂ is also censored when T₁ is), and so is a phase length
that needs it. Phase lengths are T₁, T₂ − T₁ and T₃ − T₂; the last is negative when the training loss falls below τ
before attention has settled.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .config import LOSS_THRESHOLD

DELTA_UNIFORM = 0.1    # δ₁: attention has left uniform when a token's weight is 10 % away from 1/M (math 12.6)
DELTA_SETTLED = 0.1    # δ₂: attention has settled when the gap has made 90 % of its largest change (math 12.7)


class Phases(NamedTuple):
    t1: int | None            # end of phase 1 (value learning, near-uniform attention)
    t2: int | None            # end of phase 2 (attention learning)
    t3: int | None            # end of phase 3 (convergence: training loss below τ)
    winner: str | None        # "signal" if the gap moved towards the signal token at t2, "noise" if away, else None
    gap_change: float         # max_t |Δg(t)|: how far attention moved

    def lengths(self) -> tuple:
        """(phase 1, phase 2, phase 3) in steps, None where a boundary is censored."""
        t1, t2, t3 = self.t1, self.t2, self.t3
        return (t1, None if t2 is None else t2 - t1, None if t3 is None or t2 is None else t3 - t2)


def _first(mask: np.ndarray, start: int = 0) -> int | None:
    hits = np.flatnonzero(mask[start:])
    return int(hits[0]) + start if len(hits) else None


def detect_phases(attn_signal, attn_noise, train_loss, M: int, delta_uniform: float = DELTA_UNIFORM,
                  delta_settled: float = DELTA_SETTLED, loss_threshold: float = LOSS_THRESHOLD) -> Phases:
    """The phase boundaries (12.6)–(12.8) of one run.

    attn_signal, attn_noise, train_loss : (T+1,) series, row t before update t (non-finite rows are refused).
    M : tokens per image (uniform attention is 1/M).
    """
    a_s, a_n, L = (np.asarray(x, dtype=np.float64) for x in (attn_signal, attn_noise, train_loss))
    if not (a_s.ndim == 1 and a_s.shape == a_n.shape == L.shape and len(a_s) >= 1):
        raise ValueError(f"attn_signal, attn_noise and train_loss must be 1-D series of one length, got "
                         f"{a_s.shape}, {a_n.shape}, {L.shape}")
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 2:
        raise ValueError(f"M must be an integer >= 2, got {M!r}")
    for name, x in (("attn_signal", a_s), ("attn_noise", a_n), ("train_loss", L)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} has non-finite entries (a diverged run has no phases)")
    if not (0 < delta_uniform < M - 1 and 0 < delta_settled < 1):
        raise ValueError(f"need 0 < delta_uniform < M − 1 and 0 < delta_settled < 1, got {delta_uniform}, "
                         f"{delta_settled}")
    u = 1.0 / M
    t1 = _first(np.maximum(np.abs(a_s - u), np.abs(a_n - u)) >= delta_uniform * u)
    dg = (a_s - a_n) - (a_s[0] - a_n[0])
    gmax = float(np.max(np.abs(dg)))
    t2 = winner = None
    if t1 is not None and gmax > 0:
        t2 = _first(np.abs(dg) >= (1 - delta_settled) * gmax, t1)
        if t2 is not None:     # None when the gap peaked before T₁ and never came back to 90 % of that peak
            winner = "signal" if dg[t2] > 0 else "noise"
    t3 = _first(L < loss_threshold)
    return Phases(t1, t2, t3, winner, gmax)
