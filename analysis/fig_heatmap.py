"""Figure 1 from a saved sweep (docs/math.md §10.1): test loss over (SNR, N), its cut at 0.2, and the fraction benign.

Usage: python -m refvit.analysis.fig_heatmap SWEEP_DIR [--out figures/figure1.png] [--snr axis|theory] [--k-curve C]

Reads only SWEEP_DIR/table.csv, sweep.json and (for the fitted curve) fit.json.

(a) mean test loss per cell over its converged runs; (b) the same cut at 0.2 (benign < 0.2 ≤ harmful);
(c) what the paper lacks: the fraction of seeds that are benign, with the fitted boundary N·SNR^a = C (refvit.fit).
Every panel draws the reference curve N·SNR² = const **in the SNR convention of its x axis**: the authors' axis
("axis", σ = 0.2 of the weak tokens) with N·SNR_axis² = 1000, or the theory's ("theory", σ_p of the noise token)
with N·SNR² = 2.5 — the same curve (docs/math.md (1.9)). Cells are centred on their own (‖μ‖, N), so the curve passes
through the right cells: the authors' script drew it one column to the right (x = col+1 where column c holds
‖μ‖ = c+1, docs/math.md (10.1)); that offset is fixed here. Cells where some runs did not reach training loss < 0.01 are
hatched; cells where none did are grey (the authors stored such cells as NaN, which showed as blank).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from refvit.jiang2024.config import BENIGN_LOSS, PRESETS, boundary_n_snr2  # noqa: E402
from refvit.io import load_json, one_line_errors, read_columns, save_figure  # noqa: E402
from refvit.results import counted  # noqa: E402


def reference_constant(meta: dict, axis: bool) -> float:
    """k of the reference curve N·SNR² = k on the chosen axis: 2.5 with σ_p, 2.5·(σ_p/σ_axis)² on the authors' axis.

    For Figure 1 (σ_p = 4, σ_axis = 0.2) that is 1000, the authors' red curve (docs/math.md (1.9), (10.1)).
    """
    d = meta["data"]
    strong = boundary_n_snr2()                                  # 2.5: the curve with σ_p of the noise token
    return strong * (d["sigma_p"] / d["snr_axis_sigma"]) ** 2 if axis else strong


def cell_grid(table: dict, snr_key: str) -> dict:
    """Aggregate runs into cells. Returns Ns (R,), snrs (C,), mean_loss, frac_benign, n_conv, n_runs (R, C)."""
    Ns = np.unique(table["N"])
    mus = np.unique(table["mu_norm"])
    R, C = len(Ns), len(mus)
    mean_loss = np.full((R, C), np.nan)
    frac = np.full((R, C), np.nan)
    n_conv = np.zeros((R, C), int)
    n_runs = np.zeros((R, C), int)
    snrs = np.zeros(C)
    for j, mu in enumerate(mus):
        snrs[j] = table[snr_key][table["mu_norm"] == mu][0]
        for i, N in enumerate(Ns):
            sel = (table["N"] == N) & (table["mu_norm"] == mu)
            ok = sel & counted(table)
            n_runs[i, j], n_conv[i, j] = sel.sum(), ok.sum()
            if ok.any():        # non-converged runs have no test loss at the stop, as in the authors' NaN
                mean_loss[i, j] = table["test_loss"][ok].mean()
                frac[i, j] = np.mean(table["test_loss"][ok] < BENIGN_LOSS)
    return {"Ns": Ns, "mus": mus, "snrs": snrs, "mean_loss": mean_loss, "frac_benign": frac,
            "n_conv": n_conv, "n_runs": n_runs}


def _edges(c: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres c (midpoints; the end cells are symmetric around their centre)."""
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def _mark_not_converged(ax, g, xe, ye) -> None:
    for i in range(len(g["Ns"])):
        for j in range(len(g["snrs"])):
            if g["n_conv"][i, j] == g["n_runs"][i, j]:
                continue
            none = g["n_conv"][i, j] == 0
            ax.add_patch(Rectangle((xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i], hatch="///",
                                   facecolor="0.6" if none else "none", edgecolor="red", lw=0.0))


def _curve(ax, g, const: float, a: float, **kw):
    """Draw N = const / SNR^a over the x range of the grid."""
    x = np.geomspace(max(_edges(g["snrs"])[0], 1e-12), _edges(g["snrs"])[-1], 400)
    ax.plot(x, const / x ** a, **kw)


