"""Signal and noise coefficients over training (PAPER §5.2): γ₊, γ₋, the distribution of y_iρ_i, attention.

    python -m analysis.fig_coefficients train --N 20 --mu 80            # train a Figure-1 cell, save, draw
    python -m analysis.fig_coefficients train --setting dynamics --mu 30 --steps 500
    python -m analysis.fig_coefficients weights W.npz                   # decompose saved weights, save, draw
    python -m analysis.fig_coefficients draw results/coefficients_figure1_N20_mu80.npz --out figures/c.png
    refvit coefficients train --N 20 --mu 80                            # the same, as a refvit subcommand

"train" runs the cell under ``refvit.decompose.CoefficientTracker`` (tracked coefficients at every step) and also
recovers the final coefficients from W(0), W(t) by the Gram system; both and their agreement are saved.
"weights" reads an .npz with W_Q0, W_K0, W_V0, w_O0, W_Q, W_K, W_V, w_O, X, y, mu_plus, mu_minus (``train
--save-weights`` writes one) and saves the recovered decomposition only: no time series can be recovered from two
snapshots, so the figure then shows the final coefficients alone. "draw" only reads a saved results file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from refvit.config import dynamics_setting, figure1_setting
from refvit.data import make_dataset, streams
from refvit.decompose import compare, recover, summaries, track_train
from refvit.init import init_params
from refvit.io import load_npz, save_npz
from refvit.model import Params

SETTINGS = {"figure1": figure1_setting, "dynamics": dynamics_setting}


# ---------------------------------------------------------------------------------------------------------------
# Compute and save (the only part that trains)
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
    rng = streams(seed, data_cfg.N, int(round(mu * 1000)))
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
# Draw (reads a saved results file only)
# ---------------------------------------------------------------------------------------------------------------

def draw(results_file, out) -> Path:
    """Draw the coefficient figure from a results file written by ``train_and_save`` or ``weights_and_save``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = load_npz(results_file)
    meta = json.loads(str(r["summary"]))
    y = r["y"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    ax = axes.ravel()
    final_rho = y * r["recovered_rho"]
    if "h_gamma_plus" in r:
        t = np.arange(r["h_gamma_plus"].shape[0])
        ax[0].plot(t, r["h_gamma_plus"], label="γ₊ (tracked)")
        ax[0].plot(t, -r["h_gamma_minus"], label="−γ₋ (tracked)")
        ax[0].plot(t[-1], r["recovered_gamma_plus"], "kx", label="recovered from W(t)")
        ax[0].plot(t[-1], -r["recovered_gamma_minus"], "kx")
        y_rho = y * r["h_rho"]                                            # (T, N)
        ax[1].plot(t, y_rho, color="C2", lw=0.6, alpha=0.5)
        ax[1].plot(t, np.median(y_rho, axis=1), color="k", lw=2, label="median over samples")
        ax[1].set_title("y_i ρ_i per training sample (tracked)")
        abar = r["h_abar"]                                                 # (T, N, M)
        for j, (name, c) in enumerate((("signal token", "C0"), ("noise token", "C3"))):
            m, sd = abar[:, :, j].mean(axis=1), abar[:, :, j].std(axis=1)
            ax[3].plot(t, m, color=c, label=f"ā on {name} (mean ± std over samples)")
            ax[3].fill_between(t, m - sd, m + sd, color=c, alpha=0.2)
        ax[3].axhline(1 / abar.shape[2], color="grey", ls=":", lw=0.8, label="uniform 1/M")
        ax[3].set_ylim(0, 1)
        Z2 = r["h_Z2"]                                                     # (T, N, 2, 2)
        for (a, b), lab in (((0, 0), "μᵀWμ"), ((0, 1), "μᵀWξ_i"), ((1, 0), "ξ_iᵀWμ"), ((1, 1), "ξ_iᵀWξ_i")):
            ax[4].plot(t, Z2[:, :, a, b].mean(axis=1), label=f"{lab} (mean over i)")
        ax[4].set_title("attention logits between token types, W = W_Q W_Kᵀ")
        ax[5].semilogy(np.arange(r["train_loss"].size), r["train_loss"], label="train loss")
        ax[5].axhline(meta["test_loss"], color="C3", ls="--", label=f"test loss at the end {meta['test_loss']:.3f}")
        for a in ax[[0, 1, 3, 4, 5]]:
            a.set_xlabel("step t")
    else:
        for a in ax[[0, 1, 3, 4, 5]]:
            a.text(0.5, 0.5, "no time series:\ndecomposed from two weight snapshots", ha="center", va="center",
                   transform=a.transAxes)
        ax[0].bar(["γ₊", "−γ₋"], [r["recovered_gamma_plus"], -r["recovered_gamma_minus"]])
    ax[0].set_title("signal coefficients γ₊, −γ₋ (PAPER §5.2)")
    finite = final_rho[np.isfinite(final_rho)]
    ax[2].hist(finite, bins=max(5, y.size // 2), color="C2", alpha=0.7, label="y_i ρ_i")
    hi = 3 * max(np.abs(finite).max(initial=0.0), 1e-300)
    for g, lab, c in ((r["recovered_gamma_plus"], "γ₊", "C0"), (-r["recovered_gamma_minus"], "−γ₋", "C1")):
        if abs(g) <= hi:                                                   # on the histogram's scale
            ax[2].axvline(g, color=c, label=lab)
    ax[2].set_title(f"final y_i ρ_i, recovered from W(0), W(t)\n(γ₊ = {float(r['recovered_gamma_plus']):.3g}, "
                    f"−γ₋ = {-float(r['recovered_gamma_minus']):.3g})")
    ax[2].set_xlabel("y_i ρ_i")
    for a in ax:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    res = max(meta.get("residual_recovered", {}).values(), default=float("nan"))
    agree = meta.get("tracked_vs_recovered")
    title = f"{meta['setting']}: N={meta['N']}"
    if "mu_norm" in meta:
        title += (f", ‖μ‖={meta['mu_norm']:g}, N·SNR²={meta['N_snr2']:.3g}, {meta['steps']} steps "
                  f"({meta['status']}), w_O {'trained' if meta['train_w_O'] else 'frozen'}")
    title += f"\nreconstruction residual {res:.1e}"
    if agree:
        title += f"; tracked vs recovered max rel diff {max(agree.values()):.1e}"
    fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    a = p.parse_args(argv)
    try:
        return _cmd(a)
    except ValueError as e:
        print(f"fig_coefficients: error: {e}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
