"""GD vs SignGD vs Adam from a saved optimizer study (``refvit study optimizers``).

Usage: python -m refvit.analysis.fig_optimizers STUDY_DIR [--out-heatmaps PNG] [--out-dynamics PNG] [--k 1]

Reads only saved results: STUDY_DIR/study.json, table.csv, pilot.csv and, per setting, ``lr_choice.json``,
``series.json`` (what was compared: each optimizer at its chosen rate, then the references, e.g. GD at the authors'
rate) and the folders it names (comparison sweeps: table.csv + sweep.json; curve runs: the Dynamics .npz files).

Figure 1 (--out-heatmaps):
  row 1  mean test loss over (SNR, N) in the Figure-1 setting, one panel per series, **one colour scale** for all
         panels, and the N·SNR² curve in the SNR convention of the axis (the authors' σ = 0.2; ``fig_heatmap``);
  row 2  steps to training loss < 0.01, test loss and test 0-1 error of every converged comparison run, grouped by
         setting and regime (Figure-1 cells: benign N·SNR² ≥ 5, harmful ≤ 1.25, the rest "transition"; dynamics
         setting: its two regimes); dots are runs, bars medians;
  row 3  the learning-rate rule's pilots: mean held-out loss and median steps at every scanned rate, chosen rate
         circled (``refvit.jiang2024.studies.choose_lr``).
Figure 2 (--out-dynamics): fixed-length training curves in the dynamics setting, one column per series with curves: losses, attention of training sample 0 on its signal and noise tokens, and its value scores
  μ₊ᵀW_V w_O, ξ₀ᵀW_V w_O, for each regime; mean ± k·std over runs (``fig_dynamics.band``).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .fig_dynamics import ROWS, band  # noqa: E402
from .fig_heatmap import cell_grid, plot_panel, reference_constant  # noqa: E402
from refvit.io import load_json, one_line_errors, read_columns, read_csv, save_figure  # noqa: E402
from refvit.jiang2024.saved import load_runs as load_dynamics  # noqa: E402

NAMES = {"gd": "GD", "signgd": "SignGD", "adam": "Adam"}
COLORS = {"gd": "C0", "signgd": "C3", "adam": "C2"}
REFERENCE_COLOR = "C7"
GROUP_ORDER = ("benign", "transition", "harmful")


def ordered_series(d: Path, setting: str) -> list[dict]:
    """series.json of a setting, each reference placed right after the chosen run of its optimizer."""
    series = load_json(d / setting / "series.json")
    out = []
    for s in (s for s in series if not s["reference"]):
        out += [s] + [r for r in series if r["reference"] and r["optimizer"] == s["optimizer"]]
    return out + [r for r in series if r not in out]


def series_label(s: dict) -> str:
    return f"{NAMES[s['optimizer']]} η={s['lr']:g}" + (" (reference)" if s["reference"] else "")


def color(s: dict) -> str:
    return REFERENCE_COLOR if s["reference"] else COLORS[s["optimizer"]]


def draw_heatmap_row(axes, d: Path, meta: dict, fig) -> None:
    """One test-loss heatmap per series on a shared colour scale (0 … max of all cell means, at least ln 2)."""
    setting = next(s for s in meta["settings"] if s["name"] == "figure1")
    series = ordered_series(d, "figure1")
    grids, smeta = {}, None
    for s in series:
        smeta = load_json(d / "figure1" / s["folder"] / "sweep.json")
        grids[s["series"]] = cell_grid(read_columns(d / "figure1" / s["folder"] / "table.csv"), "snr_axis")
    vmax = max([math.log(2)] + [float(np.nanmax(g["mean_loss"])) for g in grids.values()
                                if np.isfinite(g["mean_loss"]).any()])
    const = reference_constant(smeta, axis=True)
    xlabel = f"SNR = ‖μ‖ / ({smeta['data']['snr_axis_sigma']:g}·√d)  (authors' axis)"
    im = None
    for ax, s in zip(axes, series):
        why = "reference rate, not the rule's" if s["reference"] else f"'{meta['lr_rule']}' rule"
        g = grids[s["series"]]
        im = plot_panel(ax, g, g["mean_loss"], f"{NAMES[s['optimizer']]}, η = {s['lr']:g} ({why}): mean test loss "
                        f"({setting['repeats']} seeds)", "viridis", 0.0, vmax, const, xlabel)
    fig.colorbar(im, ax=list(axes), label="test logistic loss (same scale in every panel)", shrink=0.9)


def _groups(table: list[dict]) -> list[tuple[str, str]]:
    """(setting, regime group) pairs present in the table, in display order."""
    keys = []
    for setting in ("figure1", "dynamics"):
        for g in GROUP_ORDER:
            if any(r["setting"] == setting and r["group"] == g for r in table):
                keys.append((setting, g))
    return keys


def draw_summary(ax, table: list[dict], series: dict, key: str, ylabel: str, log: bool) -> None:
    """Runs as dots (converged runs only), medians as bars, grouped by (setting, regime), one colour per series.

    series : {setting: ordered series list}; the j-th series of each setting shares a slot (GD chosen, GD
    reference, SignGD, Adam), so the legend is that of the first setting.
    """
    keys = _groups(table)
    n = max(len(v) for v in series.values())
    width = 0.8 / n
    rng = np.random.default_rng(0)                      # jitter only: the positions of dots, not data
    labelled = set()
    for k, (setting, g) in enumerate(keys):
        for j, s in enumerate(series[setting]):
            vals = np.array([r[key] for r in table if r["setting"] == setting and r["group"] == g
                             and r["series"] == s["series"] and r["converged"]], dtype=float)
            if not len(vals):
                continue
            x = k - 0.4 + width * (j + 0.5)
            lab = f"{NAMES[s['optimizer']]}" + (" (reference η)" if s["reference"] else " (rule's η)")
            ax.scatter(x + rng.uniform(-0.3, 0.3, len(vals)) * width, vals, s=9, color=color(s), alpha=0.5,
                       lw=0, label=None if lab in labelled else lab)
            labelled.add(lab)
            med = float(np.median(vals))
            ax.plot([x - 0.45 * width, x + 0.45 * width], [med, med], color=color(s), lw=2.5)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"{'Fig. 1' if s == 'figure1' else 'dynamics'}\n{g}" for s, g in keys], fontsize=8)
    vals = np.array([r[key] for r in table if r["converged"]], dtype=float)
    if log and vals.min() > 0 and vals.max() / vals.min() > 20:      # a log axis only where it spreads the data
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def draw_pilots(ax, pilot: list[dict], choices: dict, optimizers, key: str, ylabel: str) -> None:
    """Mean held-out loss (key="test_loss") or median steps (key="steps") of each scanned rate's pilot runs."""
    for setting, ls in (("figure1", "-"), ("dynamics", "--")):
        for opt in optimizers:
            rows = [r for r in pilot if r["setting"] == setting and r["optimizer"] == opt]
            lrs = sorted({r["lr"] for r in rows})
            pts = []
            for lr in lrs:
                rr = [r for r in rows if r["lr"] == lr]
                if not all(r["converged"] for r in rr):
                    continue                             # infeasible rate: no held-out loss in the rule
                v = [r[key] for r in rr]
                pts.append((lr, float(np.mean(v) if key == "test_loss" else np.median(v))))
            if not pts:
                continue
            x, y = zip(*pts)
            label = f"{NAMES[opt]}, {'Fig. 1' if setting == 'figure1' else 'dynamics'}"
            ax.plot(x, y, ls=ls, marker="o", ms=3, color=COLORS[opt], label=label)
            c = choices[setting][opt]["lr"]
            ax.plot([c], [dict(pts)[c]], "o", ms=10, mfc="none", mec=COLORS[opt], mew=1.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate η (pilot runs; circle = chosen)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def heatmap_figure(d: Path, out: Path, dpi: int = 110) -> Path:
    """Heatmaps per series, summary statistics per group and the pilots of the rate rule, into ``out``."""
    meta = load_json(d / "study.json")
    table = read_csv(d / "table.csv")
    pilot = read_csv(d / "pilot.csv")
    choices = {s["name"]: load_json(d / s["name"] / "lr_choice.json") for s in meta["settings"]}
    opts = meta["optimizers"]
    series = {s["name"]: ordered_series(d, s["name"]) for s in meta["settings"]}
    n = len(series["figure1"])
    fig = plt.figure(figsize=(5.2 * n, 15), constrained_layout=True)
    sub = fig.subfigures(3, 1, height_ratios=[1.15, 1, 1])
    top = sub[0].subplots(1, n)
    draw_heatmap_row(np.atleast_1d(top), d, meta, sub[0])
    mid = sub[1].subplots(1, 3)
    draw_summary(mid[0], table, series, "steps", "updates to training loss < 0.01", log=True)
    draw_summary(mid[1], table, series, "test_loss", "test logistic loss at that point", log=True)
    draw_summary(mid[2], table, series, "test_error", "test 0-1 error at that point", log=False)
    bot = sub[2].subplots(1, 2)
    draw_pilots(bot[0], pilot, choices, opts, "test_loss", "mean held-out loss of the pilot runs")
    draw_pilots(bot[1], pilot, choices, opts, "steps", "median updates to training loss < 0.01 (pilots)")
    rule = meta["lr_rule"]
    fig.suptitle(f"Optimizers ({meta['name']}): rates by the '{rule}' rule on the grid "
                 f"{', '.join(f'{x:g}' for x in meta['lr_grid'])}; every run stops at training loss < 0.01. "
                 f"Red: N·SNR² = {meta['boundary_N_snr2']:g} with σ_p (the legend gives it on the plotted axis)",
                 fontsize=11)
    return save_figure(fig, out, dpi)


LOSS_FLOOR = 1e-8    # SignGD drives the training loss to ~1e-90; below this the test loss would be unreadable


def _annotate_final(ax, runs: list[dict]) -> None:
    """Print the mean final training and test loss (they may lie below the axis cut)."""
    tr = np.mean([r["h_train_loss"][-1] for r in runs])
    te = np.mean([r["h_test_loss"][np.isfinite(r["h_test_loss"])][-1] for r in runs])
    ax.text(0.98, 0.5, f"final: train {tr:.2g}, test {te:.3g}", transform=ax.transAxes, ha="right", va="center",
            fontsize=7.5, bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})


