"""Draw the demo figure from saved runs: losses and attention of one benign and one harmful Figure-1 cell.

Usage: python -m refvit.analysis.fig_demo RESULTS_DIR [--out figures/demo.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from refvit.io import one_line_errors, save_figure  # noqa: E402
from refvit.jiang2024.config import BOUNDARY_N_SNR2, figure1_setting  # noqa: E402
from refvit.results import load_history  # noqa: E402


def plot_run(s: dict, run: dict, axes, name: str, M: int) -> None:
    """One demo run (summary ``s`` and history arrays ``run``; M tokens): loss and attention over training."""
    t = run["step"]
    ax_loss, ax_attn = axes
    ax_loss.semilogy(t, run["h_train_loss"], label="train loss")
    ax_loss.axhline(s["test_loss"], color="C3", ls="--", label=f"test loss at stop = {s['test_loss']:.3f}")
    ax_loss.set_title(f"{name} cell: N={s['N']}, ‖μ‖={s['mu_norm']:g}, N·SNR²={s['N_snr2']:.2f}")
    ax_loss.set_xlabel("step t")
    ax_loss.set_ylabel("logistic loss (log scale)")
    ax_loss.legend(fontsize=8)
    ax_attn.plot(t, run["h_attn_signal"], label="ā on signal token")
    ax_attn.plot(t, run["h_attn_noise"], label="ā on noise token")
    ax_attn.axhline(1 / M, color="grey", lw=0.8, ls=":", label=f"uniform 1/M = 1/{M}")
    ax_attn.set_title(f"{name} cell: attention")
    ax_attn.set_xlabel("step t")
    ax_attn.set_ylabel("attention weight ā (mean over samples)")
    ax_attn.set_ylim(0, 1)
    ax_attn.legend(fontsize=8)


def demo_figure(results, out) -> Path:
    """Draw the demo's two runs (``results/demo_benign.npz``, ``demo_harmful.npz``) into ``out``."""
    data, _, train = figure1_setting()                 # the demo's cells differ from it only in N and ‖μ‖
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    for row, name in zip(axes, ("benign", "harmful")):
        plot_run(*load_history(Path(results) / f"demo_{name}.npz"), row, name, data.M)
    fig.suptitle(f"Figure-1 setting (M={data.M} tokens, d={data.d}, noise std σ_p={data.sigma_p:g}, weak-token std "
                 f"{data.sigma_w:g}, GD η={train.lr:g}): a benign and a harmful cell\n"
                 f"SNR = ‖μ‖/(σ_p·√d); the authors' boundary is N·SNR² = {BOUNDARY_N_SNR2:g}", fontsize=10)
    return save_figure(fig, out)


@one_line_errors   # a missing or damaged results file: one line, status 2
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="folder with demo_benign.npz and demo_harmful.npz")
    p.add_argument("--out", default="figures/demo.png")
    a = p.parse_args(argv)
    print(f"wrote {demo_figure(a.results, a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
