"""The phase study from its saved results (``refvit study phases``; docs/math.md §12.4).

Usage: python -m refvit.analysis.fig_phases STUDY_DIR [--out-runs F] [--out-lengths F]

Reads only STUDY_DIR/study.json, summary.csv and the history files of the runs drawn.
- runs figure: per setting, one benign and one harmful run (repeat 0 of the ‖μ‖ sweep's highest and lowest ‖μ‖ at
  the base N and η), attention to the signal and noise tokens and the training loss against the step, the three
  phases shaded between the detected boundaries 0, T₁, T₂, T₃ (docs/math.md (12.6)–(12.8)); T₃ dotted.
- lengths figure: per setting, the median phase lengths against N·SNR² over the ‖μ‖ sweep, with 95 % bootstrap
  intervals; the rate and size conditions are drawn at their N·SNR² with open markers.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refvit.jiang2024.config import BOUNDARY_N_SNR2  # noqa: E402
from .common import study_figures_main  # noqa: E402
from refvit.io import load_json, one_line_errors, read_csv, save_figure  # noqa: E402
from refvit.jiang2024.phases import detect_phases  # noqa: E402
from refvit.results import load_history  # noqa: E402
from refvit.jiang2024.studies.phases import run_file, setting_configs  # noqa: E402

PHASE_COLORS = ("#d9e8f5", "#fbe3c4", "#dcefd9")      # phase 1, 2, 3 shading
LENGTHS = (("len1", "phase 1: T₁", "C0"), ("len2", "phase 2: T₂ − T₁", "C1"), ("t3", "to convergence: T₃", "C2"))
TITLES = {"dynamics": "dynamics setting (M=3, d=2048)", "figure1": "Figure-1 cell (M=16, d=1024)"}


def base_sweep(conds: list) -> tuple[int, float, list]:
    """(N, η, ‖μ‖ values) of a setting's ‖μ‖ sweep: its first condition's N and η and every ‖μ‖ run with both."""
    N, _, lr = conds[0]
    return N, lr, sorted(mu for n, mu, x in conds if n == N and x == lr)


def runs_figure(study_dir, out, dpi: int = 110) -> Path:
    d = Path(study_dir)
    meta = load_json(d / "study.json")
    settings = list(meta["conditions"])
    fig, axes = plt.subplots(len(settings), 2, figsize=(12, 3.9 * len(settings)), constrained_layout=True,
                             squeeze=False)
    for row, setting in enumerate(settings):
        N, lr, mus = base_sweep(meta["conditions"][setting])
        for col, mu in enumerate((mus[-1], mus[0])):
            ax = axes[row, col]
            s, a = load_history(d / setting / "runs" / run_file(N, mu, lr, 0))
            M = setting_configs(setting, N, mu, lr, meta["steps"])[0].M
            ph = detect_phases(a["h_attn_signal"], a["h_attn_noise"], a["h_train_loss"], M)
            t = a["step"]
            end = int(t[-1])
            spans = ((0, ph.t1), (ph.t1, ph.t2), (ph.t2, ph.t3))   # no phase 3 when the loss is below τ before T₂
            for k, (lo, hi) in enumerate(spans):
                if lo is not None and hi is not None and hi > lo:
                    ax.axvspan(lo, hi, color=PHASE_COLORS[k], lw=0, label=f"phase {k + 1}")
            if ph.t3 is not None:
                ax.axvline(ph.t3, color="k", lw=1, ls=":", label="T₃: training loss < 0.01 (after it: unshaded)")
            ax.plot(t, a["h_attn_signal"], color="C0", lw=1.6, label="attention to signal (mean ā_{i,0})")
            ax.plot(t, a["h_attn_noise"], color="C3", lw=1.6, label="attention to noise (mean ā_{i,1})")
            ax.axhline(1 / M, color="0.5", ls=":", lw=1, label="1/M")
            ax.set_ylabel("attention weight")
            ax.set_xlabel("step")
            if end > 50:                                   # long runs: the early phases need a log-like axis
                ax.set_xscale("symlog", linthresh=10)
            ax2 = ax.twinx()
            ax2.plot(t, a["h_train_loss"], color="k", lw=1.2, ls="--", label="training loss (right)")
            ax2.set_yscale("log")
            ax2.set_ylabel("training loss")
            regime = "benign" if s["test_loss"] < meta["benign_loss"] else "harmful"
            marks = ", ".join(f"T{i} = {x}" for i, x in enumerate((ph.t1, ph.t2, ph.t3), 1))
            ax.set_title(f"{TITLES[setting]}: N = {N}, ‖μ‖ = {mu}, η = {lr:g}, N·SNR² = {s['N_snr2']:.3g}\n"
                         f"test loss {s['test_loss']:.3g} ({regime}); {marks}", fontsize=9)
            handles = [h + g for h, g in zip(ax.get_legend_handles_labels(), ax2.get_legend_handles_labels())]
    fig.legend(*handles, loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle(f"The three phases detected in single runs ({meta['name']}; repeat 0; symlog step axis beyond 10 for long runs).\n"
                 f"Phase 1 ends when a token's attention is {meta['delta_uniform']:.0%} away from 1/M; phase 2 when "
                 f"the signal–noise attention gap has made {1 - meta['delta_settled']:.0%} of its largest change;\n"
                 "phase 3 when the training loss is below 0.01 (T₃, dotted; none if that comes before T₂)", fontsize=10)
    return save_figure(fig, out, dpi)


def lengths_figure(study_dir, out, dpi: int = 110) -> Path:
    d = Path(study_dir)
    meta = load_json(d / "study.json")
    summary = read_csv(d / "summary.csv")
    settings = list(meta["conditions"])
    fig, axes = plt.subplots(1, len(settings), figsize=(6.2 * len(settings), 4.8), constrained_layout=True,
                             squeeze=False)
    for ax, setting in zip(axes[0], settings):
        N, lr, mus = base_sweep(meta["conditions"][setting])
        rows = [r for r in summary if r["setting"] == setting]
        sweep = sorted((r for r in rows if r["N"] == N and r["lr"] == lr), key=lambda r: r["N_snr2"])
        other = [r for r in rows if not (r["N"] == N and r["lr"] == lr)]
        for key, label, color in LENGTHS:
            x = np.array([r["N_snr2"] for r in sweep])
            m = np.array([r[f"{key}_median"] for r in sweep], dtype=float)
            lo = np.array([r[f"{key}_lo"] for r in sweep], dtype=float)
            hi = np.array([r[f"{key}_hi"] for r in sweep], dtype=float)
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
            ax.plot(x, m, color=color, marker="o", ms=4, label=f"{label} (N = {N}, η = {lr:g})")
            for r in other:
                ax.plot([r["N_snr2"]], [r[f"{key}_median"]], color=color, ls="none", mfc="none",
                        marker="s" if r["N"] != N else "^", ms=6)
        lrs = sorted({r["lr"] for r in other if r["N"] == N})
        Ns = sorted({r["N"] for r in other if r["N"] != N})
        ax.plot([], [], color="0.3", ls="none", marker="^", mfc="none",
                label=f"η ∈ {{{', '.join(f'{x:g}' for x in lrs)}}}, N = {N}")
        ax.plot([], [], color="0.3", ls="none", marker="s", mfc="none",
                label=f"N ∈ {{{', '.join(map(str, Ns))}}}, η = {lr:g}")
        ax.axvline(BOUNDARY_N_SNR2, color="C3", ls=":", lw=1.2, label="N·SNR² = 2.5")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("N·SNR²  (SNR = ‖μ‖/(σ_p √d))")
        ax.set_ylabel("steps (median over seeds; band: 95 % bootstrap interval)")
        ax.set_title(TITLES[setting], fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"Phase lengths against N·SNR² ({meta['name']}, {meta['runs']} seeds per condition; censored runs "
                 "left out and counted in summary.csv)", fontsize=10)
    return save_figure(fig, out, dpi)


def phase_figures(study_dir, out_runs, out_lengths, dpi: int = 110) -> list[Path]:
    return [runs_figure(study_dir, out_runs, dpi), lengths_figure(study_dir, out_lengths, dpi)]


@one_line_errors   # a missing or damaged results file: one line, status 2
def main(argv=None) -> int:
    return study_figures_main(argv, __doc__, "phases", (("runs", "figures/phases_runs.png", "output PNG of the phase-shaded runs"),
                               ("lengths", "figures/phases_lengths.png", "output PNG of the phase lengths")), phase_figures)


if __name__ == "__main__":
    raise SystemExit(main())