def plot_panel(ax, g, Z, title, cmap, vmin, vmax, const, xlabel, fit=None, fit_const=None):
    """One heatmap panel over (SNR, N), with the reference curve and optionally the fitted one."""
    xe, ye = _edges(g["snrs"]), _edges(g["Ns"].astype(float))
    im = ax.pcolormesh(xe, ye, np.ma.masked_invalid(Z), cmap=cmap, vmin=vmin, vmax=vmax, shading="flat")
    _mark_not_converged(ax, g, xe, ye)
    _curve(ax, g, const, 2.0, color="red", lw=2.5, label=f"N·SNR² = {const:g}")
    if fit is not None:
        _curve(ax, g, fit_const, fit["a"], color="white", lw=2, ls="--",
               path_effects=[patheffects.withStroke(linewidth=3.5, foreground="black")],
               label=f"fit ({fit['method']}): N·SNR^{fit['a']:.2f} = {fit_const:.3g}")
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])
    ax.set_yticks(g["Ns"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("N (training samples)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    return im


def figure1(sweep_dir, out, snr: str = "axis", k_curve: float | None = None, dpi: int = 130) -> Path:
    """Draw Figure 1 from a saved sweep folder (table.csv, sweep.json, optional fit.json) into ``out``.

    snr : x axis, "axis" (the authors' SNR with σ = 0.2) or "theory" (σ_p of the noise token).
    k_curve : constant of the reference curve N·SNR² = k on that axis (default: the authors' 1000, i.e. 2.5).
    """
    d = Path(sweep_dir)
    table = read_columns(d / "table.csv")
    meta = load_json(d / "sweep.json")
    ratio = meta["data"]["sigma_p"] / meta["data"]["snr_axis_sigma"]        # SNR_axis = ratio · SNR
    axis = snr == "axis"
    g = cell_grid(table, "snr_axis" if axis else "snr")
    const = k_curve if k_curve is not None else reference_constant(meta, axis)
    sig = meta["data"]["snr_axis_sigma"] if axis else meta["data"]["sigma_p"]
    xlabel = (f"SNR = ‖μ‖ / ({sig:g}·√d), {sig:g} = std of the weak tokens (the authors' axis)" if axis else
              f"SNR = ‖μ‖ / ({sig:g}·√d), {sig:g} = std of the noise token")
    fit = load_json(d / "fit.json") if (d / "fit.json").exists() else None
    if fit is not None and fit["a"] is None:     # separable labels: no finite MLE; draw the Firth fit if saved
        fit = fit.get("firth")
    fit_const = None
    if fit is not None:
        fit_const = fit["C"] * (ratio ** fit["a"] if axis else 1.0)

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), constrained_layout=True)
    im = plot_panel(axes[0], g, g["mean_loss"], "(a) mean test loss (converged runs)", "viridis", 0.0,
                    math.log(2), const, xlabel)
    fig.colorbar(im, ax=axes[0], label="test logistic loss")
    cut = np.where(np.isnan(g["mean_loss"]), np.nan, (g["mean_loss"] >= BENIGN_LOSS).astype(float))
    two = ListedColormap([plt.get_cmap("viridis")(0.0), plt.get_cmap("viridis")(1.0)])
    plot_panel(axes[1], g, cut, f"(b) cut at {BENIGN_LOSS}: purple < {BENIGN_LOSS} ≤ yellow", two, 0, 1, const,
               xlabel)
    hatches = []                  # legend entries only for the markings this figure shows
    if np.any((g["n_conv"] < g["n_runs"]) & (g["n_conv"] > 0)):
        hatches.append(Patch(facecolor="none", edgecolor="red", hatch="///", label="some runs not converged"))
    if np.any(g["n_conv"] == 0):
        hatches.append(Patch(facecolor="0.6", edgecolor="red", hatch="///", label="no run converged"))
    if hatches:
        axes[1].legend(handles=axes[1].get_legend_handles_labels()[0] + hatches, loc="upper right", fontsize=7,
                       framealpha=0.8)
    im = plot_panel(axes[2], g, g["frac_benign"], "(c) fraction of seeds benign, fitted boundary", "viridis_r", 0, 1,
                    const, xlabel, fit=fit, fit_const=fit_const)
    fig.colorbar(im, ax=axes[2], label=f"fraction of runs with test loss < {BENIGN_LOSS}")
    n_rep = meta["repeats"]
    what = f"{meta['name']} preset:" if meta["name"] in PRESETS else f"sweep {meta['name']}:"
    dd = meta["data"]
    fig.suptitle(f"Test loss after training, by training-set size N and signal-to-noise ratio "
                 f"({what} {len(table['N'])} runs, {n_rep} seed(s) per cell)\n"
                 f"M={dd['M']} tokens of dimension d={dd['d']}, noise std {dd['sigma_p']:g}, weak-token std "
                 f"{dd['sigma_w']:g}, step size {meta['train']['lr']:g}. Red curve: the authors' boundary "
                 f"N·SNR² = {const:g} on this axis ({boundary_n_snr2():g} with the noise std)", fontsize=10)
    return save_figure(fig, out, dpi)


@one_line_errors   # a missing or damaged results file: one line, status 2
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", help="folder with table.csv, sweep.json (and fit.json for panel c's fitted curve)")
    p.add_argument("--out", default="figures/figure1.png", help="output PNG")
    p.add_argument("--snr", choices=("axis", "theory"), default="axis",
                   help="x axis: the authors' SNR (σ = 0.2) or the theory's (σ_p of the noise token)")
    p.add_argument("--k-curve", type=float, default=None,
                   help="constant of the reference curve N·SNR² = k on the chosen axis (default 1000 / 2.5)")
    p.add_argument("--dpi", type=int, default=130)
    a = p.parse_args(argv)
    print(f"wrote {figure1(a.sweep_dir, a.out, a.snr, a.k_curve, a.dpi)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
