"""Command line: ``refvit demo | reproduce | sweep | study | coefficients | crosscheck | golden | audit``.

Every subcommand computes into RESULTS (default ``results/``, which git ignores) and draws from the saved results
into FIGURES (default ``results/figures/``); the figures committed in ``figures/`` are made with
``--figures figures``. Bad settings and unreadable files end with one line ``refvit: error: …`` and exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from . import audit, golden, mathdoc, pipelines
from .config import BACKENDS, COORDS
from .crosscheck import add_subcommand as add_crosscheck
from .io import one_line_errors
from .jiang2024 import boundary
from .jiang2024.coefficients import SETTINGS
from .jiang2024.studies import LR_RULES, LR_SCALINGS
from .jiang2024.studies.common import PRESETS as STUDY_PRESETS
from .jiang2024.sweep import PRESETS

FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number >= 1, got 0")
    return value


def _compute_options(p, backend_default, coords_default) -> None:
    """The options that say how to train: attention core, coordinates, seed, results folder."""
    p.add_argument("--seed", type=_non_negative_int, default=0, help="base seed of every random stream")
    p.add_argument("--backend", default=backend_default, choices=[*BACKENDS, "span"],
                   help="attention core (numba if usable for 'auto'); 'span' is short for --coords span")
    p.add_argument("--coords", default=coords_default, choices=COORDS,
                   help="train dense weights, or exact token coordinates (GD only)")
    p.add_argument("--results", default="results", help="folder for saved runs")
    p.add_argument("--figures", default="results/figures", help="folder for figures and summaries")


def _backend_coords(args) -> tuple[str | None, str]:
    if args.backend == "span":
        return None, "span"
    return args.backend, args.coords


def _parallel_options(p) -> None:
    p.add_argument("--workers", type=_non_negative_int, default=None,
                   help="worker processes (default: one per core; 0: serial)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_demo(a) -> int:
    backend, coords = _backend_coords(a)
    pipelines.demo(a.results, a.figures, seed=a.seed, backend=backend or "auto", coords=coords)
    return 0


def cmd_reproduce(a) -> int:
    backend, coords = _backend_coords(a)
    pipelines.reproduce(a.preset, a.results, a.figures, seed=a.seed, backend=backend, coords=coords,
                        workers=a.workers, progress=not a.no_progress, n_boot=a.n_boot, dynamics=not a.no_dynamics)
    return 0


def cmd_sweep(a) -> int:
    backend, coords = _backend_coords(a)
    pipelines.sweep(a.out, a.preset, a.spec, seed=a.seed, backend=backend, coords=coords, workers=a.workers,
                    progress=not a.no_progress)
    return 0


def cmd_study(a) -> int:
    for kind in (pipelines.STUDIES if a.study == "all" else (a.study,)):
        pipelines.run_study(kind, a.preset, a.results, a.figures, seed=a.seed, workers=a.workers,
                            progress=not a.no_progress, lr_rule=a.lr_rule, figures_only=a.figures_only,
                            lr_scaling=a.lr_scaling)
    return 0


def cmd_coefficients(a) -> int:
    backend, coords = _backend_coords(a) if a.mode == "train" else (None, "span")
    pipelines.coefficients(a.mode, file=getattr(a, "file", None), results=a.results, figures=a.figures, out=a.out,
                           draw=not a.no_draw, **({} if a.mode != "train" else dict(
                               results_file=a.results_file, save_weights=a.save_weights, setting=a.setting, N=a.N,
                               mu=a.mu, seed=a.seed, steps=a.steps, train_w_O=a.train_w_O, coords=coords,
                               backend=backend or "numpy")))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refvit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train one benign and one harmful Figure-1 cell and plot them",
                       formatter_class=FORMATTER)
    _compute_options(d, "auto", "dense")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("reproduce", help="run the Figure-1 sweep and Figure-3 dynamics, fit the boundary, draw",
                       formatter_class=FORMATTER,
                       description="Run a preset's experiments into RESULTS (resumable: rerun to finish a killed "
                                   "run) and draw the figures and a text summary into FIGURES.")
    r.add_argument("--preset", choices=PRESETS, default="quick",
                   help="quick: 120-run coarse grid + the 20 dynamics runs; paper: the full 10,000-run grid "
                        "(docs/math.md §10.1) + the same dynamics")
    _compute_options(r, None, "span")
    _parallel_options(r)
    r.add_argument("--n-boot", type=_non_negative_int, default=None,
                   help="bootstrap resamples of the fit (default 200 quick / 1000 paper; 0: no intervals, and the "
                        "summary then states that it has none)")
    r.add_argument("--no-dynamics", action="store_true", help="skip the Figure-3 dynamics runs")
    r.set_defaults(func=cmd_reproduce)

    s = sub.add_parser("study", help="optimizer (GD/SignGD/Adam), label-noise, sharpness and phase studies; signgd: the "
                       "second setting (Li et al.); single-head: the third (Magen et al.)",
                       formatter_class=FORMATTER,
                       description="Run a study preset into RESULTS/study_<name>_<preset>/ (resumable: rerun to "
                                   "finish a killed run), then draw its figures and a text summary into FIGURES.")
    s.add_argument("study", choices=(*pipelines.STUDIES, "all"))
    s.add_argument("--preset", choices=STUDY_PRESETS, default="quick",
                   help="quick: coarse grids, a few minutes on 2 cores; full: larger grids, more seeds")
    s.add_argument("--seed", type=_non_negative_int, default=0, help="base seed of every random stream")
    s.add_argument("--lr-rule", choices=LR_RULES, default="heldout",
                   help="optimizer study: how each optimizer's rate is picked from the grid (refvit.jiang2024.studies.lr_rule)")
    s.add_argument("--lr-scaling", choices=LR_SCALINGS, default="inverse_d",
                   help="sharpness study: the rate at each d (docs/math.md (12.1)); a rule whose first step is "
                        "unstable on the preset's grid is refused before any run (docs/math.md (12.3))")
    s.add_argument("--results", default="results", help="folder for saved runs")
    s.add_argument("--figures", default="results/figures", help="folder for figures and summaries")
    s.add_argument("--figures-only", action="store_true", help="only redraw figures/summaries from saved results")
    _parallel_options(s)
    s.set_defaults(func=cmd_study)

    w = sub.add_parser("sweep", help="run one Figure-1 sweep (a preset or a saved sweep.json) into a folder",
                       formatter_class=FORMATTER, description="Run a sweep into OUT (resumable), no figures.")
    w.add_argument("out", help="sweep folder")
    w.add_argument("--preset", choices=PRESETS, default="quick")
    w.add_argument("--spec", default=None, help="a sweep.json to run instead of a preset")
    _compute_options(w, None, "span")
    _parallel_options(w)
    w.set_defaults(func=cmd_sweep)

    f = sub.add_parser("fit", help="fit the boundary N·SNR^a = C to a saved sweep folder (docs/math.md §11)",
                       formatter_class=FORMATTER,
                       description="Fit N·SNR^a = C to the verified run files of a sweep folder (made by `refvit sweep` "
                                   "or `refvit reproduce`); print it and write SWEEP_DIR/fit.json.")
    boundary.add_arguments(f)
    f.set_defaults(func=boundary.cmd_fit)

    c = sub.add_parser("coefficients", help="signal/noise coefficients of a cell over training (docs/math.md §7)",
                       description="Train a cell with the coefficient tracker (train), decompose saved weights "
                                   "(weights), or draw a saved results file (draw).")
    modes = c.add_subparsers(dest="mode", required=True)
    t = modes.add_parser("train", help="train a cell with the coefficient tracker, save, draw", formatter_class=FORMATTER)
    t.add_argument("--setting", choices=sorted(SETTINGS), default="figure1",
                   help="the settings of docs/math.md §10.1 or §10.2")
    t.add_argument("--N", type=_positive_int, default=None, help="training samples (default: the setting's)")
    t.add_argument("--mu", type=float, default=80.0, help="signal norm ‖μ‖")
    t.add_argument("--steps", type=_positive_int, default=None, help="maximum steps (default: the setting's)")
    t.add_argument("--train-w-O", dest="train_w_O", action="store_true", help="also train w_O (docs/math.md §7.3)")
    t.add_argument("--save-weights", action="store_true", help="also save W(0), W(t) and the data (for `weights`)")
    t.add_argument("--results-file", default=None, help="results .npz (default: RESULTS/coefficients_<cell>.npz)")
    _compute_options(t, "numpy", "span")
    w = modes.add_parser("weights", help="decompose saved weights (no time series), save, draw",
                         formatter_class=FORMATTER)
    w.add_argument("file", help=".npz with W_Q0 … w_O0, W_Q … w_O, X, y, mu_plus, mu_minus")
    dr = modes.add_parser("draw", help="draw from a saved results file only", formatter_class=FORMATTER)
    dr.add_argument("file", help="results .npz written by `train` or `weights`")
    for q in (w, dr):
        q.add_argument("--results", default="results", help="folder for results files")
        q.add_argument("--figures", default="results/figures", help="folder for figures")
    for q in (t, w, dr):
        q.add_argument("--out", default=None, help="figure path (default: FIGURES/<results name>.png)")
        q.add_argument("--no-draw", action="store_true", help="save results only")
    c.set_defaults(func=cmd_coefficients)

    add_crosscheck(sub)
    golden.add_subcommand(sub)
    audit.add_subcommand(sub)
    mathdoc.add_subcommand(sub)
    return p


@one_line_errors   # bad settings and unusable files: one line `refvit: error: …`, status 2, no traceback
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
