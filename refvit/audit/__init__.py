"""Equation-by-equation audit of docs/math.md: every computable claim, its two sides evaluated independently.

``run()`` returns a ``Report`` with one ``Row`` per claim: the equation number of docs/math.md (tag ``(S.k)``), a
one-line statement, the code that implements it (``module:function``), the independent check, the worst error over
the instances, the tolerance and its reason, and pass/fail.

Independence. Each check calls the implementation under audit through its module attribute at call time
(``model.backward``, ``model.attention_backward``, ``formulas.gradients``, ...), so a test can monkeypatch one of
them and see which rows turn red. The *independent* side never calls those: it is this module's own forward pass
(``ref_forward``: einsum products and ``scipy.special.softmax``), its own loss (``np.logaddexp``), central finite
differences of that forward (``refvit.gradcheck``), closed forms, a second code path (numba kernels, span
coordinates, the Gram recovery) or an invariant.

Instances (all float64, from explicit ``np.random.default_rng(seed)``): small random shapes including M = 1, odd N,
d_h ≠ d_v, saturated attention (large logits) and large margins; and the paper's two settings
(``figure1_setting``, ``dynamics_setting``) with N = 4, at their initialisation and after a few GD steps.
The §13 family (the second setting, ``checks_li``) builds its own instances (``li_core.li_instances``), and so does
the §16 family (the third setting, ``checks_magen``, ``magen_core.magen_instances``).

Shapes follow ``refvit.jiang2024.model``: X (n, M, d), y (n,), W_Q, W_K (d, d_h), W_V (d, d_v), w_O (d_v,).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .. import io
from .checks_grad import check_backward_steps, check_loss_gradients
from .checks_li import check_li
from .checks_magen import check_magen
from .checks_model import check_data, check_forward, check_loss
from .checks_span import check_span
from .checks_structure import check_structure, check_training
from .core import Report, Row, paper_instances, small_instances

__all__ = ["FAMILIES", "Report", "Row", "add_subcommand", "instances", "main", "run", "write_json"]

# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------

FAMILIES = (
    ("§1 data and SNR", check_data),
    ("§2 forward", check_forward),
    ("§3 loss, softmax shift, init", check_loss),
    ("§4.1 backward line by line", check_backward_steps),
    ("§4.2-4.3 gradients of L_S", check_loss_gradients),
    ("§5 structural facts", check_structure),
    ("§6 training updates and stopping", check_training),
    ("§7-8 span, coefficients, span coordinates", check_span),
    ("§13 the second setting (Li et al.)", check_li),
    ("§16 the third setting (Magen et al.)", check_magen),
)


def instances() -> dict:
    """{"small": [...], "paper": [...], "all": [...]} of ``Instance``."""
    small, paper = small_instances(), paper_instances()
    return {"small": small, "paper": paper, "all": small + paper}


def run(progress: bool = True) -> Report:
    """Audit every computable claim of docs/math.md. Returns a ``Report``; prints one line per family to stderr."""
    t0 = time.perf_counter()
    ctx = instances()
    report = Report()
    for name, fn in FAMILIES:
        t1 = time.perf_counter()
        with np.errstate(over="ignore"):        # formulas' naive ℓ' overflows harmlessly at large margins
            rows = fn(ctx)
        report.rows.extend(rows)
        if progress:
            bad = sum(not r.ok for r in rows)
            print(f"audit: {name}: {len(rows)} rows, {bad} failed ({time.perf_counter() - t1:.1f} s)",
                  file=sys.stderr, flush=True)
    report.seconds = time.perf_counter() - t0
    return report


def write_json(report: Report, path) -> None:
    """Write the report as strict JSON, atomically (``refvit.io.save_json`` would allow NaN)."""
    text = report.to_json()
    io.atomic_write(path, lambda fh: fh.write(text.encode()))


def cmd_audit(args) -> int:
    if args.json:
        io.check_output(args.json)       # before the work, not after it
    report = run(progress=not args.no_progress)
    print(report.format())
    if args.json:
        write_json(report, args.json)
    return 0 if report.passed else 1


def add_subcommand(sub) -> None:
    """Add ``audit`` to an argparse subparsers object; its ``func`` returns 0 if every claim holds, else 1."""
    p = sub.add_parser("audit", help="check every equation of docs/math.md, each side independently",
                       description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_audit)


def main(argv=None) -> int:
    """``python -m refvit.audit [--json PATH] [--no-progress]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="refvit")
    add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


