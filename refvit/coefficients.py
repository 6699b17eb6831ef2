"""Signal and noise coefficients of one cell over training (PAPER §5.2): compute and save; ``refvit coefficients``.

    refvit coefficients train --N 20 --mu 80                          # train a Figure-1 cell, save, draw
    refvit coefficients train --setting dynamics --mu 30 --steps 500
    refvit coefficients weights W.npz                                 # decompose saved weights, save, draw
    refvit coefficients draw results/coefficients_figure1_N20_mu80.npz --out figures/c.png

"train" runs the cell under ``refvit.decompose.CoefficientTracker`` (tracked coefficients at every step) and also
recovers the final coefficients from W(0), W(t) by the Gram system; both and their agreement are saved.
"weights" reads an .npz with W_Q0, W_K0, W_V0, w_O0, W_Q, W_K, W_V, w_O, X, y, mu_plus, mu_minus (``train
--save-weights`` writes one) and saves the recovered decomposition only: no time series can be recovered from two
snapshots, so the figure then shows the final coefficients alone. Drawing is ``analysis.fig_coefficients.draw``,
which only reads a saved results file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .config import dynamics_setting, figure1_setting
from .data import make_dataset, streams
from .decompose import compare, recover, summaries, track_train
from .experiment import cell_key
from .init import init_params
from .io import load_npz, save_npz
from .model import Params

SETTINGS = {"figure1": figure1_setting, "dynamics": dynamics_setting}


# ---------------------------------------------------------------------------------------------------------------
# Compute and save
# ---------------------------------------------------------------------------------------------------------------

def _summary_json(**kw) -> np.ndarray:
    return np.array(json.dumps(kw, sort_keys=True, default=float))


def train_and_save(path, setting: str = "figure1", N: int | None = None, mu: float = 80.0, seed: int = 0,
                   steps: int | None = None, train_w_O: bool = False, backend: str = "span",
                   weights_path=None) -> Path:
    """Train one cell with the coefficient tracker and save its time series and final decompositions to ``path``."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {sorted(SETTINGS)}")
    data_cfg, model_cfg, train_cfg = SETTINGS[setting](mu_norm=mu)
    if N is not None:
        data_cfg = data_cfg.replace(N=N)
    changes = {"backend": backend, "train_w_O": train_w_O}
    if steps is not None:
        changes["steps"] = steps
    train_cfg = train_cfg.replace(**changes)
    rng = streams(seed, *cell_key(data_cfg.N, mu))
    data = make_dataset(data_cfg, rng.data, rng.test)
    p0 = init_params(model_cfg, data_cfg.d, rng.init)
    signals = (data.mu_plus, data.mu_minus)
    params, hist, tracker = track_train(p0, data.X, data.y, config=train_cfg, X_test=data.X_test,
                                        y_test=data.y_test, signals=signals)
    tracked = tracker.decomposition(signals, p0, params)
    recovered = recover(p0, params, data.X, signals)
    agreement = compare(tracked, recovered)
    h = tracker.history(signals)
    s = summaries(params, data.X, signals)
    meta = dict(setting=setting, N=data_cfg.N, mu_norm=mu, seed=seed, snr=data_cfg.snr,
                N_snr2=data_cfg.N * data_cfg.snr ** 2, steps=hist.steps, status=hist.status, train_w_O=train_w_O, backend=backend,
                train_loss=hist.final_train_loss, test_loss=hist.final_test_loss,
                residual_tracked=tracked.residual, residual_recovered=recovered.residual,
                tracked_vs_recovered=agreement, message=recovered.message)
    save_npz(path, summary=_summary_json(**meta), y=data.y, train_loss=hist["train_loss"],
             **{f"h_{k}": v for k, v in h.items()},
             **{f"s_{k}": v for k, v in s.items()},
             **tracked.to_arrays("tracked_"), **recovered.to_arrays("recovered_"))
    if weights_path is not None:
        save_npz(weights_path, **{f"{k}0": v for k, v in p0._asdict().items()}, **params._asdict(), X=data.X,
                 y=data.y, mu_plus=data.mu_plus, mu_minus=data.mu_minus)
    return Path(path)


