"""Signal and noise coefficients of one cell over training (docs/math.md (7.3)–(7.7)): compute and save;
``refvit coefficients``.

    refvit coefficients train --N 20 --mu 80                          # train a Figure-1 cell, save, draw
    refvit coefficients train --cell dynamics --mu 30 --steps 500
    refvit coefficients weights W.npz                                 # decompose saved weights, save, draw
    refvit coefficients draw results/coefficients_figure1_N20_mu80.npz --out figures/c.png

"train" runs the cell under ``refvit.jiang2024.tracking.CoefficientTracker`` (tracked coefficients at every step) and also
recovers the final coefficients from W(0), W(t) by the Gram system; both and their agreement are saved.
"weights" reads an .npz with W_Q0, W_K0, W_V0, w_O0, W_Q, W_K, W_V, w_O, X, y, mu_plus, mu_minus (``train
--save-weights`` writes one) and saves the recovered decomposition only: no time series can be recovered from two
snapshots, so the figure then shows the final coefficients alone. The command line is in ``refvit.pipelines``;
drawing is ``refvit.analysis.fig_coefficients.draw``, which only reads a saved results file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .config import dynamics_setting, figure1_setting
from .decompose import compare, recover, summaries
from .experiment import cell_key, run_cell
from ..io import FileProblem, load_npz, save_npz
from .model import Params

SETTINGS = {"figure1": figure1_setting, "dynamics": dynamics_setting}


# ---------------------------------------------------------------------------------------------------------------
# Compute and save
# ---------------------------------------------------------------------------------------------------------------

def _summary_json(**kw) -> np.ndarray:
    return np.array(json.dumps(kw, sort_keys=True, default=float))


def train_and_save(path, setting: str = "figure1", N: int | None = None, mu: float = 80.0, seed: int = 0,
                   steps: int | None = None, train_w_O: bool = False, coords: str = "span",
                   backend: str = "numpy", weights_path=None) -> Path:
    """Train one cell with the coefficient tracker and save its time series and final decompositions to ``path``."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {sorted(SETTINGS)}")
    data_cfg, model_cfg, train_cfg = SETTINGS[setting](mu_norm=mu)
    if N is not None:
        data_cfg = data_cfg.replace(N=N)
    changes = {"coords": coords, "backend": backend, "train_w_O": train_w_O}
    if steps is not None:
        changes["steps"] = steps
    train_cfg = train_cfg.replace(**changes)
    run = run_cell(data_cfg, model_cfg, train_cfg, seed=seed, key=cell_key(data_cfg.N, mu), track=True)
    data, p0, params, hist, tracker = run.data, run.params0, run.params, run.history, run.tracker
    signals = (data.mu_plus, data.mu_minus)
    tracked = tracker.decomposition(signals, p0, params)
    recovered = recover(p0, params, data.X, signals)
    agreement = compare(tracked, recovered)
    h = tracker.history(signals)
    s = summaries(params, data.X, signals)
    meta = dict(setting=setting, N=data_cfg.N, mu_norm=mu, seed=seed, snr=data_cfg.snr, N_snr2=data_cfg.n_snr2,
                steps=hist.steps, status=hist.status, train_w_O=train_w_O, coords=coords, backend=backend,
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
        raise FileProblem(weights_file, f"lacks the array(s) {missing}: not a weights file; write one with "
                                        "`refvit coefficients train --save-weights`")
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


if __name__ == "__main__":    # a library module: say which command runs it rather than exit 0 having done nothing
    raise SystemExit("refvit.jiang2024.coefficients is a library module; run it with "
                     "`refvit coefficients train|weights|draw …` "
                     "(or `python -m refvit.cli …`); `refvit --help` lists the commands")