def _stack(runs: list[dict], key: str) -> np.ndarray:
    """(runs, T) with NaN padding, so that a run stopped early (diverged) still stacks."""
    T = max(len(r[key]) for r in runs)
    Y = np.full((len(runs), T), np.nan)
    for i, r in enumerate(runs):
        Y[i, :len(r[key])] = r[key]
    return Y


CURVE_ROWS = ROWS[:3]     # Figure 3's loss, attention and value-score rows


def dynamics_figure(d: Path, out: Path, k: float = 1.0, dpi: int = 110) -> Path | None:
    """Training curves of the dynamics setting into ``out``; None when the study ran no curves."""
    meta = load_json(d / "study.json")
    setting = next((s for s in meta["settings"] if s["name"] == "dynamics" and s["curve_runs"]), None)
    if setting is None:
        return None
    cols = [s for s in ordered_series(d, "dynamics") if s["curves"]]
    regimes = setting["regimes"]
    nrow = len(CURVE_ROWS) * len(regimes)
    fig, axes = plt.subplots(nrow, len(cols), figsize=(5.6 * len(cols), 2.6 * nrow), constrained_layout=True,
                             squeeze=False)
    dd = setting["data"]
    for c, s in enumerate(cols):
        folder = d / "dynamics" / s["curves"]
        checked = load_dynamics(folder)[1]            # every file checked against the run it claims to be
        for g, (name, mu) in enumerate(regimes):
            runs = [arrays for _, arrays in checked[name]]
            n_snr2 = dd["N"] * mu ** 2 / (dd["sigma_p"] ** 2 * dd["d"])
            for r, (title, series, log) in enumerate(CURVE_ROWS):
                ax = axes[g * len(CURVE_ROWS) + r, c]
                for j, (key, label) in enumerate(series):
                    Y = _stack(runs, key)
                    t = np.arange(Y.shape[1])
                    cols = np.isfinite(Y).any(axis=0)      # the test loss exists only every eval_every steps
                    band(ax, t[cols], Y[:, cols], k, label, f"C{j}", log)
                if log:
                    ax.set_yscale("log")
                    ax.set_ylim(max(ax.get_ylim()[0], LOSS_FLOOR), None)
                if r == 1:
                    ax.set_ylim(-0.02, 1.02)
                if r == 0:
                    _annotate_final(ax, runs)
                ax.set_title(f"{series_label(s)}, {name} ‖μ‖={mu} (N·SNR²={n_snr2:.3g}): "
                             f"{title.replace(chr(10), ' ')}", fontsize=8.5)
                ax.legend(fontsize=7)
                ax.grid(alpha=0.3)
                if g * len(CURVE_ROWS) + r == nrow - 1:
                    ax.set_xlabel("training iterations t")
    fig.suptitle(f"Dynamics setting ({meta['name']}): M={dd['M']}, d={dd['d']}, N={dd['N']}, σ_p={dd['sigma_p']:g};"
                 f" fixed numbers of updates (no early stop), test loss every {setting['curve_eval_every']} step(s); "
                 f"mean ± {k:g}·std over {setting['curve_runs']} runs; loss axes cut at {LOSS_FLOOR:g} (final values "
                 "printed in each loss panel)", fontsize=10)
    return save_figure(fig, out, dpi)


def optimizer_figures(study_dir, out_heatmaps, out_dynamics, k: float = 1.0, dpi: int = 110) -> list[Path]:
    """Both figures of a saved optimizer study; returns the paths written (no curves figure without curves)."""
    d = Path(study_dir)
    paths = [heatmap_figure(d, Path(out_heatmaps), dpi), dynamics_figure(d, Path(out_dynamics), k, dpi)]
    return [x for x in paths if x is not None]


@one_line_errors   # a missing or damaged results file: one line, status 2
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study_dir", help="folder written by `refvit study optimizers`")
    p.add_argument("--out-heatmaps", default="figures/optimizers_heatmaps.png", help="output PNG (heatmaps etc.)")
    p.add_argument("--out-dynamics", default="figures/optimizers_dynamics.png", help="output PNG (curves)")
    p.add_argument("--k", type=float, default=1.0, help="band half-width in standard deviations")
    p.add_argument("--dpi", type=int, default=110)
    a = p.parse_args(argv)
    for path in optimizer_figures(a.study_dir, a.out_heatmaps, a.out_dynamics, a.k, a.dpi):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
