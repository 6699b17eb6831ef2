"""Running your functions and the reference (and, on a failure, the mutants) on the cases; the diagnosis."""
from __future__ import annotations

import math
import traceback
from typing import Callable, NamedTuple

import numpy as np

from ..model import Params, forward, loss_and_grads
from .cases import (DTYPES, GRAD_BLOCKS, STEPS, TRAJ_BLOCKS, Case, CaseSpec, build_case, reference_step,
                    select_cases, tolerance)
from .metrics import block_error, grad_zero_level, trajectory_error
from .mutants import CATALOGUE, Mistake
from .report import BlockResult, CaseResult, Report


def _call(fn, args, dtype):
    """Call a user function with fresh copies of its arrays in ``dtype``."""
    dt = np.dtype(dtype)
    return fn(*[np.array(a, dtype=dt, order="C", copy=True) if isinstance(a, np.ndarray) else a for a in args])


def _as_params(out, like: Params, what: str) -> Params:
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        raise ValueError(f"{what} must return 4 arrays (W_Q, W_K, W_V, w_O), got {type(out).__name__}")
    p = Params(*(np.asarray(a, dtype=np.float64) for a in out))
    for name, a, b in zip(Params._fields, p, like):
        if a.shape != b.shape:
            raise ValueError(f"{what} returned {name} of shape {a.shape}, expected {b.shape}")
    return p


class _Outputs(NamedTuple):
    """One implementation's numbers on one case, all as float64 arrays (absent blocks are None)."""
    f: np.ndarray | None
    loss: float | None
    grads: Params | None


def _user_outputs(case: Case, p0: Params, X, y, fns, dtype) -> _Outputs:
    forward_fn, grad_fn, _ = fns
    f = np.asarray(_call(forward_fn, (*p0, X), dtype), dtype=np.float64)
    if f.shape != y.shape:
        raise ValueError(f"forward_fn returned shape {f.shape}, expected (n,) = {y.shape}")
    loss = grads = None
    if grad_fn is not None:
        out = _call(grad_fn, (*p0, X, y), dtype)
        if not isinstance(out, (tuple, list)) or len(out) != 5:
            raise ValueError("grad_fn must return (loss, dW_Q, dW_K, dW_V, dw_O)")
        loss = float(np.asarray(out[0]).reshape(()))
        grads = _as_params(out[1:], p0, "grad_fn")
    return _Outputs(f, loss, grads)


def _model_outputs(model, p0, X, y, want_grads: bool) -> _Outputs:
    """``model``: None for the reference (refvit.model), else a ``Variant``."""
    if model is None:
        f = forward(p0, X)
        loss, grads = loss_and_grads(p0, X, y) if want_grads else (None, None)
    else:
        f = model.forward(p0, X)[0]
        loss, grads = model.loss_and_grads(p0, X, y) if want_grads else (None, None)
    cast = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    return _Outputs(cast(f), None if loss is None else float(loss),
                    None if grads is None else Params(*map(cast, grads)))


def _compare(user: _Outputs, other: _Outputs, dtype: str, ref: _Outputs) -> dict:
    """Errors of the non-trajectory blocks, {block: error}; ``ref`` (the reference) sets the gradients' zero level."""
    err = {"f": block_error(user.f, other.f)}
    if user.grads is not None:
        err["loss"] = block_error(user.loss, other.loss)
        zero = grad_zero_level(dtype, ref.grads, other.grads)
        for name, a, b in zip(GRAD_BLOCKS, user.grads, other.grads):
            err[name] = block_error(a, b, zero)
    return err


def _trajectories(case: Case, p0: Params, X, y, step_fn, dtype, models, train_w_O, steps) -> list[dict]:
    """Iterate your step ``steps`` times and each model's in lockstep; max trajectory error per block per model.

    ``models``: list of None (the reference) or ``Variant``. Your iterates are fed back in ``dtype``; the reference
    runs in float64 from the same (rounded) start. Returns one {traj_block: max error over steps} per model.
    """
    lr = case.spec.lr
    dt = np.dtype(dtype)
    mine = p0
    theirs = [p0] * len(models)
    errs = [dict.fromkeys(TRAJ_BLOCKS, 0.0) for _ in models]
    for _ in range(steps):
        mine = _as_params(_call(step_fn, (*(a.astype(dt) for a in mine), X, y, lr), dtype), p0, "gd_step_fn")
        for k, model in enumerate(models):
            if model is None:
                theirs[k] = reference_step(theirs[k], X, y, lr, train_w_O)
            else:
                theirs[k] = Params(*(np.asarray(a, np.float64) for a in model.step(theirs[k], X, y, lr, train_w_O)))
            for name, a, b, s in zip(TRAJ_BLOCKS, mine, theirs[k], p0):
                errs[k][name] = max(errs[k][name], trajectory_error(a, b, s))
        if not all(np.all(np.isfinite(a)) for a in mine):
            for e in errs:
                e.update(dict.fromkeys(TRAJ_BLOCKS, math.inf))
            break
    return errs


def _within(errs: dict, dtype: str) -> bool:
    return all(e <= tolerance(dtype, b) for b, e in errs.items())


