"""Command line. ``refvit demo`` lives here; other subcommands live beside the code they drive.

Each module named in ``SUBCOMMAND_MODULES`` defines ``add_subcommand(sub)``, which adds its parser to the
``argparse`` sub-parsers and sets ``func`` (a function of the parsed args returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np

from .config import figure1_setting
from .experiment import cell_key, run_cell
from .io import save_json, save_npz

SUBCOMMAND_MODULES: tuple[str, ...] = ("refvit.sweep", "refvit.coefficients", "refvit.crosscheck",
                                       "refvit.golden", "refvit.studies")   # each adds one subcommand

DEMO_CELLS = (("benign", 20, 80.0), ("harmful", 4, 20.0))   # (name, N, ‖μ‖): either side of N·SNR² (PAPER §7.1)


def save_history(path, run) -> None:
    """One training run as .npz: per-step history arrays plus its tidy summary row as JSON text."""
    import json
    save_npz(path, step=run.history.step, summary=np.array(json.dumps(run.summary)),
             **{f"h_{k}": v for k, v in run.history.values.items()})


def cmd_demo(args) -> int:
    out = Path(args.results)
    rows = []
    for name, N, mu in DEMO_CELLS:
        data_cfg, model_cfg, train_cfg = figure1_setting(N=N, mu_norm=mu)
        run = run_cell(data_cfg, model_cfg, train_cfg.replace(backend=args.backend), seed=args.seed,
                       key=cell_key(N, mu))   # the same draw as repeat 0 of this cell in the sweep
        save_history(out / f"demo_{name}.npz", run)
        rows.append({"cell": name, **run.summary})
        s = run.summary
        print(f"{name:8s} N={N:3d} |mu|={mu:5.1f} N*SNR^2={s['N_snr2']:6.3f} (axis {s['N_snr_axis2']:7.1f})  "
              f"steps={s['steps']:4d} {s['status']:9s} train={s['train_loss']:.4f} test={s['test_loss']:.4f} "
              f"err={s['test_error']:.2f}  {s['seconds']:.2f}s")
    save_json(out / "demo_summary.json", rows)
    from analysis import fig_demo
    fig_demo.main([str(out), "--out", str(Path(args.figures) / "demo.png")])
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refvit", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train one benign and one harmful Figure-1 cell and plot them",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--seed", type=int, default=0, help="base seed of the data and init streams")
    d.add_argument("--backend", default="auto", choices=["auto", "numpy", "numba", "span"])
    d.add_argument("--results", default="results", help="folder for saved runs")
    d.add_argument("--figures", default="figures", help="folder for figures")
    d.set_defaults(func=cmd_demo)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_subcommand(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:   # bad settings: say what to change, no traceback
        print(f"refvit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
