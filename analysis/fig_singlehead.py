"""The third setting's figures (single-head attention of Magen et al.), drawn from a study folder's tables only.

Pure drawing of ``refvit study single-head`` results: each function reads the CSV tables that
``refvit.magen2025.tables.write_tables`` rebuilt from the verified run files, writes one PNG atomically and returns
its path. Every drawn artist carries a gid ("heat twostep", "c lower", "clean n=40", ...) so tests can read the drawn
numbers back.

Figure ``twostep``: (a) clean test error after two GD steps, mean over repeats, over (n, SNR) with the fitted lines
  SNR·√n = c of both edges of the benign band (solid; dotted: the middle of the bracket when the labels are
  separable) and each n's threshold (markers); (b) attention on the signal token after step 2 against SNR·√n, clean
  samples (solid) and flipped ones (dashed), one colour per n; (c) the step-size probe: the fraction of the SNR grid's
  training sets that are benign (solid) and interpolated after step 2 (dotted) against the step size, per n.
Figure ``maxmargin``: (a) clean test error of the maximum-margin interpolator over (n, SNR) with its fitted line;
  (b) its test error against SNR·√n, one line per n (they collapse when the boundary is SNR ≍ 1/√n);
  (c) the certificate: stationarity residual, 1 − margin and the spread of the norms the starts reached, per run.
Figures ``longrun``, ``tokens`` and ``query`` (beyond the paper, one per switch of the study): (a) clean test error
  over (n, SNR) with the fitted lines and per-n thresholds, as in ``twostep`` (a), after many small GD steps
  (``longrun``), after two GD steps on M > 2 tokens (``tokens``) or after many GD steps of the query form with trained
  W_Q, W_K from a Gaussian init (``query``); (b) attention on the signal token at the end of those runs, clean and
  flipped samples, per n. A study without the part draws a panel that says so.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refvit.io import read_csv, save_figure  # noqa: E402


def _edges(vals) -> np.ndarray:
    """Cell edges on a log axis: geometric midpoints, and the ends mirrored."""
    v = np.log(np.asarray(sorted(vals), dtype=float))
    if len(v) == 1:
        return np.exp(np.array([v[0] - 0.5, v[0] + 0.5]))
    mid = (v[1:] + v[:-1]) / 2
    return np.exp(np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]]))


def mean_grid(rows: list[dict], key: str) -> tuple[list, list, np.ndarray]:
    """(ns, snrs, G) with G[j, i] the mean of ``key`` over the rows at (ns[i], snrs[j]); NaN where none."""
    ns, snrs = sorted({r["n"] for r in rows}), sorted({r["snr"] for r in rows})
    G = np.full((len(snrs), len(ns)), np.nan)
    for i, n in enumerate(ns):
        for j, s in enumerate(snrs):
            vals = [r[key] for r in rows if r["n"] == n and r["snr"] == s and math.isfinite(r[key])]
            if vals:
                G[j, i] = np.mean(vals)
    return ns, snrs, G


def _plain_log(axis) -> None:
    """Plain numbers at the major ticks of a log axis, none at the minor ones (they overlap)."""
    axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _constant(b: dict) -> tuple[float, str]:
    """The fitted c of a boundary row, or the geometric middle of its bracket when separable ("" or ":" style)."""
    if math.isfinite(b["c"]):
        return b["c"], "-"
    if math.isfinite(b["c_bracket_lo"]):
        return math.sqrt(b["c_bracket_lo"] * b["c_bracket_hi"]), ":"
    return math.nan, ""


def draw_heatmap(ax, rows, bounds, edges, method: str, fig) -> None:
    """Mean clean test error over (n, SNR), the fitted lines SNR = c/√n and the per-n thresholds."""
    ns, snrs, G = mean_grid(rows, "test_error")
    mesh = ax.pcolormesh(_edges(ns), _edges(snrs), G, cmap="viridis", vmin=0, vmax=0.5, shading="flat")
    mesh.set_gid(f"heat {method}")
    fig.colorbar(mesh, ax=ax, label="clean test error")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ns)
    _plain_log(ax.xaxis)
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    n_line = np.geomspace(_edges(ns)[0], _edges(ns)[-1], 50)
    for b in bounds:
        if b["method"] != method:
            continue
        c, style = _constant(b)
        if style:
            line, = ax.plot(n_line, c / np.sqrt(n_line), style, color="w", lw=2,
                            label=f"{b['edge']} edge: SNR·√n = {c:.3g}")
            line.set_gid(f"c {b['edge']}")
    labelled = set()
    for e in edges:
        if e["method"] == method:
            t = e["threshold"] if math.isfinite(e["threshold"]) else (
                math.sqrt(e["bracket_lo"] * e["bracket_hi"]) if math.isfinite(e["bracket_lo"]) else math.nan)
            if math.isfinite(t):
                ax.plot([e["n"]], [t], "o" if e["edge"] == "lower" else "s", color="r", ms=5,
                        gid=f"threshold {e['edge']} n={e['n']}",
                        label=None if e["edge"] in labelled else f"{e['edge']} edge at one n (17.9)")
                labelled.add(e["edge"])
    ax.set_xlim(_edges(ns)[0], _edges(ns)[-1])
    ax.set_ylim(_edges(snrs)[0], _edges(snrs)[-1])
    ax.set_xlabel("n (training samples)")
    ax.set_ylabel("SNR = ρ/(σ√d)")
    if ax.get_legend_handles_labels()[0]:          # no line when no edge could be fitted
        ax.legend(fontsize=7, loc="lower left", facecolor="0.4", labelcolor="w")   # white lines need a dark box


def _by_n(ax, rows, key: str, style: str, label: str) -> None:
    cmap = plt.get_cmap("plasma")
    ns = sorted({r["n"] for r in rows})
    for k, n in enumerate(ns):
        rn = [r for r in rows if r["n"] == n]
        x = sorted({r["snr_sqrt_n"] for r in rn})
        y = [np.nanmean([r[key] for r in rn if r["snr_sqrt_n"] == v]) for v in x]
        ax.plot(x, y, style, color=cmap(k / max(1, len(ns))), label=f"{label} n={n}", gid=f"{label} n={n}")
    ax.set_xscale("log")
    _plain_log(ax.xaxis)
    ax.set_xlabel("SNR·√n")


def twostep_figure(folder, path, dpi: int = 110) -> Path:
    """Figure ``twostep`` of the module docstring from ``folder``'s tables."""
    folder = Path(folder)
    rows, probe = read_csv(folder / "twostep.csv"), read_csv(folder / "probe.csv")
    bounds, edges = read_csv(folder / "boundary.csv"), read_csv(folder / "edges.csv")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    draw_heatmap(axes[0], rows, bounds, edges, "twostep", fig)
    axes[0].set_title("(a) two GD steps from zero: clean test error")
    _by_n(axes[1], rows, "attn_signal_clean", "-o", "clean")
    _by_n(axes[1], rows, "attn_signal_flipped", "--x", "flipped")
    axes[1].set_ylabel("attention on the signal token after step 2")
    axes[1].set_title("(b) clean (solid) and flipped (dashed) samples")
    axes[1].legend(fontsize=6, ncol=2)
    lrs = sorted({r["lr"] for r in probe})
    cmap = plt.get_cmap("plasma")
    ns = sorted({r["n"] for r in probe})
    for k, n in enumerate(ns):
        rn = [r for r in probe if r["n"] == n]
        for key, style, what in (("benign", "-o", "benign"), ("train_error", ":", "interpolated")):
            frac = [np.mean([(r[key] if key == "benign" else r[key] == 0) for r in rn if r["lr"] == lr])
                    for lr in lrs]
            axes[2].plot(lrs, frac, style, color=cmap(k / max(1, len(ns))), label=f"{what} n={n}",
                         gid=f"probe {what} n={n}")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("η₀ (step size η = η₀·n)" if probe and probe[0]["eta"] != probe[0]["lr"] else "step size")
    axes[2].set_ylabel("fraction of the grid's training sets")
    axes[2].set_title("(c) probe: benign (solid), interpolated after step 2 (dotted)")
    axes[2].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def maxmargin_figure(folder, path, dpi: int = 110) -> Path:
    """Figure ``maxmargin`` of the module docstring from ``folder``'s tables."""
    folder = Path(folder)
    rows = read_csv(folder / "maxmargin.csv")
    bounds, edges = read_csv(folder / "boundary.csv"), read_csv(folder / "edges.csv")
    bounds = [b for b in bounds if b["edge"] == "lower"]          # the max-margin interpolator has one edge
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    draw_heatmap(axes[0], rows, bounds, [e for e in edges if e["edge"] == "lower"], "maxmargin", fig)
    axes[0].set_title("(a) maximum-margin interpolator: clean test error")
    _by_n(axes[1], rows, "test_error", "-o", "test error")
    axes[1].set_ylabel("clean test error")
    axes[1].set_title("(b) against SNR·√n")
    axes[1].legend(fontsize=7)
    ok = [r for r in rows if r["status"] == "converged"]
    x = [r["snr_sqrt_n"] for r in ok]
    for key, marker, label in (("stationarity", "o", "stationarity residual"),
                               ("feasibility", "x", "max(0, 1 − margin)"),
                               ("norm_spread", "^", "norm spread over starts")):
        y = np.maximum([r[key] for r in ok], 1e-17)               # exact zeros drawn at the floor of the log axis
        axes[2].plot(x, y, marker, ms=4, ls="none", label=label, gid=f"kkt {key}")
    axes[2].set_xscale("log")
    _plain_log(axes[2].xaxis)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("SNR·√n")
    axes[2].set_title(f"(c) certificate of {len(ok)}/{len(rows)} solved runs")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi)


