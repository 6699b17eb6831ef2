"""The diagnosis: which catalogued mistakes predict your numbers in every failing case, the float32 test (size and
scatter), and plain findings outside the catalogue (uniform factors, drifting updates, hidden trainer state)."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..jiang2024.model import Params
from .calls import _Outputs
from .cases import GRAD_BLOCKS, TRAINER_BLOCKS, TRAJ_BLOCKS, Case, tolerance
from .compare import _compare, _model_outputs, _RefTraj, _traj_errors, _within
from .metrics import grad_zero_level, match_error, uniform_factor
from .mutants import CATALOGUE, Mistake, Variant
from .report import CaseResult

F32_SCATTER_COS = 0.5    # see _float32_scatter: float32 rounding ≤ 0.25, systematic changes ≥ 0.8 (measured)


class _State(NamedTuple):
    """What the diagnosis needs of one case that ran to the end."""
    case: Case
    inputs: tuple       # (p0, X, y) as float64
    user: _Outputs
    ref: _Outputs
    ref_traj: _RefTraj | None
    steps: int
    scatter: list        # filled by the float32 test of the diagnosis


def _variant_traj(variant: Variant, st: _State, train_w_O: bool) -> _RefTraj:
    p0, X, y = st.inputs
    with np.errstate(all="ignore"):          # a mutant may overflow on purpose (naive loss or softmax)
        traj = [Params(*(np.asarray(a, np.float64) for a in p))
                for p in variant.trajectory(p0, X, y, st.case.spec.lr, train_w_O, st.steps)]
    return _RefTraj(p0, traj, st.ref_traj.grads, st.case.spec.lr)


def _float32_like(st: _State, errs: dict):
    """Errors of the size of float32 rounding: f and every non-zero gradient block off by more than the float64
    tolerance but within float32's. Returns the deviations (yours − ref) and the values ref, each block scaled by
    its largest entry, for the scatter test of ``_float32_scatter``; None when the sizes do not fit."""
    blocks = ["f"] + (list(GRAD_BLOCKS) if st.user.grads is not None else [])
    zero = grad_zero_level("float64", st.ref.grads) if st.ref.grads is not None else 0.0
    dev, val = [], []
    for b in blocks:
        yours = st.user.f if b == "f" else getattr(st.user.grads, b[1:])
        ref = st.ref.f if b == "f" else getattr(st.ref.grads, b[1:])
        scale = float(np.max(np.abs(ref)))
        if b != "f" and scale <= zero:
            continue                                   # a block that is zero (M = 1): nothing to round
        if not (tolerance("float64", b) < errs[b] <= tolerance("float32", b)):
            return None
        dev.append(((yours - ref) / scale).ravel())
        val.append((ref / scale).ravel())
    return np.concatenate(dev), np.concatenate(val)


def _float32_scatter(pairs) -> float:
    """|cos| between all deviations and all values of the failing cases joined (``_float32_like``). Rounding
    errors are nearly orthogonal to the values; a systematic change (ε in the softmax, a factor) points along
    them. Measured over the "quick" and "small" cases: float32 arithmetic 0.06–0.8 per case but ≤ 0.25 joined
    (hundreds of entries); a softmax ε of 1e-6 ≥ 0.8 joined. F32_SCATTER_COS = 0.5 lies between."""
    d = np.concatenate([p[0] for p in pairs])
    v = np.concatenate([p[1] for p in pairs])
    return abs(float(d @ v)) / (float(np.linalg.norm(d) * np.linalg.norm(v)) or 1.0)


def _mistake_matches(mistake: Mistake, st: _State, dtype: str, train_w_O: bool, fails: dict) -> bool:
    """Do your numbers match this mutant's predictions on every block of the case (within the case's
    tolerance, in the mutant's dtype)?"""
    v = mistake.variant
    p0, X, y = st.inputs
    if mistake.name == "float32_accumulation":
        pair = _float32_like(st, fails)
        if pair is not None:
            st.scatter.append(pair)
        return pair is not None
    match_dtype = v.dtype if dtype == "float64" else dtype
    other = _model_outputs(v, p0, X, y, st.user.grads is not None)
    if not _within(_compare(st.user, other, match_dtype, st.ref, match_error, mutant=True), match_dtype):
        return False
    if st.user.traj is None and st.user.trainer is None:
        return True
    theirs = _variant_traj(v, st, train_w_O)
    for mine, names in ((st.user.traj, TRAJ_BLOCKS), (st.user.trainer, TRAINER_BLOCKS[:4])):
        if mine is not None and not _traj_matches(mine, theirs, match_dtype, names):
            return False
    return True


def _traj_matches(mine: list, theirs: _RefTraj, dtype: str, names) -> bool:
    """Your iterates against a mutant's: the same length up to the first non-finite iterate (a mutant that
    overflows predicts where you overflow), equal non-finite entries there, within tolerance before."""
    finite = [all(np.all(np.isfinite(a)) for a in p) for p in theirs.traj]
    n = finite.index(False) + 1 if False in finite else len(finite)
    if len(mine) != n:
        return False
    head = _RefTraj(theirs.p0, theirs.traj[:n - 1], theirs.grads[:n - 1], theirs.lr)
    if n > 1 and not _within(_traj_errors(mine[:n - 1], head, dtype, names), dtype):
        return False
    if n == len(finite) and finite[-1]:
        return _within(_traj_errors(mine, theirs, dtype, names), dtype)
    return all(match_error(a, b) <= tolerance(dtype, names[0]) for a, b in zip(mine[-1], theirs.traj[n - 1]))


