"""Calling your functions: fresh copies of every input, a time limit per call, and outputs checked against the
contracts with messages that say what is required, what came and how to fix it."""
from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from .cases import Case
from .metrics import describe_values

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


def _as_params(out, like, what: str):
    """``out`` as parameters of the type and shapes of ``like`` (``Params``, ``LiParams``)."""
    kind = type(like)
    if isinstance(out, dict):
        out = tuple(out.get(k) for k in kind._fields)
    if not isinstance(out, (tuple, list)) or len(out) != len(kind._fields):
        got = f"{type(out).__name__} of length {len(out)}" if isinstance(out, (tuple, list)) else type(out).__name__
        raise ContractError(f"{what} must return {len(kind._fields)} arrays ({', '.join(kind._fields)}); got {got}")
    hint = "; return the parameters unchanged if you do not train one (w_O frozen: return it as passed)" \
        if "w_O" in kind._fields else "; return the parameters unchanged if you do not train one (frozen blocks: " \
                                      "return them as passed)"
    return kind(*(_as_array(a, b.shape, n, what, hint) for n, a, b in zip(kind._fields, out, like)))


class _Outputs(NamedTuple):
    """One implementation's numbers on one case, all float64 (absent blocks None). ``traj``: the iterates after
    1 … T steps; ``trainer``: the persistent trainer's iterates; ``restart``: one step of a trainer recreated at
    each reference iterate; ``step_k``: a trainer stepped T times in one call."""
    f: np.ndarray | None
    loss: float | None
    grads: tuple | None       # Params or LiParams
    traj: list | None = None
    trainer: list | None = None
    restart: list | None = None
    step_k: tuple | None = None
    dtypes: frozenset = frozenset()    # the dtypes of the arrays your forward and grad returned ("float64", …)
    f_again: np.ndarray | None = None  # a second call of your forward on the same inputs (determinism)


def _iterate(one_step, p0, steps):
    """Iterates of a step function; stops early (shorter list) when an iterate is not finite."""
    out, p = [], p0
    for _ in range(steps):
        p = one_step(p)
        out.append(p)
        if not all(np.all(np.isfinite(a)) for a in p):
            break
    return out


def _user_outputs(case: Case, p0, X, y, fns, dtype, train_w_O, steps, ref_traj, timeout, extra=None) -> _Outputs:
    """Your functions' numbers on one case; ``extra(kind)`` gives the arguments after (params, X) ("forward") or
    (params, X, y) ("grad", "step", "trainer"): the first setting's lr by default."""
    forward_fn, grad_fn, step_fn, trainer_fn = fns
    dt = np.dtype(dtype)
    n = y.shape[0]
    if extra is None:
        extra = lambda kind: (case.spec.lr,) if kind in ("step", "trainer") else ()   # noqa: E731
    kind = type(p0)
    raw = _call(forward_fn, (*p0, X, *extra("forward")), dtype, "forward_fn", timeout)
    dtypes = {str(np.asarray(raw).dtype)}
    f = _as_array(raw, (n,), "f", "forward_fn")
    f_again = _as_array(_call(forward_fn, (*p0, X, *extra("forward")), dtype, "forward_fn", timeout), (n,), "f",
                        "forward_fn")
    loss = grads = traj = trainer = restart = step_k = None
    if grad_fn is not None:
        out = _call(grad_fn, (*p0, X, y, *extra("grad")), dtype, "grad_fn", timeout)
        names = [f"d{k}" for k in kind._fields]
        if not isinstance(out, (tuple, list)) or len(out) != len(names) + 1:
            got = f"{type(out).__name__} of length {len(out)}" if isinstance(out, (tuple, list)) else \
                type(out).__name__
            raise ContractError(f"grad_fn must return {len(names) + 1} values (loss, {', '.join(names)}); got {got}")
        la = np.asarray(out[0]) if out[0] is not None else None
        if la is None or la.size != 1:
            got = "None" if la is None else describe_values(la)
            per = " (per-sample losses: return their mean)" if la is not None and la.shape == (n,) else ""
            raise ContractError(f"grad_fn: loss must be the mean, a scalar; got {got}{per}")
        loss = float(la.reshape(()))
        dtypes |= {str(np.asarray(g).dtype) for g in out[1:]}
        grads = kind(*(_as_array(g, b.shape, nm, "grad_fn", ", even when training freezes w_O: return the "
                                   "gradient of the loss with respect to it" if nm == "dw_O" else "")
                         for nm, g, b in zip(names, out[1:], p0)))
    if step_fn is not None:
        traj = _iterate(lambda p: _as_params(_call(step_fn, (*(a.astype(dt) for a in p), X, y, *extra("step")),
                                                   dtype, "gd_step_fn", timeout), p0, "gd_step_fn"), p0, steps)
    if trainer_fn is not None:
        def make(p):
            return _call(trainer_fn, (*(a.astype(dt) for a in p), X, y, *extra("trainer")), dtype, "make_trainer",
                         timeout)

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
    return _Outputs(f, loss, grads, traj, trainer, restart, step_k, frozenset(dtypes), f_again)
