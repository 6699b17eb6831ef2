"""Command line: ``refvit demo | reproduce | sweep | fit | heatmap | train | study | coefficients | crosscheck | golden |
audit | math``.

Every subcommand computes into RESULTS (default ``results/``, which git ignores) and draws from the saved results
into FIGURES (default ``results/figures/``); the figures committed in ``figures/`` are made with
``--figures figures``. Bad settings and unreadable files end with one line ``refvit: error: …`` and exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from . import audit, golden, mathdoc, options, pipelines
from .config import OPTIMIZERS
from .crosscheck import add_subcommand as add_crosscheck
from .io import one_line_errors
from .jiang2024 import boundary
from .jiang2024.coefficients import SETTINGS as COEFFICIENT_CELLS
from .jiang2024.studies import LR_RULES, LR_SCALINGS
from .jiang2024.studies.common import PRESETS as STUDY_PRESETS
from .jiang2024.sweep import PRESETS

SETUP = ("seed", "backend", "coords")                    # how a training command trains
PARALLEL = ("workers", "no_progress")                     # how a long command runs its runs


def cmd_demo(a) -> int:
    pipelines.demo(a.results, a.figures, seed=a.seed, backend=a.backend, coords=a.coords)
    return 0


def cmd_reproduce(a) -> int:
    pipelines.reproduce(a.preset, a.results, a.figures, seed=a.seed, backend=a.backend, coords=a.coords,
                        workers=a.workers, progress=not a.no_progress, n_boot=a.n_boot, dynamics=not a.no_dynamics)
    return 0


def cmd_sweep(a) -> int:
    grid = (a.Ns, a.mu_norms, a.repeats)
    if any(v is not None for v in grid) and None in grid[:2]:
        raise ValueError("a grid needs both --Ns and --mu-norms (and optionally --repeats)")
    if a.repeats is not None and a.Ns is None:
        raise ValueError("--repeats belongs to a grid: give --Ns and --mu-norms too")
    grid = (a.Ns, a.mu_norms, a.repeats or 1) if a.Ns is not None else None
    pipelines.sweep(a.out, a.preset, a.spec, grid, seed=a.seed, backend=a.backend, coords=a.coords,
                    workers=a.workers, progress=not a.no_progress)
    return 0


def cmd_heatmap(a) -> int:
    pipelines.heatmap(a.sweep_dir, a.figures, a.figure, snr=a.snr)
    return 0


def cmd_train(a) -> int:
    pipelines.train(a.out, a.setting, N=a.N, mu=a.mu, lr=a.lr, steps=a.steps, optimizer=a.optimizer, seed=a.seed,
                    backend=a.backend, coords=a.coords)
    return 0


def cmd_study(a) -> int:
    for kind in (pipelines.STUDIES if a.study == "all" else (a.study,)):
        pipelines.run_study(kind, a.preset, a.results, a.figures, seed=a.seed, workers=a.workers,
                            progress=not a.no_progress, lr_rule=a.lr_rule, figures_only=a.figures_only,
                            lr_scaling=a.lr_scaling)
    return 0


def cmd_coefficients(a) -> int:
    train = {} if a.mode != "train" else dict(
        results_file=a.results_file, save_weights=a.save_weights, setting=a.cell, N=a.N, mu=a.mu, seed=a.seed,
        steps=a.steps, train_w_O=a.train_w_O, coords=a.coords, backend=a.backend)
    pipelines.coefficients(a.mode, file=getattr(a, "file", None), results=getattr(a, "results", "results"),
                           figures=a.figures, out=a.figure, draw=not getattr(a, "no_draw", False), **train)
    return 0


def _command(sub, name: str, help: str, description: str, *shared: str):
    """A subcommand with its one-line help, its description, and the shared options ``shared``."""
    p = sub.add_parser(name, help=help, description=description, formatter_class=options.Formatter)
    options.add(p, *shared)
    return p


def _cell_options(p) -> None:
    """N, ‖μ‖ and the number of steps of one trained cell (``train``, ``coefficients train``)."""
    p.add_argument("--N", type=options.positive_int, default=None, help="training samples (default: the cell's)")
    p.add_argument("--mu", type=float, default=None, help="signal norm ‖μ‖ (ρ in the third setting; default: the "
                                                          "cell's)")
    p.add_argument("--steps", type=options.positive_int, default=None,
                   help="maximum number of updates (default: the cell's)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refvit", description=__doc__, formatter_class=options.Formatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = _command(sub, "demo", "train one benign and one harmful Figure-1 cell and plot them",
                 "Train one benign and one harmful cell of Figure 1 (docs/math.md §10.1), save their histories into "
                 "RESULTS and draw FIGURES/demo.png.", *SETUP, "results", "figures")
    d.set_defaults(func=cmd_demo)

    r = _command(sub, "reproduce", "run the Figure-1 sweep and Figure-3 dynamics, fit the boundary, draw",
                 "Run a preset's experiments into RESULTS (resumable: rerun to finish a killed run) and draw the "
                 "figures and a text summary into FIGURES.", *SETUP, "results", "figures", *PARALLEL, "n_boot")
    r.add_argument("--preset", choices=PRESETS, default="quick",
                   help="quick: 120-run coarse grid + the 20 dynamics runs; paper: the full 10,000-run grid "
                        "(docs/math.md §10.1) + the same dynamics")
    r.add_argument("--no-dynamics", action="store_true", help="skip the Figure-3 dynamics runs")
    r.set_defaults(func=cmd_reproduce)

    w = _command(sub, "sweep", "run a Figure-1 sweep (a preset, a saved sweep.json, or your grid) into a folder",
                 "Run a sweep into OUT (resumable: rerun to finish a killed run; runs already saved are verified "
                 "and skipped), no figures: `refvit fit OUT` fits its boundary, `refvit heatmap OUT` draws it. "
                 "Your grid (--Ns, --mu-norms, --repeats) trains with the presets' Figure-1 setting and protocol.",
                 *SETUP, *PARALLEL)
    w.add_argument("out", metavar="OUT", help="sweep folder")
    w.add_argument("--preset", choices=PRESETS, default=None, help="a preset grid (default: quick, when neither "
                                                                   "--spec nor --Ns is given)")
    w.add_argument("--spec", default=None, help="a sweep.json to run (its own seed, backend and coordinates)")
    w.add_argument("--Ns", type=options.comma_list(int, "whole numbers"), default=None,
                   help="training-set sizes of your grid, e.g. 10,20 (even: balanced labels)")
    w.add_argument("--mu-norms", dest="mu_norms", type=options.comma_list(int, "whole numbers"), default=None,
                   help="signal norms ‖μ‖ of your grid, whole numbers, e.g. 10,20,40")
    w.add_argument("--repeats", type=options.positive_int, default=None,
                   help="runs per cell of your grid (default: 1)")
    w.set_defaults(func=cmd_sweep)

    f = _command(sub, "fit", "fit the boundary N·SNR^a = C to a saved sweep folder (docs/math.md §11)",
                 "Fit N·SNR^a = C to the verified run files of a sweep folder (made by `refvit sweep` or `refvit "
                 "reproduce`); print it and write SWEEP_DIR/fit.json.")
    boundary.add_arguments(f)
    f.set_defaults(func=boundary.cmd_fit)

    h = _command(sub, "heatmap", "draw the Figure-1 heatmaps of any saved sweep folder",
                 "Draw test loss, its cut at 0.2 and the fraction benign over (SNR, N) from the verified run files of "
                 "a sweep folder, with the fitted boundary when `refvit fit` has written SWEEP_DIR/fit.json.",
                 "figures", "figure")
    h.add_argument("sweep_dir", metavar="SWEEP_DIR",
                   help="folder with sweep.json and runs/ (made by refvit sweep or refvit reproduce)")
    h.add_argument("--snr", choices=("axis", "theory"), default="axis",
                   help="x axis: the authors' SNR (σ = 0.2) or the theory's (σ_p of the noise token)")
    h.set_defaults(func=cmd_heatmap)

    t = _command(sub, "train", "train one cell of any setting, save its history, draw it over time",
                 "Train one cell of a setting into OUT: OUT/history.npz (its per-step history; columns in "
                 "docs/usage.md) and OUT/training.png (attention, values, coefficients and losses over the steps). "
                 "The cell draws the data and init of repeat 0 of the same cell in the setting's sweeps and studies.",
                 "setting", *SETUP)
    t.add_argument("out", metavar="OUT", help="folder for history.npz and training.png")
    _cell_options(t)
    t.add_argument("--lr", type=float, default=None, help="step size η (default: the setting's for the optimizer)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="gd", help="update rule (docs/math.md (6.1)-(6.3))")
    t.set_defaults(func=cmd_train)

    s = _command(sub, "study", "optimizer (GD/SignGD/Adam), label-noise, sharpness and phase studies; signgd: the "
                 "second setting (Li et al.); single-head: the third (Magen et al.)",
                 "Run a study preset into RESULTS/study_<name>_<preset>/ (resumable: rerun to finish a killed run), "
                 "then draw its figures and a text summary into FIGURES.", "seed", "results", "figures", *PARALLEL)
    s.add_argument("study", choices=(*pipelines.STUDIES, "all"), help="which study ('all': every one in turn)")
    s.add_argument("--preset", choices=STUDY_PRESETS, default="quick",
                   help="quick: coarse grids, a few minutes on 2 cores; full: larger grids, more seeds")
    s.add_argument("--lr-rule", choices=LR_RULES, default="heldout",
                   help="optimizer study: how each optimizer's rate is picked from the grid "
                        "(refvit.jiang2024.studies.lr_rule)")
    s.add_argument("--lr-scaling", choices=LR_SCALINGS, default="inverse_d",
                   help="sharpness study: the rate at each d (docs/math.md (12.1)); a rule whose first step is "
                        "unstable on the preset's grid is refused before any run (docs/math.md (12.3))")
    s.add_argument("--figures-only", action="store_true", help="only redraw figures/summaries from saved results")
    s.set_defaults(func=cmd_study)

    c = _command(sub, "coefficients", "signal/noise coefficients of a cell over training (docs/math.md §7)",
                 "Train a cell with the coefficient tracker (train), decompose saved weights (weights), or draw a "
                 "saved results file (draw).")
    modes = c.add_subparsers(dest="mode", required=True, metavar="MODE")
    ct = _command(modes, "train", "train a cell with the coefficient tracker, save, draw",
                  "Train one cell of the first setting with the coefficient tracker, recover the final coefficients "
                  "from the weights, save both to RESULTS/coefficients_<cell>.npz and draw them.",
                  *SETUP, "results", "figures", "figure")
    ct.add_argument("--cell", choices=sorted(COEFFICIENT_CELLS), default="figure1",
                    help="the first setting's Figure-1 cell (docs/math.md §10.1) or its dynamics cell (§10.2)")
    _cell_options(ct)
    ct.add_argument("--train-w-O", dest="train_w_O", action="store_true", help="also train w_O (docs/math.md §7.3)")
    ct.add_argument("--save-weights", action="store_true", help="also save W(0), W(t) and the data (for `weights`)")
    ct.add_argument("--results-file", default=None, help="results .npz (default: RESULTS/coefficients_<cell>.npz)")
    cw = _command(modes, "weights", "decompose saved weights (no time series), save, draw",
                  "Recover the coefficients from saved weights W(0), W(t) and the data; save them to "
                  "RESULTS/decomposed_<name>.npz and draw them.", "results", "figures", "figure")
    cw.add_argument("file", help=".npz with W_Q0 … w_O0, W_Q … w_O, X, y, mu_plus, mu_minus")
    cd = _command(modes, "draw", "draw from a saved results file only",
                  "Draw the coefficient figure from a results file written by `train` or `weights`.",
                  "figures", "figure")
    cd.add_argument("file", help="results .npz written by `train` or `weights`")
    for q in (ct, cw):
        q.add_argument("--no-draw", action="store_true", help="save results only")
    c.set_defaults(func=cmd_coefficients)

    add_crosscheck(sub)
    golden.add_subcommand(sub)
    audit.add_subcommand(sub)
    mathdoc.add_subcommand(sub)
    for q in sub.choices.values():      # one help layout for every command, those defined elsewhere too
        q.formatter_class = options.Formatter
    return p


@one_line_errors   # bad settings and unusable files: one line `refvit: error: …`, status 2, no traceback
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