def _findings(st: _State, result: CaseResult, dtype: str) -> list[str]:
    """Plain statements about a failing case that need no catalogue: uniform factors, an update that drifts while
    f and the gradients are exact, hidden trainer state."""
    out = []
    by = {b.block: b for b in result.blocks}
    for b in ("f", "loss") + GRAD_BLOCKS:
        r = by.get(b)
        if r is None or r.passed or not math.isfinite(r.error):
            continue
        yours = st.user.f if b == "f" else st.user.loss if b == "loss" else getattr(st.user.grads, b[1:])
        ref = st.ref.f if b == "f" else st.ref.loss if b == "loss" else getattr(st.ref.grads, b[1:])
        c = uniform_factor(yours, ref, tolerance(dtype, b)) if np.size(yours) >= 2 else None
        if c is not None and abs(c - 1) >= 1e-3:          # a factor worth the name (1 − 1/c ≥ 1e-3)
            out.append(f"your {b} is {c:.6g} × the reference")
    values_ok = all(by[b].passed for b in ("f", "loss") + GRAD_BLOCKS if b in by)
    for kind, blocks, mine in (("step", TRAJ_BLOCKS, st.user.traj), ("trainer", TRAINER_BLOCKS[:4],
                                                                      st.user.trainer)):
        bad = [b for b in blocks if b in by and not by[b].passed]
        if not bad or not values_ok or not mine:
            continue
        first = [uniform_factor(a - s, b_ - s, tolerance(dtype, "traj_W_Q"))
                 for a, b_, s in zip(mine[0], st.ref_traj.traj[0], st.inputs[0])]
        # one factor shared by the moving blocks, to the 6 digits shown (float64 rounding is far below)
        factors = {round(c, 6) for c in first if c is not None}
        if len(factors) == 1 and abs(next(iter(factors)) - 1) > tolerance(dtype, "grad"):
            out.append(f"your first {kind} update is {next(iter(factors)):.6g} × the reference's −lr·∇L "
                       f"(step size off)")
        worst = max(by[b].error for b in bad)
        if dtype == "float64" and worst < 0.1:      # "small": below 10 % of the displacement
            out.append(f"systematic small deviation in the update (step size, decay, clipping, ε …): f and the "
                       f"gradients are exact, the {kind} trajectory drifts (by < 10 % of its displacement)")
    if "trainer_restart" in by:
        persistent = all(by[b].passed for b in TRAINER_BLOCKS[:4])
        fresh = by["trainer_restart"].passed
        if fresh and not persistent:
            out.append("hidden optimizer state: a trainer created afresh at every step follows the reference, the "
                       "persistent one drifts (momentum, Adam moments, a schedule, gradients not zeroed)")
        elif persistent and not fresh:
            out.append("a newly created trainer's first step differs from later ones (warm-up, a step counter)")
    if "trainer_step_k" in by and not by["trainer_step_k"].passed and all(by[b].passed for b in TRAINER_BLOCKS[:4]):
        out.append(f"trainer.step({st.steps}) is not {st.steps} calls of trainer.step(1)")
    return out


def _diagnose(runs, dtype, train_w_O) -> tuple[list[str], list[str]]:
    """Name the catalogue mistakes whose predictions match your numbers on every failing case (cases that raised
    are skipped: they are reported with their exception) and that agree with you on the passing cases; collect the
    plain findings (uniform factors, drifting updates, hidden trainer state, shapes)."""
    candidates = [m for m in CATALOGUE if m.applies(dtype, train_w_O)]
    failing = [(r, s) for r, s in runs if not r.passed and s is not None]
    names = None
    for r, s in failing:
        fails = {b.block: b.error for b in r.blocks}
        r.diagnosis = [m.name for m in candidates if _mistake_matches(m, s, dtype, train_w_O, fails)]
        r.findings = _findings(s, r, dtype)
        names = r.diagnosis if names is None else [n for n in names if n in r.diagnosis]
    names = names or []
    if "float32_accumulation" in names and _float32_scatter([p for _, s in failing for p in s.scatter]) >= \
            F32_SCATTER_COS:                        # float32-sized but systematic: not float32 arithmetic
        names.remove("float32_accumulation")
        for r, _ in failing:
            if "float32_accumulation" in r.diagnosis:
                r.diagnosis.remove("float32_accumulation")
    for r, s in runs:
        if r.passed and names:
            fails = {b.block: b.error for b in r.blocks}
            names = [n for n in names if n == "float32_accumulation" or
                     _mistake_matches(next(m for m in candidates if m.name == n), s, dtype, train_w_O, fails)]
    shape = []
    for r, _ in runs:
        if r.error:
            for tag in ("squeeze_size_1", "transposed_gradient"):
                if f"[{tag}]" in r.error and tag not in shape:
                    shape.append(tag)
                    r.diagnosis.append(tag)
    findings = []
    for r, _ in failing:
        for f in r.findings:
            if f not in findings:
                findings.append(f)
    return names + shape, findings
