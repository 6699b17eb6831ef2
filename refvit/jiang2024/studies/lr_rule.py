"""The learning-rate rule shared by the optimizer study: one rate per optimizer and setting, from pilot runs.

Learning-rate rule. Each optimizer gets one rate per setting from the *same* log grid, chosen from **pilot runs**
only: a 2 × 2 grid of cells, one N·SNR² clearly below and one clearly above the boundary for each of two N, × 2
seeds. Pilot runs draw their data, test set and init from ``streams(seed, N, ‖μ‖, r, PILOT_STREAM_TAG)``, a key
no reported run of any seed uses (``Sweep.stream_tag``), so a pilot's test set is a *held-out* set for tuning, never a reported number.
A rate is *feasible* when every pilot run reaches training loss < 0.01 within the step budget without diverging.
The grid is scanned from the largest rate downward:

* ``lr_rule="heldout"`` (default): choose the feasible rate with the lowest mean held-out logistic loss of its
  pilot runs (ties: the larger rate); the scan stops at the first infeasible rate after a feasible one (smaller
  rates are only slower).
* ``lr_rule="largest_stable"``: choose the first feasible rate, and stop there.

Why "heldout" is the default: with the stopping rule "training loss < 0.01", every rate of the quick grid is
"stable" for SignGD and Adam (1e-4 … 1) and 1e-2 … 1 is for GD: large rates reach the threshold in one or two steps
without any non-finite value. The largest stable rate is then the top of whatever grid one writes down, while
SignGD's held-out loss grows with the rate (Figure-1 pilots of ``refvit study optimizers --preset quick``: 0.64 at
1e-3, 1.25 at 1e-2, 14.3 at 0.1, 143 at 1), so that rule would make the comparison a statement about the grid.
Tuning on held-out data gives every optimizer its best rate on the grid instead. Both choices are saved
(``lr_choice.json``); the pilot tables (``pilot.csv``) show held-out loss and steps at every scanned rate.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import LOSS_THRESHOLD

LR_RULES = ("heldout", "largest_stable")


def lr_tag(lr: float) -> str:
    """The text of a rate in folder and series names."""
    return f"{lr:g}"


def choose_lr(grid, evaluate, rule: str = "heldout") -> dict:
    """Pick one rate from ``grid`` by the stated rule (module docstring), scanning from the largest rate down.

    evaluate(lr) -> list of pilot rows, each a dict with "status" ("converged" means training loss < 0.01 reached
    within the budget; anything else, e.g. "max_steps" or "diverged", fails) and "test_loss" (held-out loss).
    Returns {"rule", "lr", "scanned": [{"lr", "feasible", "heldout_loss", "n", "n_converged"}, ...] in scan order,
    "largest_stable": first feasible rate, "heldout": best feasible rate (None if the scan could not decide it)}.
    """
    if rule not in LR_RULES:
        raise ValueError(f"unknown lr rule {rule!r}; choose one of {', '.join(LR_RULES)}")
    rates = sorted({float(x) for x in grid}, reverse=True)
    if not rates or any(not (math.isfinite(x) and x > 0) for x in rates):
        raise ValueError(f"the learning-rate grid must be non-empty and positive, got {list(grid)!r}")
    scanned = []
    for lr in rates:
        rows = list(evaluate(lr))
        if not rows:
            raise ValueError("evaluate(lr) returned no pilot runs")
        n_conv = sum(r["status"] == "converged" for r in rows)
        feasible = n_conv == len(rows)
        scanned.append({"lr": lr, "feasible": feasible, "n": len(rows), "n_converged": n_conv,
                        "heldout_loss": float(np.mean([r["test_loss"] for r in rows])) if feasible else math.nan})
        if feasible and rule == "largest_stable":
            break
        if not feasible and any(s["feasible"] for s in scanned[:-1]):
            break          # below a feasible rate, an infeasible one means the budget is now too short: stop
    ok = [s for s in scanned if s["feasible"]]
    if not ok:
        raise ValueError(f"no rate on the grid {rates} lets every pilot run reach training loss < "
                         f"{LOSS_THRESHOLD} within the step budget; extend the grid downward or raise the budget")
    largest = ok[0]["lr"]
    # the heldout choice is only decided if the scan went past the first feasible rate (rule "heldout")
    best = min(ok, key=lambda s: (s["heldout_loss"], -s["lr"]))["lr"] if rule == "heldout" else None
    return {"rule": rule, "lr": best if rule == "heldout" else largest, "largest_stable": largest,
            "heldout": best, "scanned": scanned, "grid": rates}