def _mistake_matches(mistake: Mistake, case: Case, inputs, user: _Outputs, ref: _Outputs, fns, dtype, train_w_O,
                     steps) -> bool:
    """Do your outputs match this mutant on every block of the case (within the mutant's dtype tolerance)?"""
    p0, X, y = inputs
    match_dtype = mistake.variant.dtype if dtype == "float64" else dtype
    other = _model_outputs(mistake.variant, p0, X, y, user.grads is not None)
    if not _within(_compare(user, other, match_dtype, ref), match_dtype):
        return False
    if fns[2] is None:
        return True
    errs = _trajectories(case, p0, X, y, fns[2], dtype, [mistake.variant], train_w_O, steps)[0]
    return _within(errs, match_dtype)


def _run_case(spec: CaseSpec, fns, dtype, train_w_O, steps):
    """Compare your functions with the reference on one case. Returns (CaseResult, state for the diagnosis)."""
    case = build_case(spec)
    dt = np.dtype(dtype)
    # What your functions receive, and what the reference evaluates: the case rounded to dtype, held as float64.
    p0 = Params(*(a.astype(dt).astype(np.float64) for a in case.params))
    X = case.X.astype(dt).astype(np.float64)
    y = case.y.copy()
    result = CaseResult(spec.name, spec.description, spec.to_dict())
    try:
        user = _user_outputs(case, p0, X, y, fns, dtype)
        ref = _model_outputs(None, p0, X, y, user.grads is not None)
        errs = _compare(user, ref, dtype, ref)
        if fns[2] is not None:
            errs.update(_trajectories(case, p0, X, y, fns[2], dtype, [None], train_w_O, steps)[0])
    except Exception as e:  # your function failed: report it for this case and go on
        result.error = f"{type(e).__name__}: {e} ({traceback.extract_tb(e.__traceback__)[-1].name})"
        return result, None
    result.blocks = [BlockResult(spec.name, b, float(e), tolerance(dtype, b), bool(e <= tolerance(dtype, b)))
                     for b, e in errs.items()]
    return result, (case, (p0, X, y), user, ref)


def crosscheck(forward_fn: Callable, grad_fn: Callable | None = None, gd_step_fn: Callable | None = None,
               dtype: str = "float64", *, train_w_O: bool = False, cases="all", steps: int = STEPS,
               verbose: bool = True) -> Report:
    """Compare your implementation with the reference on a battery of cases and diagnose mismatches.

    Parameters
    ----------
    forward_fn, grad_fn, gd_step_fn : your callables, with the contracts in the docstring of
        ``refvit.crosscheck``. Only
        forward_fn is required; the loss and gradient blocks need grad_fn, the trajectory blocks gd_step_fn.
    dtype : "float64" or "float32": the dtype of every array passed to your functions, and which tolerances apply.
    train_w_O : whether your GD step trains w_O (default False: frozen, docs/math.md §3).
    cases : "all" (default: 5 small cases + the authors' two settings), "small", "authors", or a list of names.
    steps : length of the GD trajectory (20).
    verbose : print the report.

    Returns
    -------
    Report, with one ``CaseResult`` per case holding one ``BlockResult`` per block (f, loss, dW_Q, dW_K, dW_V,
    dw_O, traj_W_Q, traj_W_K, traj_W_V, traj_w_O) and the names of matching catalogue mistakes.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if not callable(forward_fn):
        raise ValueError("forward_fn must be callable: forward_fn(W_Q, W_K, W_V, w_O, X) -> f")
    for name, fn in (("grad_fn", grad_fn), ("gd_step_fn", gd_step_fn)):
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be callable or None")
    if not isinstance(train_w_O, bool):
        raise ValueError(f"train_w_O must be True or False, got {train_w_O!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    fns = (forward_fn, grad_fn, gd_step_fn)
    runs = [_run_case(spec, fns, dtype, train_w_O, steps) for spec in select_cases(cases)]
    results = [r for r, _ in runs]
    report = Report(dtype, train_w_O, results)
    if not report.passed:
        report.diagnosis = _diagnose(runs, fns, dtype, train_w_O, steps)
    if verbose:
        print(report.format())
    return report


def _diagnose(runs, fns, dtype, train_w_O, steps) -> list[str]:
    """Name the catalogue mistakes your outputs match on every case, while the reference fails somewhere.

    Each failing case lists the mutants it matches; the overall diagnosis keeps those matching every failing case,
    then checks them on the passing cases too (a mistake that the passing cases contradict is not named).
    Mutants are evaluated lazily (the trajectory only after f, loss and gradients match), so this costs little.
    """
    candidates = [m for m in CATALOGUE if m.applies(dtype, train_w_O)]
    failing = [(r, s) for r, s in runs if not r.passed]
    if any(s is None for _, s in failing):          # an exception: nothing to compare on that case
        candidates_all = None
    else:
        candidates_all = list(candidates)
    for r, s in failing:
        if s is None:
            continue
        r.diagnosis = [m.name for m in candidates if _mistake_matches(m, *s, fns, dtype, train_w_O, steps)]
        if candidates_all is not None:
            candidates_all = [m for m in candidates_all if m.name in r.diagnosis]
    if not candidates_all:
        return []
    for r, s in runs:
        if r.passed:
            candidates_all = [m for m in candidates_all if _mistake_matches(m, *s, fns, dtype, train_w_O, steps)]
    return [m.name for m in candidates_all]

