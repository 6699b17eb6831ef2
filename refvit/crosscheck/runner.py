"""Running your functions and the reference (and, on a failure, the mutants) on the cases; the diagnosis."""
from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from typing import Callable, NamedTuple

import numpy as np

from ..model import Params, forward, loss_and_grads
from .cases import (DTYPES, GRAD_BLOCKS, STEPS, TOLERANCES, TRAINER_BLOCKS, TRAJ_BLOCKS, Case, CaseSpec,
                    F32_GRAD_ROUNDING, F32_UNIT, build_case, select_cases, tolerance)
from .metrics import (block_error, describe_values, grad_zero_level, match_error, rounding_budget,
                      trajectory_error, uniform_factor)
from .mutants import CATALOGUE, Mistake, Variant
from .report import BlockResult, CaseResult, Report

F32_SCATTER_COS = 0.5    # see _float32_scatter: float32 rounding ≤ 0.25, systematic changes ≥ 0.8 (measured)
DEFAULT_TIMEOUT = 120.0   # seconds per call of one of your functions; generous: the largest case takes < 1 s


class ContractError(ValueError):
    """Your function returned something the contract does not allow; the message says what and how to fix it."""


class _Raised(Exception):
    """Your function raised; carries the original exception."""


def _copy(a, dt):
    return np.array(a, dtype=dt, order="C", copy=True) if isinstance(a, np.ndarray) else a


