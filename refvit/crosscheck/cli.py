"""Command line: refvit crosscheck module:function [--grad module:function] [--step module:function]."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from ..io import save_json
from .cases import DTYPES, STEPS
from .runner import crosscheck


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
        spec.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise ValueError(f"cannot import {mod_name!r}: {e}") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{mod_name} has no function {attr!r}")
    return fn


def cmd_crosscheck(args) -> int:
    report = crosscheck(load_callable(args.forward),
                        load_callable(args.grad) if args.grad else None,
                        load_callable(args.step) if args.step else None,
                        dtype=args.dtype, train_w_O=args.train_w_O, cases=args.cases, steps=args.steps)
    if args.json:
        save_json(args.json, report.to_dict())
    return 0 if report.passed else 1


def add_subcommand(sub) -> None:
    p = sub.add_parser("crosscheck", help="check your implementation (forward, gradient, GD step) against refvit",
                       # the summary of the package docstring (the package is imported by now)
                       description=sys.modules[__package__].__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("forward", help="your forward: module:function or file.py:function, "
                                   "forward(W_Q, W_K, W_V, w_O, X) -> f (n,)")
    p.add_argument("--grad", help="grad(W_Q, W_K, W_V, w_O, X, y) -> (loss, dW_Q, dW_K, dW_V, dw_O)")
    p.add_argument("--step", help="step(W_Q, W_K, W_V, w_O, X, y, lr) -> (W_Q, W_K, W_V, w_O), one GD step")
    p.add_argument("--dtype", default="float64", choices=DTYPES, help="dtype of the arrays passed to you")
    p.add_argument("--train-w-O", dest="train_w_O", action="store_true",
                   help="your step trains w_O (default: frozen, docs/math.md §3)")
    p.add_argument("--cases", default="all", choices=["all", "small", "authors"])
    p.add_argument("--steps", type=int, default=STEPS, help="GD trajectory length")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=cmd_crosscheck)
