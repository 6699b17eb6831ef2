"""The reference's numbers (refvit.jiang2024.model in float64) and the errors of yours against them or against a mutant's:
values, GD trajectories (float64: displacement-relative; float32: in rounding budgets) and the trainer blocks."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..jiang2024.model import Params, forward, loss_and_grads
from .calls import _Outputs
from .cases import F32_GRAD_ROUNDING, F32_UNIT, TRAINER_BLOCKS, TRAJ_BLOCKS, tolerance
from .metrics import block_error, grad_zero_level, rounding_budget, trajectory_error

def _model_outputs(model, p0, X, y, want_grads: bool, reference=None) -> _Outputs:
    """``model``: None for the reference (``reference``: (forward, loss_and_grads) of the setting, by default
    refvit.jiang2024.model's), else a mutant (a ``Variant``, or a setting's variant bound to a case)."""
    if model is None:
        fwd, lag = reference or (forward, loss_and_grads)
        f = fwd(p0, X)
        loss, grads = lag(p0, X, y) if want_grads else (None, None)
    else:
        with np.errstate(all="ignore"):      # a mutant may overflow on purpose (naive loss or softmax)
            f = model.forward(p0, X)[0]
            loss, grads = model.loss_and_grads(p0, X, y) if want_grads else (None, None)
    cast = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    return _Outputs(cast(f), None if loss is None else float(loss),
                    None if grads is None else type(p0)(*map(cast, grads)))


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
        for name, a, b in zip([f"d{k}" for k in user.grads._fields], user.grads, other.grads):
            out[name] = err(a, b, zero)
    return out


class _RefTraj(NamedTuple):
    p0: tuple           # Params or LiParams
    traj: list          # θ_1 … θ_T
    grads: list         # g_0 … g_{T-1}
    lr: float
    restart: list | None = None   # one step of a new optimizer from θ_0 … θ_{T−1}; None: ``traj`` (no state)


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
    for t, (a_t, b_t, s_t) in enumerate(zip(restart, theirs.restart or theirs.traj, starts)):
        one = _RefTraj(s_t, [b_t], [theirs.grads[t]], theirs.lr)
        worst = max(worst, max(_traj_errors([a_t], one, dtype).values()))
    return worst


def _trainer_errors(user: _Outputs, theirs: _RefTraj, dtype: str, names=TRAINER_BLOCKS[:4]) -> dict:
    """The trainer blocks: ``names`` (one per parameter block), then trainer_restart and trainer_step_k."""
    errs = _traj_errors(user.trainer, theirs, dtype, names)
    errs["trainer_restart"] = _restart_errors(user.restart, theirs, dtype)
    # trainer.step(T) in one call against θ_T (the earlier iterates are the reference's own: error 0 there)
    errs["trainer_step_k"] = max(_traj_errors([*theirs.traj[:-1], user.step_k], theirs, dtype).values())
    return errs


def _within(errs: dict, dtype: str) -> bool:
    return all(e <= tolerance(dtype, b) for b, e in errs.items())
