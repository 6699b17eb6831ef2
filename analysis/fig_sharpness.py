"""The sharpness study from its saved results (``refvit study sharpness``; docs/math.md §12).

Usage: python -m refvit.analysis.fig_sharpness STUDY_DIR [--out-fit F] [--out-curves F]

Reads only STUDY_DIR/study.json, conditions.csv, widths.csv and each condition's table.csv.
- fit figure: the fitted exponent a (theory: 2) and the transition width (10 %–90 % benign, in log N·SNR² at fixed
  N; docs/math.md (12.4)) against d for the authors' data model, with the data variants at their d beside it;
  then the width fitted at each N separately (widths.csv); 95 % bootstrap intervals as bars.
- curves figure: the fraction of benign runs against N·SNR² (SNR with σ_p), one curve per d, then per variant: if
  N·SNR² were the whole story, the curves would lie on each other. Drawn within a factor ``ZOOM`` of N·SNR² = 2.5. Bands: Wilson 95 % intervals of each fraction.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refvit.jiang2024.config import BENIGN_LOSS, BOUNDARY_N_SNR2  # noqa: E402
from .common import study_figures_main  # noqa: E402
from refvit.io import load_json, one_line_errors, read_columns, read_csv, save_figure  # noqa: E402
from refvit.results import counted  # noqa: E402

VARIANT_STYLE = {"authors": ("k", "o"), "projected": ("C0", "s"), "zero_tokens": ("C2", "D"),
                 "rademacher": ("C3", "^")}
BIN_MIN = 1 / 12      # narrowest bin in log(N·SNR²): well below the transition widths the fits find
ZOOM = 5.0            # the curves are drawn for N·SNR² within a factor 5 of 2.5: outside, every preset is flat 0 or 1
SEPARABLE_BAND = 0.12  # height of the no-estimate band below 0, as a fraction of the largest width drawn
RUNS_PER_BIN = 20     # bins are widened until they hold this many runs on average (a fraction of 20 is ±0.2)


def wilson(k: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (lo, hi) of a binomial fraction k/n (95 % for z = 1.96)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def benign_curve(t: dict) -> tuple[np.ndarray, ...]:
    """(N·SNR² at the bins' mean log, benign fraction, lo, hi, runs per bin) over the converged runs of table ``t``;
    bins of equal width in log(N·SNR²), ``BIN_MIN`` or wider so that they hold ``RUNS_PER_BIN`` runs on average."""
    ok = counted(t)
    x = np.log(t["N_snr2"][ok])
    b = t["test_loss"][ok] < BENIGN_LOSS
    width = max(BIN_MIN, np.ptp(x) * RUNS_PER_BIN / len(x))
    idx = np.floor(x / width).astype(int)
    keys = np.unique(idx)
    n = np.array([np.sum(idx == k) for k in keys], dtype=float)
    k = np.array([np.sum(b[idx == k]) for k in keys], dtype=float)
    centre = np.exp(np.array([x[idx == kk].mean() for kk in keys]))
    lo, hi = wilson(k, n)
    return centre, k / n, lo, hi, n


def _errorbar(ax, x, row, key, color, marker, label=None):
    """The estimate as a marker and its interval as a bar from lo to hi (a percentile-bootstrap interval need not
    be centred on the estimate, nor contain it)."""
    y, lo, hi = row[key], row[f"{key}_lo"], row[f"{key}_hi"]
    if not math.isnan(lo):
        ax.plot([x, x], [lo, hi], color=color, lw=1.5)
        ax.plot([x, x], [lo, hi], color=color, ls="none", marker="_", ms=8)
    ax.plot([x], [y], color=color, marker=marker, ls="none", label=label)


def _curve(ax, x, f, lo, hi, color, marker, label):
    """A benign-fraction curve with its Wilson band shaded."""
    ax.fill_between(x, lo, hi, color=color, alpha=0.12, lw=0)
    ax.plot(x, f, color=color, marker=marker, ms=3, lw=1.3, label=label)


def per_n_panel(ax, widths: list[dict], meta: dict) -> None:
    """The width at each N against d (authors' data model). A separable condition (the SNR grid splits benign from
    harmful runs without overlap: sharper than the grid, no width estimate) is a hollow marker in a shaded band
    below zero, apart from the measured widths, never a point at width 0."""
    cmap = plt.get_cmap("plasma")
    Ns = meta["Ns"]
    authors = [r for r in widths if r["variant"] == "authors"]
    top = max((v for r in authors if not r["separable"] for v in (r["width"], r["width_hi"]) if math.isfinite(v)),
              default=1.0)
    band = -SEPARABLE_BAND * top                               # the band spans [band, 0); its markers at its middle
    separable = any(r["separable"] for r in authors)
    for k, N in enumerate(Ns):
        rows = sorted((r for r in widths if r["variant"] == "authors" and r["N"] == N), key=lambda r: r["d"])
        color = cmap(k / max(len(Ns), 1))
        xs = [r["d"] * 1.03 ** k for r in rows]                       # offset along d so the bars do not overlap
        ax.plot([x for x, r in zip(xs, rows) if not r["separable"]],
                [r["width"] for r in rows if not r["separable"]], color=color, marker="o", lw=1.2,
                label=f"N = {N}")
        for x, r in zip(xs, rows):
            if r["separable"]:
                ax.plot([x], [band / 2], color=color, marker="v", ms=8, mfc="none", ls="none")
            elif not math.isnan(r["width_lo"]):
                ax.plot([x, x], [r["width_lo"], r["width_hi"]], color=color, lw=1)
    if separable:
        ax.axhspan(band, 0, color="0.9", lw=0, zorder=0)
        ax.plot([], [], color="0.3", marker="v", mfc="none", ls="none",
                label="separable: no estimate (sharper than the grid)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(meta["ds"], [str(x) for x in meta["ds"]])
    ax.set_xlabel("token dimension d")
    ax.set_ylabel("width at one N: Δ log(N·SNR²), 10 % → 90 %")
    ax.set_title("width fitted at each N separately (authors' data model)", fontsize=9)
    ax.set_ylim(bottom=band if separable else -0.05)
    lo, hi = ax.get_ylim()
    ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= hi])   # no tick in the band: it holds no values
    ax.set_ylim(lo, hi)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def fit_figure(study_dir, out, dpi: int = 110) -> Path:
    """a and the width against d (authors' data) with the variants at their d; intervals as error bars."""
    d = Path(study_dir)
    meta = load_json(d / "study.json")
    conds = read_csv(d / "conditions.csv")
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), constrained_layout=True)
    base = sorted((r for r in conds if r["variant"] == "authors"), key=lambda r: r["d"])
    for ax, key, label in ((axes[0], "a", "fitted exponent a of N·SNR^a = C"),
                           (axes[1], "width", "pooled width (one slope for all N): Δ log(N·SNR²), 10 % → 90 %")):
        ax.plot([r["d"] for r in base], [r[key] for r in base], color="k", lw=1, alpha=0.5)
        for r in base:
            _errorbar(ax, r["d"], r, key, color="k", marker="o",
                      label="authors' data model" if r is base[0] else None)
        variants = [r for r in conds if r["variant"] != "authors"]
        for i, r in enumerate(variants):            # offset along d so the bars do not overlap
            color, marker = VARIANT_STYLE.get(r["variant"], ("C4", "v"))
            _errorbar(ax, r["d"] * 1.08 ** (i + 1), r, key, color=color, marker=marker,
                      label=f"d = {r['d']}, {r['variant'].replace('_', ' ')}" + (" (Firth)" if r["method"] == "firth" else ""))
        for r in base:
            if r["method"] == "firth":
                ax.annotate("Firth", (r["d"], r[key]), textcoords="offset points", xytext=(5, 5), fontsize=7)
        if key == "a":
            ax.axhline(2.0, color="C1", ls="--", lw=1.2, label="theory: a = 2")
        ax.set_xscale("log", base=2)
        ax.set_xticks(meta["ds"], [str(x) for x in meta["ds"]])
        ax.set_xlabel("token dimension d")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    per_n_panel(axes[2], read_csv(d / "widths.csv"), meta)
    rule = "η = 0.1·1024/d (η·‖ξ‖² fixed)" if meta["lr_scaling"] == "inverse_d" else "η fixed"
    fig.suptitle(f"Sharpness of the N·SNR² boundary ({meta['name']}): Figure-1 setting, {rule}, N ∈ {meta['Ns']}, "
                 f"{len(meta['snrs'])} SNRs, {meta['repeats']} seeds per cell; bars: 95 % bootstrap intervals",
                 fontsize=10)
    return save_figure(fig, out, dpi)


