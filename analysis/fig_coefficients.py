"""Draw the coefficient figure (docs/math.md (7.6), (7.7)): γ₊, γ₋, the distribution of y_iρ_i, attention, from a
saved file.

    python -m refvit.analysis.fig_coefficients results/coefficients_figure1_N20_mu80.npz --out figures/c.png

The results file is written by ``refvit coefficients train`` or ``weights`` (``refvit/jiang2024/coefficients.py``); this
script only reads it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refvit.io import one_line_errors, save_figure  # noqa: E402
from refvit.jiang2024.saved import load_coefficients  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# Draw (reads a saved results file only)
# ---------------------------------------------------------------------------------------------------------------

def draw(results_file, out) -> Path:
    """Draw the coefficient figure from a results file written by ``train_and_save`` or ``weights_and_save``."""
    meta, r = load_coefficients(results_file)      # checked: a file of another kind or a damaged one is named
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
        ax[1].set_ylabel("noise coefficient y_i ρ_i")
        abar = r["h_abar"]                                                 # (T, N, M)
        for j, (name, c) in enumerate((("signal token", "C0"), ("noise token", "C3"))):
            m, sd = abar[:, :, j].mean(axis=1), abar[:, :, j].std(axis=1)
            ax[3].plot(t, m, color=c, label=f"ā on {name} (mean ± std over samples)")
            ax[3].fill_between(t, m - sd, m + sd, color=c, alpha=0.2)
        ax[3].axhline(1 / abar.shape[2], color="grey", ls=":", lw=0.8, label="uniform 1/M")
        ax[3].set_ylim(0, 1)
        ax[3].set_title("attention on the signal and noise tokens")
        ax[3].set_ylabel("attention weight ā")
        Z2 = r["h_Z2"]                                                     # (T, N, 2, 2)
        for (a, b), lab in (((0, 0), "μᵀWμ"), ((0, 1), "μᵀWξ_i"), ((1, 0), "ξ_iᵀWμ"), ((1, 1), "ξ_iᵀWξ_i")):
            ax[4].plot(t, Z2[:, :, a, b].mean(axis=1), label=f"{lab} (mean over i)")
        ax[4].set_title("attention logits between token types, W = W_Q W_Kᵀ")
        ax[4].set_ylabel("logit (mean over samples i)")
        ax[5].semilogy(np.arange(r["train_loss"].size), r["train_loss"], label="train loss")
        ax[5].axhline(meta["test_loss"], color="C3", ls="--", label=f"test loss at the end {meta['test_loss']:.3f}")
        ax[5].set_title("training loss")
        ax[5].set_ylabel("logistic loss (log scale)")
        for a in ax[[0, 1, 3, 4, 5]]:
            a.set_xlabel("step t")
    else:
        for a in ax[[0, 1, 3, 4, 5]]:
            a.text(0.5, 0.5, "no time series:\ndecomposed from two weight snapshots", ha="center", va="center",
                   transform=a.transAxes)
        ax[0].bar(["γ₊", "−γ₋"], [r["recovered_gamma_plus"], -r["recovered_gamma_minus"]])
    ax[0].set_title("signal coefficients γ₊, −γ₋ (docs/math.md (7.6))")
    ax[0].set_ylabel("signal coefficient")
    finite = final_rho[np.isfinite(final_rho)]
    ax[2].hist(finite, bins=max(5, y.size // 2), color="C2", alpha=0.7, label="y_i ρ_i")
    hi = 3 * max(np.abs(finite).max(initial=0.0), 1e-300)
    for g, lab, c in ((r["recovered_gamma_plus"], "γ₊", "C0"), (-r["recovered_gamma_minus"], "−γ₋", "C1")):
        if abs(g) <= hi:                                                   # on the histogram's scale
            ax[2].axvline(g, color=c, label=lab)
    ax[2].set_title(f"final y_i ρ_i, recovered from W(0), W(t)\n(γ₊ = {float(r['recovered_gamma_plus']):.3g}, "
                    f"−γ₋ = {-float(r['recovered_gamma_minus']):.3g})")
    ax[2].set_xlabel("noise coefficient y_i ρ_i at the end")
    ax[2].set_ylabel("number of training samples")
    for a in ax:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    res = max(meta.get("residual_recovered", {}).values(), default=float("nan"))
    agree = meta.get("tracked_vs_recovered")
    title = f"{meta['setting']}: N={meta['N']}"
    if "mu_norm" in meta:
        title += (f", ‖μ‖={meta['mu_norm']:g}, N·SNR²={meta['N_snr2']:.3g} (SNR = ‖μ‖/(σ_p·√d)), {meta['steps']} steps "
                  f"({meta['status']}), w_O {'trained' if meta['train_w_O'] else 'frozen'}")
    title += f"\nreconstruction residual {res:.1e}"
    if agree:
        title += f"; tracked vs recovered max rel diff {max(agree.values()):.1e}"
    fig.suptitle(title)
    return save_figure(fig, out)


@one_line_errors   # a missing or damaged results file: one line, status 2
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="results .npz written by `refvit coefficients train` or `weights`")
    p.add_argument("--out", default=None, help="figure path (default: figures/<results name>.png)")
    a = p.parse_args(argv)
    out = a.out or str(Path("figures") / f"{Path(a.file).stem}.png")
    print(f"wrote {draw(a.file, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
