"""Label-flip noise from a saved study (``refvit study label-noise``).

Usage: python -m refvit.analysis.fig_labelnoise STUDY_DIR [--out figures/labelnoise.png]

Reads only STUDY_DIR/study.json, table.csv and each flip rate's sweep folder (``p0.10/table.csv``, ``sweep.json``).
One heatmap per flip rate p of the mean clean-test 0-1 error over (SNR, N) (converged runs; one colour scale for
all panels; the curve N·SNR² = 2.5), then the error against p: mean ± std over the runs of the benign-regime cells
(N·SNR² ≥ benign_factor·2.5; study.json) and, for contrast, of the transition and harmful-regime cells
(N·SNR² ≤ 2.5/benign_factor); and the test logistic loss against p for the same groups (the 0-1 error of 100 test
samples cannot show changes below 1 %). One SNR convention throughout, the one the groups are defined in:
SNR = ‖μ‖/(σ_p·√d) with σ_p the noise token's std (docs/math.md (1.9)).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .fig_heatmap import cell_grid, plot_panel, reference_constant  # noqa: E402
from refvit.io import load_json, one_line_errors, read_columns, read_csv, save_figure  # noqa: E402
from refvit.jiang2024.studies import p_folder  # noqa: E402
from refvit.results import counted  # noqa: E402

ERROR_VMAX = 0.5     # chance level of a balanced binary test set: the natural top of the error scale
GROUPS = (("benign", "C0", "o"), ("transition", "C1", "D"), ("harmful", "C3", "s"))


def error_grid(table: dict, g: dict) -> np.ndarray:
    """Mean test 0-1 error per cell of ``g`` (``fig_heatmap.cell_grid``) over the same converged runs. (R, C)."""
    Z = np.full(g["mean_loss"].shape, np.nan)
    for i, N in enumerate(g["Ns"]):
        for j, mu in enumerate(g["mus"]):
            ok = (table["N"] == N) & (table["mu_norm"] == mu) & counted(table)
            if ok.any():
                Z[i, j] = table["test_error"][ok].mean()
    return Z


def error_vs_p(rows: list[dict], group: str, key: str = "test_error") -> tuple[np.ndarray, ...]:
    """(p, mean, std, n) of ``key`` (test 0-1 error) over the converged runs of one regime group, per flip rate."""
    ps = sorted({r["flip_rate"] for r in rows})
    m, s, n = [], [], []
    for p in ps:
        e = np.array([r[key] for r in rows if r["flip_rate"] == p and r["group"] == group
                      and r["converged"]], dtype=float)
        m.append(e.mean() if len(e) else np.nan)
        s.append(e.std() if len(e) else np.nan)
        n.append(len(e))
    return np.array(ps, dtype=float), np.array(m), np.array(s), np.array(n)


def runs_label(n: np.ndarray) -> str:
    """How many runs each point of a curve averages: "12 runs", or "8–12 runs" when the counts differ."""
    lo, hi = int(n.min()), int(n.max())
    return f"{lo} runs" if lo == hi else f"{lo}–{hi} runs"


def labelnoise_figure(study_dir, out, dpi: int = 110) -> Path:
    """Draw the label-noise study (heatmaps per flip rate; error and loss vs p per group) into ``out``."""
    d = Path(study_dir)
    meta = load_json(d / "study.json")
    rows = read_csv(d / "table.csv")
    ps = meta["flip_rates"]
    fig = plt.figure(figsize=(5.4 * max(len(ps), 2), 9.6), constrained_layout=True)
    top, bottom = fig.subfigures(2, 1)
    axes = list(np.atleast_1d(top.subplots(1, len(ps)))) + list(bottom.subplots(1, 2))
    im = None
    for ax, pr in zip(axes, ps):
        folder = d / p_folder(pr)
        smeta = load_json(folder / "sweep.json")
        table = read_columns(folder / "table.csv")
        g = cell_grid(table, "snr")
        const = reference_constant(smeta, axis=False)
        flipped = ", ".join(f"{int(round(pr * N))}/{N}" for N in g["Ns"])
        im = plot_panel(ax, g, error_grid(table, g), f"p = {pr:g} (flipped: {flipped}): mean test 0-1 error",
                        "viridis", 0.0, ERROR_VMAX, const,
                        f"SNR = ‖μ‖ / (σ_p·√d),  σ_p = {smeta['data']['sigma_p']:g}")
    top.colorbar(im, ax=axes[:len(ps)], label="test 0-1 error, clean test labels (same scale everywhere)",
                 shrink=0.9)
    pmax = max(ps)
    bf, b = meta["benign_factor"], meta["boundary_N_snr2"]       # the groups' definition (regime_of)
    for ax, key, ylabel in ((axes[-2], "test_error", "test 0-1 error (clean test labels)"),
                            (axes[-1], "test_loss", "test logistic loss (clean test labels)")):
        for group, color, marker in GROUPS:
            x, m, s, n = error_vs_p(rows, group, key)
            if np.all(n == 0):
                continue
            ax.errorbar(x, m, yerr=s, color=color, marker=marker, capsize=4, lw=1.5,
                        label=f"{group} cells (mean ± std, {runs_label(n)})")
            for xi, mi in zip(x, m):
                ax.annotate(f"{mi:.3f}", (xi, mi), textcoords="offset points", xytext=(6, -12 if group == "benign"
                                                                                         else 6), fontsize=7,
                            color=color)
        if key == "test_error":
            ax.plot([0, pmax], [0, pmax], ls=":", color="0.4", label="error = p (for scale)")
            ax.set_ylim(-0.02, ERROR_VMAX)
        ax.set_xlabel("flip rate p of the training labels")
        ax.set_ylabel(ylabel)
        ax.set_title(f"cells grouped by N·SNR²: benign ≥ {bf:g}×{b:g}, harmful ≤ {b:g}/{bf:g}, "
                     f"transition between", fontsize=9)
        ax.set_xlim(-0.1 * pmax, 1.15 * pmax)          # room for the value labels
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    tr = meta["train"]
    stop = (f"one update after the training loss is < {tr['loss_threshold']:g} (the authors' loop)"
            if tr["stop_rule"] == "authors" else
            f"at the first iterate with training loss < {tr['loss_threshold']:g}")
    fig.suptitle(f"Label-flip noise ({meta['name']}): Figure-1 setting, GD η = {tr['lr']:g}, stop {stop} "
                 f"(≤ {tr['steps']} steps), {meta['repeats']} seed(s) per cell, "
                 f"{meta['data']['n_test']} clean test samples per run.\nSNR = ‖μ‖/(σ_p·√d) with σ_p the noise "
                 f"token's std in every panel; red curve: the authors' boundary N·SNR² = {const:g}", fontsize=10)
    return save_figure(fig, out, dpi)


@one_line_errors   # a missing or damaged results file: one line, status 2
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study_dir", help="folder written by `refvit study label-noise`")
    p.add_argument("--out", default="figures/labelnoise.png", help="output PNG")
    p.add_argument("--dpi", type=int, default=110)
    a = p.parse_args(argv)
    print(f"wrote {labelnoise_figure(a.study_dir, a.out, a.dpi)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