def curves_figure(study_dir, out, dpi: int = 110) -> Path:
    """Benign fraction against N·SNR² per d (left) and per data variant at the variants' d (right)."""
    d = Path(study_dir)
    meta = load_json(d / "study.json")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True, sharey=True)
    cmap = plt.get_cmap("viridis")
    ds = meta["ds"]
    for cond in meta["conditions"]:
        t = read_columns(d / cond["folder"] / "table.csv")
        x, f, lo, hi, _ = benign_curve(t)
        if cond["variant"] == "authors":
            color = cmap(ds.index(cond["d"]) / max(len(ds) - 1, 1))
            _curve(axes[0], x, f, lo, hi, color, "o", f"d = {cond['d']}")
        if cond["d"] == meta["variant_d"]:
            color, marker = VARIANT_STYLE.get(cond["variant"], ("C4", "v"))
            _curve(axes[1], x, f, lo, hi, color, marker, cond["variant"].replace("_", " "))
    for ax, title in ((axes[0], "authors' data model, each d"),
                      (axes[1], f"d = {meta['variant_d']}: one switch of the data model at a time")):
        ax.axvline(BOUNDARY_N_SNR2, color="C3", ls=":", lw=1.2, label="N·SNR² = 2.5 (authors' curve)")
        ax.set_xscale("log")
        ax.set_xlim(BOUNDARY_N_SNR2 / ZOOM, BOUNDARY_N_SNR2 * ZOOM)
        ax.set_xlabel("N·SNR²  (SNR = ‖μ‖/(σ_p √d))")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel(f"fraction of benign runs (converged, test loss < {BENIGN_LOSS:g})")
    fig.suptitle(f"Benign probability against N·SNR² ({meta['name']}; runs pooled over N ∈ {meta['Ns']}, "
                 f"bins of ≥ {BIN_MIN:.3g} in log N·SNR², ~{RUNS_PER_BIN} runs each; bands: Wilson 95 % intervals)",
                 fontsize=10)
    return save_figure(fig, out, dpi)


def sharpness_figures(study_dir, out_fit, out_curves, dpi: int = 110) -> list[Path]:
    return [fit_figure(study_dir, out_fit, dpi), curves_figure(study_dir, out_curves, dpi)]


@one_line_errors   # a missing or damaged results file: one line, status 2
def main(argv=None) -> int:
    return study_figures_main(argv, __doc__, "sharpness", (("fit", "figures/sharpness_fit.png", "output PNG of a and the width vs d"),
                               ("curves", "figures/sharpness_curves.png", "output PNG of the benign curves")), sharpness_figures)


if __name__ == "__main__":
    raise SystemExit(main())
