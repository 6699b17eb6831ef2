"""Figure 3 from saved dynamics runs (docs/math.md §10.2): per-step curves, mean ± k·std over runs, one column per
regime.

Usage: python -m refvit.analysis.fig_dynamics DYN_DIR [--out figures/figure3.png] [--k 2]

Reads only DYN_DIR/dynamics.json and the per-run .npz files written by ``refvit.jiang2024.dynamics``, each checked
against the run it claims to be (``refvit.jiang2024.dynamics.load_runs``): a file of another regime, ‖μ‖, repeat or
setting, or a damaged one, stops the figure with one line naming it. Rows: training and
test loss; attention on the signal and noise token of training sample 0 (the authors' plot); its value scores
μ₊ᵀW_V w_O and ξ₀ᵀW_V w_O; the QK bilinear forms μᵀW_QW_Kᵀμ and μᵀW_QW_Kᵀξ (signal query), x₃ᵀW_QW_Kᵀμ and
x₃ᵀW_QW_Kᵀξ (the third token as query, as the authors plot); and the decomposed coefficients γ₊, −γ₋ and the mean
of y_iρ_i (docs/math.md (7.6)) when the runs carry them. These are raw quantities, initialization included.

Bands are mean ± k·std over runs (numpy std, ddof=0). k = 2 follows the paper's "2-sigma" caption (docs/math.md §10.2
and the §9.2 table); the authors' script drew ±1 std (``errorbar(yerr=np.std(...))``): pass --k 1 for that.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refvit.io import one_line_errors, save_figure  # noqa: E402
from refvit.jiang2024.saved import load_runs as load_checked_runs  # noqa: E402

# (row name = y label, [(key in the npz, legend label), ...], log scale)
ROWS = (
    ("loss", [("h_train_loss", "train loss"), ("h_test_loss", "test loss")], True),
    ("attention\n(sample 0)", [("h_attn_signal_s0", "ā on signal μ₊"), ("h_attn_noise_s0", "ā on noise ξ₀")],
     False),
    ("value score\n(sample 0)", [("h_V_signal_s0", "μ₊ᵀW_V w_O"), ("h_V_noise_s0", "ξ₀ᵀW_V w_O")], False),
    ("logit, signal\nquery (sample 0)", [("h_qk_sig_sig_s0", "μ₊ᵀW_QW_Kᵀμ₊"), ("h_qk_sig_noise_s0", "μ₊ᵀW_QW_Kᵀξ₀")],
     False),
    ("logit, token-3\nquery (sample 0)", [("h_qk_other_sig_s0", "x₃ᵀW_QW_Kᵀμ₊"),
                                          ("h_qk_other_noise_s0", "x₃ᵀW_QW_Kᵀξ₀")], False),
    ("coefficients\n(docs/math.md (7.6))", [("c_gamma_plus", r"$\gamma_+$"), ("c_minus_gamma_minus", r"$-\gamma_-$"),
                                            ("c_y_rho_mean", r"mean over $i$ of $y_i\,\rho_i$")], False),
)
STYLES = ({"ls": "-", "lw": 2.4}, {"ls": "--", "lw": 1.6}, {"ls": "-", "lw": 1.5})   # curves that coincide stay visible


def load_runs(folder) -> tuple[dict, dict]:
    """(manifest, {regime name: [run dict, ...]}) from a dynamics folder, every file checked."""
    meta, runs = load_checked_runs(Path(folder))
    return meta, {name: [_with_derived(*run) for run in rs] for name, rs in runs.items()}


def _with_derived(summary: dict, run: dict) -> dict:
    """The run's arrays and its ``summary``, with plot-ready coefficient curves from the c_* arrays."""
    run["summary"] = summary
    if "c_gamma_minus" in run:
        run["c_minus_gamma_minus"] = -run["c_gamma_minus"]
    if "c_y_rho" in run and "c_y_rho_mean" not in run:
        run["c_y_rho_mean"] = np.asarray(run["c_y_rho"]).reshape(len(run["step"]), -1).mean(axis=1)
    return run


def band(ax, t, Y: np.ndarray, k: float, label: str, color, log: bool, **line) -> None:
    """Mean over runs (rows of Y) with a mean ± k·std band; ``line`` styles the mean curve."""
    m, s = np.nanmean(Y, axis=0), np.nanstd(Y, axis=0)
    lo = m - k * s
    if log:
        lo = np.where(lo > 0, lo, np.nan)        # a log axis cannot show the band's non-positive part
    ax.plot(t, m, color=color, label=label, **({"lw": 1.5} | line))
    ax.fill_between(t, lo, m + k * s, color=color, alpha=0.25, lw=0)


def figure3(dyn_dir, out, k: float = 2.0, dpi: int = 110) -> Path:
    """Draw Figure 3 from a saved dynamics folder into ``out``: mean ± k·std over runs (the authors drew k = 1)."""
    meta, runs = load_runs(dyn_dir)
    names = list(runs)
    fig, axes = plt.subplots(len(ROWS), len(names), figsize=(6.2 * len(names), 2.7 * len(ROWS)),
                             constrained_layout=True, squeeze=False)
    d = meta["data"]
    for c, (name, mu) in enumerate(meta["regimes"]):
        rs = runs[name]
        t = rs[0]["step"]
        n_snr2 = d["N"] * mu ** 2 / (d["sigma_p"] ** 2 * d["d"])
        for r, (title, series, log) in enumerate(ROWS):
            ax = axes[r, c]
            drawn = 0
            for j, (key, label) in enumerate(series):
                if not all(key in run for run in rs):
                    continue
                Y = np.stack([run[key] for run in rs])          # (runs, steps+1)
                band(ax, t, Y, k, label, f"C{j}", log, **STYLES[j])
                drawn += 1
            if drawn == 0:
                ax.text(0.5, 0.5, "not in these runs: coefficients are tracked for GD only", ha="center",
                        va="center", transform=ax.transAxes, fontsize=8, color="0.4")
            else:
                ax.legend(fontsize=8)
            if log:
                ax.set_yscale("log")
            if r == 0:
                ax.set_title(f"{name} regime: ‖μ‖ = {mu}, N·SNR² = {n_snr2:.3g}", fontsize=11)
            if c == 0:
                ax.set_ylabel(title, fontsize=9)
            if r == len(ROWS) - 1:
                ax.set_xlabel("training iterations t")
    s0 = runs[names[0]][0]["summary"]
    fig.suptitle(f"Training dynamics ({meta['name']} preset): M={d['M']}, d={d['d']}, N={d['N']}, noise std "
                 f"{d['sigma_p']:g}, step size {meta['train']['lr']:g}, {s0['steps']} steps\n"
                 f"mean ± {k:g}·std over {len(runs[names[0]])} runs (the authors' code drew ±1 std)", fontsize=11)
    return save_figure(fig, out, dpi)


@one_line_errors   # a missing or damaged results file: one line, status 2
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dyn_dir", help="folder written by refvit.jiang2024.dynamics.run_dynamics")
    p.add_argument("--out", default="figures/figure3.png", help="output PNG")
    p.add_argument("--k", type=float, default=2.0, help="band half-width in standard deviations (authors: 1)")
    p.add_argument("--dpi", type=int, default=110)
    a = p.parse_args(argv)
    print(f"wrote {figure3(a.dyn_dir, a.out, a.k, a.dpi)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
