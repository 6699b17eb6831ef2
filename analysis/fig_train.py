"""One trained cell over time, from its saved history (``refvit train``): attention, values, coefficients, losses.

Usage: python -m refvit.analysis.fig_train OUT/history.npz [--out OUT/training.png]

Reads only the history file. Each panel draws the series the cell's setting records (``PANELS``); a series with one
value per sample or per neuron is drawn as its mean over them, with its range shaded.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refvit.io import FileProblem, one_line_errors, save_figure  # noqa: E402
from refvit.results import load_history  # noqa: E402

# setting -> panels (title, series); "h_" series are on the history's steps, "c_" series on c_step
PANELS = {
    "jiang2024": (("attention ā on the signal and noise tokens", ("h_attn_signal", "h_attn_noise")),
                  ("signed values y_i v_i of the signal and noise tokens", ("h_value_signal", "h_value_noise")),
                  ("coefficients γ₊, γ₋ and y_i ρ_i (docs/math.md (7.6))",
                   ("c_gamma_plus", "c_gamma_minus", "c_y_rho"))),
    "li2025": (("attention s₁₁ (signal→signal), s₂₁ (noise→signal)", ("h_s11", "h_s21")),
               ("values ⟨v, μ⟩, ⟨v, y_i ξ_i⟩", ("h_value_signal", "h_value_noise")),
               ("query and key coefficients with μ and y_i ξ_i (docs/math.md §14.1)",
                ("h_query_signal", "h_key_signal", "h_query_noise", "h_key_noise"))),
    "magen2025": (("attention on the signal token, clean and flipped samples",
                   ("h_attn_signal_clean", "h_attn_signal_flipped")),
                  ("smallest margins y_i f_i", ("h_margin_min", "h_margin_clean_min", "h_margin_flipped_min")),
                  ("training error", ("h_train_error",))),
}
LOSSES = ("h_train_loss", "h_test_loss")


def _series(ax, t, a, label) -> None:
    a = np.asarray(a, dtype=np.float64).reshape(len(t), -1)
    ok = np.isfinite(a).any(axis=1)
    if not ok.any():
        return
    with np.errstate(invalid="ignore"):
        m = np.nanmean(a[ok], axis=1)
    line, = ax.plot(t[ok], m, marker="o" if ok.sum() < 4 else None, label=label + (" (mean)" if a.shape[1] > 1 else ""))
    if a.shape[1] > 1:
        ax.fill_between(t[ok], np.nanmin(a[ok], axis=1), np.nanmax(a[ok], axis=1), color=line.get_color(), alpha=0.15)


def draw(history_file, out, dpi: int = 110) -> Path:
    """Draw the cell's panels and its losses over the steps from a history file written by ``refvit train``."""
    summary, arrays = load_history(history_file)
    if summary.get("setting") not in PANELS:
        raise FileProblem(history_file, f"not a `refvit train` history (setting {summary.get('setting')!r})")
    panels = PANELS[summary["setting"]] + (("losses", LOSSES),)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4), constrained_layout=True)
    for ax, (title, keys) in zip(axes, panels):
        for k in keys:
            if k in arrays:
                t = arrays["c_step" if k.startswith("c_") else "step"]
                _series(ax, t, arrays[k], k[2:])
        if title == "losses":
            ax.set_yscale("log")
        if not ax.lines:
            ax.text(0.5, 0.5, "not recorded\n(coefficients: GD only)", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step t")
        if ax.lines:
            ax.legend(fontsize=7)
    s = summary
    fig.suptitle(f"{s['setting']}: N={s['N']}, ‖μ‖={s['mu_norm']:g}, {s['optimizer']} η={s['lr']:g}, "
                 f"seed {s['seed']}: "
                 f"{s['steps']} steps ({s['status']}), train loss {s['train_loss']:.3g}, test loss "
                 f"{s['test_loss']:.3g}, test error {s['test_error']:.3g}", fontsize=10)
    return save_figure(fig, out, dpi)


@one_line_errors   # a missing or damaged history file: one line, status 2
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="history.npz written by `refvit train`")
    p.add_argument("--out", default=None, help="figure path (default: training.png beside the history file)")
    a = p.parse_args(argv)
    print(f"wrote {draw(a.file, a.out or Path(a.file).with_name('training.png'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