def _call(fn, args, dtype, what: str, timeout: float):
    """Call a user function on fresh copies of its arrays in ``dtype``, in a thread, within ``timeout`` seconds."""
    dt = np.dtype(dtype)
    copies = [_copy(a, dt) for a in args]
    box = {}

    def target():
        try:
            box["out"] = fn(*copies)
        except BaseException as e:   # noqa: BLE001 - reported for this case
            box["exc"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise TimeoutError(f"{what} did not return within {timeout:g} s; make it faster or raise the limit "
                           f"(timeout=…, --timeout SECONDS)")
    if "exc" in box:
        raise _Raised(what) from box["exc"]
    return box["out"]


def _as_array(x, shape, name: str, what: str, hint: str = "") -> np.ndarray:
    """``x`` as float64 of ``shape``, or a ContractError saying what is required, what came, and how to fix it."""
    if x is None:
        raise ContractError(f"{what} returned None for {name}; {name} {shape} is required{hint}")
    try:
        a = np.asarray(x)
        a64 = a.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise ContractError(f"{what}: {name} cannot be read as a numeric array ({type(x).__name__}: {e}); "
                            f"return a numpy array (torch: .detach().cpu().numpy())") from None
    if a.shape != tuple(shape):
        fix = ""
        if a.shape == tuple(shape)[::-1] and len(shape) == 2:
            fix = f"; it is transposed: return {name}.T (nn.Linear stores Wᵀ) [transposed_gradient]"
        elif a.size == int(np.prod(shape)) and tuple(s for s in shape if s != 1) == tuple(s for s in a.shape
                                                                                           if s != 1):
            fix = "; an axis of size 1 was dropped or added (a squeeze() without an axis?) [squeeze_size_1]"
        raise ContractError(f"{what}: {name} must have shape {tuple(shape)}; got {describe_values(a)}{fix}")
    return a64


def _as_params(out, like: Params, what: str) -> Params:
    if isinstance(out, dict):
        out = tuple(out.get(k) for k in Params._fields)
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        got = f"{type(out).__name__} of length {len(out)}" if isinstance(out, (tuple, list)) else type(out).__name__
        raise ContractError(f"{what} must return 4 arrays (W_Q, W_K, W_V, w_O); got {got}")
    hint = "; return the parameters unchanged if you do not train one (w_O frozen: return it as passed)"
    return Params(*(_as_array(a, b.shape, n, what, hint) for n, a, b in zip(Params._fields, out, like)))


class _Outputs(NamedTuple):
    """One implementation's numbers on one case, all float64 (absent blocks None). ``traj``: the iterates after
    1 … T steps; ``trainer``: the persistent trainer's iterates; ``restart``: one step of a trainer recreated at
    each reference iterate; ``step_k``: a trainer stepped T times in one call."""
    f: np.ndarray | None
    loss: float | None
    grads: Params | None
    traj: list | None = None
    trainer: list | None = None
    restart: list | None = None
    step_k: Params | None = None


def _iterate(one_step, p0, steps):
    """Iterates of a step function; stops early (shorter list) when an iterate is not finite."""
    out, p = [], p0
    for _ in range(steps):
        p = one_step(p)
        out.append(p)
        if not all(np.all(np.isfinite(a)) for a in p):
            break
    return out


def _user_outputs(case: Case, p0: Params, X, y, fns, dtype, train_w_O, steps, ref_traj, timeout) -> _Outputs:
    forward_fn, grad_fn, step_fn, trainer_fn = fns
    dt = np.dtype(dtype)
    n = y.shape[0]
    lr = case.spec.lr
    f = _as_array(_call(forward_fn, (*p0, X), dtype, "forward_fn", timeout), (n,), "f", "forward_fn")
    loss = grads = traj = trainer = restart = step_k = None
    if grad_fn is not None:
        out = _call(grad_fn, (*p0, X, y), dtype, "grad_fn", timeout)
        if not isinstance(out, (tuple, list)) or len(out) != 5:
            got = f"{type(out).__name__} of length {len(out)}" if isinstance(out, (tuple, list)) else \
                type(out).__name__
            raise ContractError(f"grad_fn must return 5 values (loss, dW_Q, dW_K, dW_V, dw_O); got {got}")
        la = np.asarray(out[0]) if out[0] is not None else None
        if la is None or la.size != 1:
            got = "None" if la is None else describe_values(la)
            per = " (per-sample losses: return their mean)" if la is not None and la.shape == (n,) else ""
            raise ContractError(f"grad_fn: loss must be the mean, a scalar; got {got}{per}")
        loss = float(la.reshape(()))
        names = [f"d{k}" for k in Params._fields]
        grads = Params(*(_as_array(g, b.shape, nm, "grad_fn", ", even when training freezes w_O: return the "
                                   "gradient of the loss with respect to it" if nm == "dw_O" else "")
                         for nm, g, b in zip(names, out[1:], p0)))
    if step_fn is not None:
        traj = _iterate(lambda p: _as_params(_call(step_fn, (*(a.astype(dt) for a in p), X, y, lr), dtype,
                                                   "gd_step_fn", timeout), p0, "gd_step_fn"), p0, steps)
    if trainer_fn is not None:
        def make(p):
            return _call(trainer_fn, (*(a.astype(dt) for a in p), X, y, lr), dtype, "make_trainer", timeout)

        def read(tr):
            return _as_params(_call(tr.params, (), dtype, "trainer.params()", timeout), p0, "trainer.params()")

        def advance(tr, k):
            _call(tr.step, (k,), dtype, f"trainer.step({k})", timeout)
            return read(tr)

        tr = make(p0)
        for name in ("step", "params"):
            if not callable(getattr(tr, name, None)):
                raise ContractError(f"make_trainer must return an object with .step(k) and .params(); got "
                                    f"{type(tr).__name__} without a callable .{name}")
        trainer = _iterate(lambda p: advance(tr, 1), p0, steps)
        restart = [advance(make(p), 1) for p in [p0] + ref_traj[:-1]]
        step_k = advance(make(p0), steps)
    return _Outputs(f, loss, grads, traj, trainer, restart, step_k)


def _model_outputs(model, p0, X, y, want_grads: bool) -> _Outputs:
    """``model``: None for the reference (refvit.model), else a ``Variant``."""
    if model is None:
        f = forward(p0, X)
        loss, grads = loss_and_grads(p0, X, y) if want_grads else (None, None)
    else:
        with np.errstate(all="ignore"):      # a mutant may overflow on purpose (naive loss or softmax)
            f = model.forward(p0, X)[0]
            loss, grads = model.loss_and_grads(p0, X, y) if want_grads else (None, None)
    cast = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    return _Outputs(cast(f), None if loss is None else float(loss),
                    None if grads is None else Params(*map(cast, grads)))


def _reference_trajectory(p0, X, y, lr, train_w_O, steps):
    """The reference iterates θ_1 … θ_T and gradients g_0 … g_{T-1} (float64, docs/math.md (6.1))."""
    traj, grads, p = [], [], p0
    for _ in range(steps):
        _, g = loss_and_grads(p, X, y)
        grads.append(g)
        p = Params(p.W_Q - lr * g.W_Q, p.W_K - lr * g.W_K, p.W_V - lr * g.W_V,
                   p.w_O - lr * g.w_O if train_w_O else p.w_O.copy())
        traj.append(p)
    return traj, grads


def _compare(user: _Outputs, other: _Outputs, dtype: str, ref: _Outputs, err=block_error, mutant=False) -> dict:
    """Errors of the f, loss and gradient blocks, {block: error}; ``ref`` sets the gradients' zero level.

    Against a mutant (``mutant``), a block below the tolerance × the largest gradient entry counts as zero: a
    block that is 0 mathematically can come out of a mutant's cancellations (ε in a one-hot softmax) as noise of
    1e-11 of the gradient, different in every implementation, which says nothing about the mistake."""
    out = {"f": err(user.f, other.f)}
    if user.grads is not None:
        out["loss"] = err(user.loss, other.loss)
        zero = grad_zero_level(dtype, ref.grads, other.grads)
        if mutant:
            zero = max(zero, tolerance(dtype, "grad") * max(float(np.max(np.abs(b))) for b in ref.grads))
        for name, a, b in zip(GRAD_BLOCKS, user.grads, other.grads):
            out[name] = err(a, b, zero)
    return out


class _RefTraj(NamedTuple):
    p0: Params
    traj: list          # θ_1 … θ_T
    grads: list         # g_0 … g_{T-1}
    lr: float


def _traj_errors(mine: list, theirs: _RefTraj, dtype: str, names=TRAJ_BLOCKS) -> dict:
    """Max over steps of each block's trajectory error: float64, displacement-relative (``trajectory_error``);
    float32, in units of the accumulated rounding budget (``rounding_budget``). inf when yours stops early."""
    errs = dict.fromkeys(names, 0.0)
    if len(mine) < len(theirs.traj):
        return dict.fromkeys(names, math.inf)
    budget = rounding_budget(theirs.traj, theirs.grads, theirs.lr, F32_UNIT, F32_GRAD_ROUNDING) \
        if dtype == "float32" else None
    for t, (a_t, b_t) in enumerate(zip(mine, theirs.traj)):
        for k, (name, a, b, s) in enumerate(zip(names, a_t, b_t, theirs.p0)):
            if budget is None:
                e = trajectory_error(a, b, s)
            else:
                e = trajectory_error(a, b, s)
                if math.isfinite(e) and e > 0:
                    e = float(np.max(np.abs(a - b))) / budget[t][k]
            errs[name] = max(errs[name], e)
    return errs


def _restart_errors(restart: list, theirs: _RefTraj, dtype: str) -> float:
    """One step of a freshly created trainer from each reference iterate, against the reference step."""
    worst = 0.0
    starts = [theirs.p0] + theirs.traj[:-1]
    for t, (a_t, b_t, s_t) in enumerate(zip(restart, theirs.traj, starts)):
        one = _RefTraj(s_t, [b_t], [theirs.grads[t]], theirs.lr)
        worst = max(worst, max(_traj_errors([a_t], one, dtype).values()))
    return worst


def _trainer_errors(user: _Outputs, theirs: _RefTraj, dtype: str) -> dict:
    errs = _traj_errors(user.trainer, theirs, dtype, TRAINER_BLOCKS[:4])
    errs["trainer_restart"] = _restart_errors(user.restart, theirs, dtype)
    # trainer.step(T) in one call against θ_T (the earlier iterates are the reference's own: error 0 there)
    errs["trainer_step_k"] = max(_traj_errors([*theirs.traj[:-1], user.step_k], theirs, dtype).values())
    return errs


def _within(errs: dict, dtype: str) -> bool:
    return all(e <= tolerance(dtype, b) for b, e in errs.items())


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
        factors = {round(c, 6) for c in first if c is not None}
        if len(factors) == 1 and abs(next(iter(factors)) - 1) > tolerance(dtype, "grad"):
            out.append(f"your first {kind} update is {next(iter(factors)):.6g} × the reference's −lr·∇L "
                       f"(step size off)")
        worst = max(by[b].error for b in bad)
        if dtype == "float64" and worst < 0.1:
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


def _run_case(spec: CaseSpec, fns, dtype, train_w_O, steps, timeout):
    """Compare your functions with the reference on one case. Returns (CaseResult, _State or None)."""
    case = build_case(spec)
    dt = np.dtype(dtype)
    steps = spec.steps or steps
    # What your functions receive, and what the reference evaluates: the case rounded to dtype, held as float64.
    p0 = Params(*(a.astype(dt).astype(np.float64) for a in case.params))
    X = case.X.astype(dt).astype(np.float64)
    y = case.y.copy()
    settings = dict(spec.to_dict(), steps=steps)
    result = CaseResult(spec.name, spec.description, settings)
    ref_traj = None
    if fns[2] is not None or fns[3] is not None:
        traj, grads = _reference_trajectory(p0, X, y, spec.lr, train_w_O, steps)
        ref_traj = _RefTraj(p0, traj, grads, spec.lr)
    try:
        user = _user_outputs(case, p0, X, y, fns, dtype, train_w_O, steps,
                             ref_traj.traj if ref_traj else None, timeout)
    except _Raised as e:                  # your function failed: report it for this case and go on
        cause = e.__cause__
        frame = traceback.extract_tb(cause.__traceback__)[-1]
        result.error = f"{e.args[0]} raised {type(cause).__name__}: {cause} (in {frame.name}, line {frame.lineno})"
        return result, None
    except (ContractError, TimeoutError) as e:
        result.error = str(e)
        return result, None
    ref = _model_outputs(None, p0, X, y, user.grads is not None)
    errs = _compare(user, ref, dtype, ref)
    if user.traj is not None:
        errs.update(_traj_errors(user.traj, ref_traj, dtype))
    if user.trainer is not None:
        errs.update(_trainer_errors(user, ref_traj, dtype))
    notes = {"f": user.f, "loss": user.loss}
    if user.grads is not None:
        notes.update(zip(GRAD_BLOCKS, user.grads))
    for b, e in errs.items():
        a = notes.get(b)
        note = describe_values(np.asarray(a)) if a is not None and not np.all(np.isfinite(a)) else None
        result.blocks.append(BlockResult(spec.name, b, float(e), tolerance(dtype, b), bool(e <= tolerance(dtype, b)),
                                         note))
    return result, _State(case, (p0, X, y), user, ref, ref_traj, steps, [])


def crosscheck(forward_fn: Callable, grad_fn: Callable | None = None, gd_step_fn: Callable | None = None,
               dtype: str = "float64", *, trainer: Callable | None = None, train_w_O: bool = False, cases="all",
               steps: int = STEPS, timeout: float = DEFAULT_TIMEOUT, verbose: bool = True) -> Report:
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

    Returns
    -------
    Report, with one ``CaseResult`` per case holding one ``BlockResult`` per block and the diagnosis.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if not callable(forward_fn):
        raise ValueError("forward_fn must be callable: forward_fn(W_Q, W_K, W_V, w_O, X) -> f")
    for name, fn in (("grad_fn", grad_fn), ("gd_step_fn", gd_step_fn), ("trainer", trainer)):
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be callable or None")
    if not isinstance(train_w_O, bool):
        raise ValueError(f"train_w_O must be True or False, got {train_w_O!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    fns = (forward_fn, grad_fn, gd_step_fn, trainer)
    specs = select_cases(cases)
    runs = []
    for i, spec in enumerate(specs):
        t0 = time.perf_counter()
        runs.append(_run_case(spec, fns, dtype, train_w_O, steps, timeout))
        if verbose:
            r = runs[-1][0]
            print(f"crosscheck [{i + 1}/{len(specs)}] {spec.name}: {'ok' if r.passed else 'FAIL'} "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    report = Report(dtype, train_w_O, [r for r, _ in runs])
    if not report.passed:
        report.diagnosis, report.findings = _diagnose(runs, dtype, train_w_O)
    if verbose:
        print(report.format())
    return report


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
