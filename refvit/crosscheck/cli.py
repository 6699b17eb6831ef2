"""Command line: refvit crosscheck module:function [--grad module:function] [--step module:function]."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from .. import options
from ..io import atomic_write, check_output
from .cases import DTYPES, STEPS
from .runner import DEFAULT_TIMEOUT, crosscheck
from .setting import groups_help
from .settings import SETTINGS


def load_callable(ref: str) -> Callable:
    """"package.module:function" or "path/to/file.py:function" -> the function (the current folder is importable)."""
    mod_name, sep, attr = ref.rpartition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"expected module:function or file.py:function, got {ref!r}")
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.is_file():
            raise ValueError(f"no such file {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:   # a broken file is a usage error (exit 2), shown in one line
            raise ValueError(f"cannot load {path}: {type(e).__name__}: {e}") from e
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(mod_name)
        except Exception as e:   # ImportError, or anything the module raises while importing
            raise ValueError(f"cannot import {mod_name!r}: {type(e).__name__}: {e}") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{mod_name} has no function {attr!r}")
    return fn


EXIT_STATUSES = """exit status:
  0  every case passes (correctness and robustness)
  1  incorrect: a correctness case (ordinary scales) fails or raised
  2  usage error: an option, a case name, a module or function that cannot be imported
  3  correct but not robust: every correctness case passes, a robustness case (extreme margins and logits,
     where a literal log(1 + e^(-z)) or a softmax without the max shift overflows) fails"""


def cmd_crosscheck(args) -> int:
    """Exit status: ``Report.status`` (0 pass, 1 incorrect, 3 correct but not robust); 2 (through
    ``refvit.cli.main``) a usage or import error."""
    checked_setting(args.setting)
    if args.json:
        check_output(args.json)          # before the work, not after it
    report = crosscheck(load_callable(args.forward),
                        load_callable(args.grad) if args.grad else None,
                        load_callable(args.step) if args.step else None,
                        dtype=args.dtype, trainer=load_callable(args.trainer) if args.trainer else None,
                        train_w_O=args.train_w_O, cases=list(args.cases), steps=args.steps or STEPS,
                        timeout=args.timeout,
                        setting=args.setting)
    if args.json:
        text = report.to_json()
        atomic_write(args.json, lambda fh: fh.write(text.encode()))
    return report.status


def checked_setting(name: str) -> str:
    """``name`` if the checker has cases for that setting, else a ValueError naming the ones it has."""
    if name not in SETTINGS:
        raise ValueError(f"--setting {name}: the checker has cases for {' and '.join(sorted(SETTINGS))} only")
    return name


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the epilog (the exit statuses) kept as written."""


def add_subcommand(sub) -> None:
    p = sub.add_parser("crosscheck", help="check your implementation (forward, gradient, GD step) against refvit",
                       # the summary of the package docstring (the package is imported by now)
                       description=sys.modules[__package__].__doc__.split("\n\n")[0],
                       epilog=EXIT_STATUSES, formatter_class=_Formatter)
    p.add_argument("forward", help="your forward: module:function or file.py:function, "
                                   "forward(W_Q, W_K, W_V, w_O, X) -> f (n,); li2025: forward(W_Q, W_K, W_V, X, c_L)")
    options.add(p, "setting")
    p.add_argument("--grad", help="grad(W_Q, W_K, W_V, w_O, X, y) -> (loss, dW_Q, dW_K, dW_V, dw_O); li2025: "
                                  "grad(W_Q, W_K, W_V, X, y, c_L) -> (loss, dW_Q, dW_K, dW_V)")
    p.add_argument("--step", help="step(W_Q, W_K, W_V, w_O, X, y, lr) -> (W_Q, W_K, W_V, w_O), one GD step; li2025: "
                                  "step(W_Q, W_K, W_V, X, y, c_L, lr, optimizer, trained), one GD or SignGD step")
    p.add_argument("--dtype", default="float64", choices=DTYPES, help="dtype of the arrays passed to you "
                   "(li2025: float64 only)")
    p.add_argument("--train-w-O", dest="train_w_O", action="store_true",
                   help="your step trains w_O (default: frozen, docs/math.md §3); jiang2024 only")
    p.add_argument("--trainer", help="make_trainer(W_Q, W_K, W_V, w_O, X, y, lr) -> object with .step(k) and "
                                     ".params(); your own training loop, checked over the trajectory; li2025: "
                                     "make_trainer(W_Q, W_K, W_V, X, y, c_L, lr, optimizer, trained), GD, SignGD "
                                     "or Adam")
    p.add_argument("--cases", nargs="+", default=["all"], metavar="NAME",
                   help=f"case names or groups ({groups_help()})")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds allowed per call of your "
                   "functions")
    p.add_argument("--steps", type=options.positive_int, default=None,
                   help=f"trajectory length (default: {STEPS} steps of each case's optimizer)")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=cmd_crosscheck)