PART_TITLES = {   # (what the runs are, the switch that turns the part off), per beyond-the-paper part
    "longrun": (lambda r: f"{r['steps']} small GD steps from zero (η = {r['eta'] / r['n']:g}·n)", "long_steps = 0"),
    "tokens": (lambda r: f"two GD steps from zero on M = {r['M']} tokens "
                         f"(η = {2 * r['eta'] / (r['n'] * r['M']):g}·n·M/2)", "tokens = 0"),
    "query": (lambda r: f"{r['steps']} GD steps of trained W_Q, W_K, v (η = {r['eta'] / r['n']:g}·n)",
              "query_steps = 0"),
}


def part_fig(folder, part: str):
    """Figure ``longrun``, ``tokens`` or ``query`` of the module docstring from ``folder``'s tables (a Figure)."""
    folder = Path(folder)
    what, off = PART_TITLES[part]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    if not (folder / f"{part}.csv").exists():
        for ax in axes:
            ax.text(0.5, 0.5, f"no {part} runs in this study ({off})", ha="center", va="center")
            ax.set_axis_off()
        return fig
    rows = read_csv(folder / f"{part}.csv")
    draw_heatmap(axes[0], rows, read_csv(folder / "boundary.csv"), read_csv(folder / "edges.csv"), part, fig)
    axes[0].set_title("(a) clean test error, mean over training sets", fontsize=10)
    _by_n(axes[1], rows, "attn_signal_clean", "-o", "clean")
    _by_n(axes[1], rows, "attn_signal_flipped", "--x", "flipped")
    M = rows[0]["M"] if "M" in rows[0] else 2
    axes[1].axhline(1 / M, color="0.5", lw=1, ls=":", label=f"uniform (1/M = {1 / M:g})", gid="uniform")
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("attention on the signal token " + ("after step 2" if part == "tokens" else "at the end"))
    axes[1].set_title("(b) clean (solid) and flipped (dashed) samples", fontsize=10)
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"Beyond the paper: {what(rows[0])}")
    fig.tight_layout()
    return fig


def part_figure(folder, path, part: str, dpi: int = 110) -> Path:
    """``part_fig`` written to ``path``."""
    return save_figure(part_fig(folder, part), path, dpi)


def singlehead_figures(folder, twostep_path, maxmargin_path, longrun_path, tokens_path, query_path) -> list[Path]:
    """The five figures of a study folder."""
    return [twostep_figure(folder, twostep_path), maxmargin_figure(folder, maxmargin_path),
            *(part_figure(folder, p, part) for part, p in (("longrun", longrun_path), ("tokens", tokens_path),
                                                              ("query", query_path)))]
