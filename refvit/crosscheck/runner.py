"""Running your functions and the reference on the cases (``crosscheck``); on a failure, the diagnosis."""
from __future__ import annotations

import math
import sys
import time
import traceback
from typing import Callable

import numpy as np

from .calls import DEFAULT_TIMEOUT, ContractError, _Raised, _user_outputs
from .cases import STEPS, tolerance
from .compare import _compare, _model_outputs, _RefTraj, _trainer_errors, _traj_errors
from .diagnosis import _State
from .explain import rank
from .metrics import describe_values
from .report import BlockResult, CaseResult, Report
from .setting import Setting
from .settings import JIANG, get_setting


def _run_case(spec, fns, dtype, train_w_O, steps, timeout, setting: Setting = JIANG):
    """Compare your functions with the reference on one case of ``setting``. Returns (CaseResult, _State or
    None)."""
    case = setting.build_case(spec)
    dt = np.dtype(dtype)
    steps = spec.steps or steps
    if not setting.has_step(spec):
        fns = (fns[0], fns[1], None, fns[3])      # no stateless step for this case's optimizer (Adam)
    # What your functions receive, and what the reference evaluates: the case rounded to dtype, held as float64.
    p0 = setting.params(*(a.astype(dt).astype(np.float64) for a in case.params))
    X = case.X.astype(dt).astype(np.float64)
    y = case.y.copy()
    settings = dict(spec.to_dict(), steps=steps)
    result = CaseResult(spec.name, spec.description, settings, kind=spec.kind)
    ref_traj = None
    if fns[2] is not None or fns[3] is not None:
        traj, grads = setting.trajectory(p0, X, y, spec, train_w_O, steps)
        first = setting.fresh_step(p0, X, y, spec, train_w_O) if fns[3] is not None else None
        restart = None if first is None else \
            [first] + [setting.fresh_step(p, X, y, spec, train_w_O) for p in traj[:-1]]
        ref_traj = _RefTraj(p0, traj, grads, spec.lr, restart)
    try:
        user = _user_outputs(case, p0, X, y, fns, dtype, train_w_O, steps,
                             ref_traj.traj if ref_traj else None, timeout,
                             lambda kind: setting.extra_args(spec, kind))
    except _Raised as e:                  # your function failed: report it for this case and go on
        cause = e.__cause__
        frame = traceback.extract_tb(cause.__traceback__)[-1]
        result.error = f"{e.args[0]} raised {type(cause).__name__}: {cause} (in {frame.name}, line {frame.lineno})"
        return result, None
    except (ContractError, TimeoutError) as e:
        result.error = str(e)
        return result, None
    ref = _model_outputs(None, p0, X, y, user.grads is not None,
                         (lambda p, X: setting.forward(p, X, spec), lambda p, X, y: setting.loss_and_grads(p, X, y,
                                                                                                         spec)))
    errs = _compare(user, ref, dtype, ref)
    if user.traj is not None:
        errs.update(_traj_errors(user.traj, ref_traj, dtype, setting.traj_blocks))
    if user.trainer is not None:
        errs.update(_trainer_errors(user, ref_traj, dtype, setting.trainer_blocks[:len(setting.fields)]))
    notes = {"f": user.f, "loss": user.loss}
    if user.grads is not None:
        notes.update(zip(setting.grad_blocks, user.grads))
    for b, e in errs.items():
        a = notes.get(b)
        note = describe_values(np.asarray(a)) if a is not None and not np.all(np.isfinite(a)) else None
        if a is not None and np.any(np.isnan(a)):
            e = math.nan                  # a NaN in your block is reported as nan, never as inf
        result.blocks.append(BlockResult(spec.name, b, float(e), tolerance(dtype, b), bool(e <= tolerance(dtype, b)),
                                         note))
    return result, _State(case, (p0, X, y), user, ref, ref_traj, steps, [], setting)


def crosscheck(forward_fn: Callable, grad_fn: Callable | None = None, gd_step_fn: Callable | None = None,
               dtype: str = "float64", *, trainer: Callable | None = None, train_w_O: bool = False, cases="all",
               steps: int = STEPS, timeout: float = DEFAULT_TIMEOUT, verbose: bool = True,
               setting="jiang2024") -> Report:
    """Compare your implementation with the reference on a battery of cases and diagnose mismatches.

    Parameters
    ----------
    forward_fn, grad_fn, gd_step_fn : your callables, with the contracts in the docstring of
        ``refvit.crosscheck``. Only forward_fn is required; the loss and gradient blocks need grad_fn, the
        trajectory blocks gd_step_fn.
    dtype : "float64" or "float32": the dtype of every array passed to your functions, and which tolerances apply.
    trainer : ``make_trainer(W_Q, W_K, W_V, w_O, X, y, lr)`` returning an object with ``.step(k)`` (k GD steps)
        and ``.params()`` (the current (W_Q, W_K, W_V, w_O)); checked as a persistent trainer, as one recreated
        at every step, and as one stepped k times in one call (the trainer_* blocks).
    train_w_O : whether your GD step trains w_O (default False: frozen, docs/math.md §3).
    cases : "all" (default), "quick" (no author settings), "small", "edge", "authors", or a list of names/groups.
    steps : length of the GD trajectory (20; the "long" case has its own 150).
    timeout : seconds allowed per call of one of your functions.
    verbose : progress per case on stderr, then the report on stdout.
    setting : "jiang2024" (default: the first setting, ``refvit.jiang2024``) or "li2025" (the second,
        ``refvit.li2025``: other contracts, cases and catalogue; float64 only; docs/crosscheck.md).

    Returns
    -------
    Report, with one ``CaseResult`` per case holding one ``BlockResult`` per block and the diagnosis.
    """
    setting = get_setting(setting)
    if dtype not in setting.dtypes:
        raise ValueError(f"dtype must be one of {setting.dtypes}, got {dtype!r}")
    if not callable(forward_fn):
        raise ValueError(f"forward_fn must be callable: {setting.forward_contract}")
    for name, fn in (("grad_fn", grad_fn), ("gd_step_fn", gd_step_fn), ("trainer", trainer)):
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be callable or None")
    if not isinstance(train_w_O, bool):
        raise ValueError(f"train_w_O must be True or False, got {train_w_O!r}")
    if train_w_O and setting is not JIANG:
        raise ValueError(f"train_w_O (--train-w-O) is an option of the first setting (its head w_O); in "
                         f"{setting.title} each case says which blocks are trained")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive, finite number of seconds, got {timeout!r}")
    fns = (forward_fn, grad_fn, gd_step_fn, trainer)
    specs = setting.select(cases)
    runs = []
    for i, spec in enumerate(specs):
        t0 = time.perf_counter()
        runs.append(_run_case(spec, fns, dtype, train_w_O, steps, timeout, setting))
        if verbose:
            r = runs[-1][0]
            print(f"crosscheck [{i + 1}/{len(specs)}] {spec.name}: {'ok' if r.passed else 'FAIL'} "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    report = Report(dtype, train_w_O, [r for r, _ in runs], setting=setting.name)
    if not report.passed:
        t0 = time.perf_counter()

        def progress(text):
            if verbose:
                print(f"crosscheck {text} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        report.diagnosis, report.explanations, report.findings = rank(runs, dtype, train_w_O, progress, setting)
        progress("diagnosis: done")
    if verbose:
        print(report.format())
    return report
