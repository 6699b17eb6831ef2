"""Your updates judged on their own: the first update block by block against the reference's −lr·∇L, and, when a
persistent trainer drifts although a fresh one does not, each update against the reference gradient at *your own*
iterate, which separates state kept by the optimizer (momentum, gradients never zeroed, a schedule: the update is
still made of gradients of the model's loss) from state kept outside it (an extra trained parameter, a buffer, a
cached tensor: the loss itself changes between steps).

Each finding is a ``Finding``: the cause's name when it is one (``w_O_trained``, ``w_O_frozen``,
``state_outside_optimizer``), else None, and the sentence.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..jiang2024.model import Params, loss_and_grads
from .cases import tolerance
from .metrics import uniform_factor

BLOCK_NAMES = Params._fields
CONSISTENCY_STEPS = 6     # steps of your own trajectory re-evaluated with the reference gradient (cost: one each)


class Finding(NamedTuple):
    name: str | None
    text: str


def _join(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _moves(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))


def w_O_rule(kind: str, mine: list, p0: Params, train_w_O: bool) -> Finding | None:
    """w_O moved although frozen, or frozen although trained (the first iterate shows it)."""
    moved = _moves(mine[0].w_O, p0.w_O)
    if not train_w_O and moved > 0:
        return Finding("w_O_trained", f"your {kind} moves w_O from step 1, which is frozen in this setting (pass "
                       f"train_w_O=True, --train-w-O, if you train it on purpose)")
    return None


def first_update(kind: str, mine: list, ref_first: Params, p0: Params, dtype: str) -> list[Finding]:
    """Block by block, your first update θ_1 − θ_0 against the reference's: zero, or c × the reference's."""
    tol = tolerance(dtype, "traj_W_Q")
    groups: dict = {}
    moving = []
    for name, a, b, s in zip(BLOCK_NAMES, mine[0], ref_first, p0):
        du, dr = np.asarray(a) - s, np.asarray(b) - s
        big = float(np.max(np.abs(dr), initial=0.0))
        if big == 0.0 or not np.all(np.isfinite(du)):
            continue                                            # the reference does not move it (frozen w_O)
        moving.append(name)
        if float(np.max(np.abs(du), initial=0.0)) <= tol * big:
            groups.setdefault("zero", []).append(name)
            continue
        c = uniform_factor(du, dr, tol)
        if c is not None and abs(c - 1) > tol:
            groups.setdefault(round(c, 6), []).append(name)
    out = []
    for key, names in groups.items():
        if key == "zero":
            out.append(Finding(None, f"your {kind} leaves {_join(names)} unchanged at step 1 (its update is zero; "
                               f"the reference's is not): a block detached or left out of the optimizer"))
        elif len(names) > 1 and names == moving:
            out.append(Finding(None, f"your first {kind} update is {key:.6g} × the reference's −lr·∇L (step size "
                               f"off) in {_join(names)}"))
        else:
            out.append(Finding(None, f"your first {kind} update of {_join(names)} is {key:.6g} × the reference's "
                               f"−lr·∇L (step size off for {_join(names)})"))
    return out


def _grad(p: Params, X, y, train_w_O: bool) -> list:
    _, g = loss_and_grads(p, X, y)
    return [*g[:3], g[3] if train_w_O else np.zeros_like(g[3])]


def _flat(blocks) -> np.ndarray:
    return np.concatenate([np.ravel(b) for b in blocks])


def state_kind(kind: str, mine: list, p0: Params, X, y, lr: float, train_w_O: bool, dtype: str) -> Finding:
    """Why a persistent trainer drifts while a fresh one follows the reference: each update u_t = θ_{t+1} − θ_t
    against g_t = ∇L(θ_t) at your own iterate θ_t. Optimizer state keeps u_t a combination of g_t and earlier
    updates (momentum v_t = β v_{t−1} + g_t; β = 1 when gradients are never zeroed) or a multiple c_t g_t (a
    schedule); anything else means the loss your trainer differentiates changed between steps."""
    tol = 10 * tolerance(dtype, "grad")
    iterates = [p0] + list(mine[:CONSISTENCY_STEPS])
    v = [-(_flat(b) - _flat(a)) / lr for a, b in zip(iterates, iterates[1:])]      # v_t = −u_t / lr
    g = [_flat(_grad(p, X, y, train_w_O)) for p in iterates[:-1]]
    scale = max(float(np.max(np.abs(x))) for x in g)
    fits = {"momentum": [], "schedule": []}
    parallel = all(abs(float(v[t - 1] @ g[t])) >= (1 - 1e-9) * float(np.linalg.norm(v[t - 1]) * np.linalg.norm(g[t]))
                   for t in range(1, len(v)))
    if parallel or len(y) == 1:
        # one sample: ∇L = ℓ'(y f)·∇f, so state that acts on f (a bias, a buffer) only rescales the update, as a
        # schedule does; one moving direction: every update is a multiple of ∇L whatever the state
        return Finding(None, "hidden state: a trainer created afresh at every step follows the reference, the "
                       "persistent one drifts; with one sample (or one moving direction) the updates are multiples "
                       "of ∇L, so optimizer state (a schedule, momentum) and state outside the optimizer cannot be "
                       "told apart in this case")
    for t in range(1, len(v)):
        r, prev = v[t] - g[t], v[t - 1]
        beta = float(r @ prev) / float(prev @ prev or 1.0)
        fits["momentum"].append((beta, float(np.max(np.abs(r - beta * prev))) <= tol * scale))
        c = float(v[t] @ g[t]) / float(g[t] @ g[t] or 1.0)
        fits["schedule"].append((c, float(np.max(np.abs(v[t] - c * g[t]))) <= tol * scale))
    if fits["momentum"] and all(ok for _, ok in fits["momentum"]):
        beta = np.median([b for b, _ in fits["momentum"]])
        what = "gradients never zeroed (β = 1)" if abs(beta - 1) < 1e-6 else f"momentum, β ≈ {beta:.3g}"
        return Finding(None, f"hidden optimizer state: a trainer created afresh at every step follows the "
                       f"reference, the persistent one drifts; each update is −lr·(∇L + β·previous update/(−lr)) at "
                       f"your own iterate: {what}")
    if fits["schedule"] and all(ok for _, ok in fits["schedule"]):
        cs = ", ".join(f"{c:.4g}" for c, _ in fits["schedule"][:4])
        return Finding(None, f"hidden optimizer state: a trainer created afresh at every step follows the "
                       f"reference, the persistent one drifts; each update is c_t·(−lr·∇L) at your own iterate "
                       f"with c_t = {cs} … for t = 1, 2, …: a step-size schedule")
    t = next((i for i, (_, ok) in enumerate(fits["momentum"], start=1) if not ok), 1)
    return Finding("state_outside_optimizer", f"state outside the optimizer: a trainer created afresh follows the "
                   f"reference, but at step {t + 1} your persistent {kind}'s update is neither −lr·∇L at your own "
                   f"iterate nor a combination of it with earlier updates, so the loss it differentiates has "
                   f"changed between steps (an extra trained parameter, a buffer or a cached tensor kept in the "
                   f"model)")