def weights_and_save(weights_file, path) -> Path:
    """Recover the decomposition from a saved weights .npz (see module docstring) and save it to ``path``."""
    w = load_npz(weights_file)
    missing = [k for k in ("W_Q0", "W_K0", "W_V0", "w_O0", "W_Q", "W_K", "W_V", "w_O", "X", "y", "mu_plus",
                           "mu_minus") if k not in w]
    if missing:
        raise ValueError(f"{weights_file} lacks {missing}; write it with `train --save-weights`")
    p0 = Params(w["W_Q0"], w["W_K0"], w["W_V0"], w["w_O0"])
    p = Params(w["W_Q"], w["W_K"], w["W_V"], w["w_O"])
    signals = (w["mu_plus"], w["mu_minus"])
    recovered = recover(p0, p, w["X"], signals)
    s = summaries(p, w["X"], signals)
    meta = dict(setting=f"weights from {Path(weights_file).name}", N=int(w["X"].shape[0]),
                residual_recovered=recovered.residual, message=recovered.message)
    save_npz(path, summary=_summary_json(**meta), y=w["y"], **{f"s_{k}": v for k, v in s.items()},
             **recovered.to_arrays("recovered_"))
    return Path(path)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------

def _default_name(a) -> str:
    n = f"_N{a.N}" if a.N is not None else ""
    return f"coefficients_{a.setting}{n}_mu{a.mu:g}{'_wO' if a.train_w_O else ''}"


def _cmd(a) -> int:
    if a.mode == "train":
        name = _default_name(a)
        results = Path(a.results) / f"{name}.npz" if a.results_file is None else Path(a.results_file)
        weights = Path(a.results) / f"{name}_weights.npz" if a.save_weights else None
        train_and_save(results, a.setting, a.N, a.mu, a.seed, a.steps, a.train_w_O, a.backend, weights)
        print(f"wrote {results}" + (f" and {weights}" if weights else ""))
    elif a.mode == "weights":
        results = Path(a.results) / f"decomposed_{Path(a.file).stem}.npz"
        weights_and_save(a.file, results)
        print(f"wrote {results}")
    else:
        results = Path(a.file)
    if a.mode == "draw" or not a.no_draw:
        from analysis.fig_coefficients import draw
        out = a.out or str(Path(a.figures) / f"{results.stem}.png")
        print(f"wrote {draw(results, out)}")
    return 0


def _add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train", help="train a cell with the coefficient tracker, save, draw",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--setting", choices=sorted(SETTINGS), default="figure1", help="PAPER §7.1 or §7.2 settings")
    t.add_argument("--N", type=int, default=None, help="training samples (default: the setting's)")
    t.add_argument("--mu", type=float, default=80.0, help="signal norm ‖μ‖")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=None, help="maximum steps (default: the setting's)")
    t.add_argument("--train-w-O", dest="train_w_O", action="store_true", help="also train w_O (PAPER §5.2)")
    t.add_argument("--backend", default="span", choices=["span", "numpy", "numba", "auto"])
    t.add_argument("--save-weights", action="store_true", help="also save W(0), W(t) and the data (for `weights`)")
    t.add_argument("--results-file", default=None, help="results .npz (default: RESULTS/coefficients_<cell>.npz)")
    w = sub.add_parser("weights", help="decompose saved weights (no time series), save, draw",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    w.add_argument("file", help=".npz with W_Q0 … w_O0, W_Q … w_O, X, y, mu_plus, mu_minus")
    d = sub.add_parser("draw", help="draw from a saved results file only",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("file", help="results .npz written by `train` or `weights`")
    for q in (t, w, d):
        q.add_argument("--results", default="results", help="folder for results files")
        q.add_argument("--figures", default="figures", help="folder for figures")
        q.add_argument("--out", default=None, help="figure path (default: FIGURES/<results name>.png)")
        q.add_argument("--no-draw", action="store_true", help="save results only")


def add_subcommand(sub) -> None:
    """``refvit coefficients …`` (registered in refvit.cli.SUBCOMMAND_MODULES)."""
    p = sub.add_parser("coefficients", help="signal/noise coefficients of a cell over training (PAPER §5)",
                       description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    p.set_defaults(func=_cmd)
