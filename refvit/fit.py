"""The fitted benign/harmful boundary: logistic regression of the benign indicator on log N and log SNR.

    P(benign | N, SNR) = σ(β₀ + β₁ log N + β₂ log SNR),      benign := converged run with test loss < 0.2

The 50 % contour β₀ + β₁ log N + β₂ log SNR = 0 is the curve **N·SNR^a = C** with a = β₂/β₁ and C = exp(−β₀/β₁).
The theory predicts a = 2 (N·SNR² ≍ 1, PAPER §5.4, §6.1); the authors draw N·SNR_axis² = 1000 (PAPER §7.1), i.e.
C ≈ 2.5 with the SNR of the noise token (PAPER §1.3). SNR here is the theory's ‖μ‖/(σ_p √d); the same fit in the
axis convention SNR_axis = SNR·σ_p/σ_axis has the same a and C_axis = C·(σ_p/σ_axis)^a.

Confidence intervals: percentile bootstrap over runs (resampled with replacement; an explicit Generator).
Non-converged runs are left out (the authors stored them as NaN, PAPER §7.1). A tiny ridge on the two slopes
(``l2``, on standardized features) keeps the fit finite when a coarse grid separates the classes perfectly;
it then returns the maximum-margin-like direction, which still gives a and C.

``python -m refvit.fit SWEEP_DIR`` fits a saved sweep (table.csv + sweep.json), prints and writes fit.json.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from .config import BENIGN_LOSS
from .io import load_json, read_columns, save_json
from .model import logistic_loss, logistic_loss_derivative


def _fit_logistic(F: np.ndarray, b: np.ndarray, l2: float) -> np.ndarray:
    """Minimize mean logistic loss of labels b ∈ {0,1} on features F (n, k) plus intercept; returns β (k+1,).

    Features are standardized inside (for conditioning); the ridge acts on the standardized slopes only.
    """
    m, s = F.mean(axis=0), F.std(axis=0)
    G = np.column_stack([np.ones(len(F)), (F - m) / s])       # (n, k+1)
    sgn = 2.0 * b - 1.0                                       # labels ±1

    def obj(w):
        z = sgn * (G @ w)
        loss = np.mean(logistic_loss(z)) + 0.5 * l2 * w[1:] @ w[1:]
        grad = G.T @ (sgn * logistic_loss_derivative(z)) / len(z)     # d/dw mean ℓ(z) = mean(ℓ'(z) sgn G)
        grad[1:] += l2 * w[1:]
        return loss, grad

    res = minimize(obj, np.zeros(G.shape[1]), jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 1000})
    # BFGS often stops with "precision loss" at the optimum of this smooth convex problem; judge by the gradient.
    if np.linalg.norm(res.jac) > 1e-6:
        raise ValueError(f"the logistic fit did not converge ({res.message}; |gradient| = "
                         f"{np.linalg.norm(res.jac):.2g}); the benign labels may be separable by the grid")
    w = res.x
    slopes = w[1:] / s                                        # back to the original features
    return np.concatenate([[w[0] - slopes @ m], slopes])


def _relation(beta: np.ndarray) -> tuple[float, float]:
    """(a, log C) of the contour N·SNR^a = C from β = (β₀, β₁, β₂)."""
    b0, b1, b2 = beta
    return float(b2 / b1), float(-b0 / b1)


def fit_boundary(N, snr, benign, rng: np.random.Generator, n_boot: int = 1000, level: float = 0.95,
                 l2: float = 1e-4, sigma_ratio: float | None = None) -> dict:
    """Fit N·SNR^a = C to benign indicators.

    Parameters
    ----------
    N, snr, benign : (n,) arrays — training-set size, SNR (theory convention), 0/1 (or bool) benign indicator.
    rng : Generator for the bootstrap.   n_boot : resamples (0: no intervals).   level : CI coverage.
    sigma_ratio : σ_p/σ_axis; if given, C_axis = C·ratio^a is reported as well (20 for Figure 1).

    Returns a JSON-able dict: a, C, log_C, beta (β₀, β₁, β₂), ci_a, ci_C (percentile, ``level``), n, n_benign,
    and C_axis / ci_C_axis when ``sigma_ratio`` is given.
    """
    N, snr = np.asarray(N, dtype=np.float64), np.asarray(snr, dtype=np.float64)
    b = np.asarray(benign, dtype=np.float64)
    if not (N.shape == snr.shape == b.shape and N.ndim == 1):
        raise ValueError(f"N, snr and benign must be 1-D arrays of one length, got {N.shape}, {snr.shape}, {b.shape}")
    if np.any(N <= 0) or np.any(snr <= 0) or not np.all(np.isfinite(N * snr)):
        raise ValueError("N and snr must be positive and finite (the fit uses their logarithms)")
    if not np.all((b == 0) | (b == 1)):
        raise ValueError("benign must hold 0/1 or booleans")
    if len(np.unique(N)) < 2 or len(np.unique(snr)) < 2:
        raise ValueError("N or SNR is constant (one value only); the boundary needs at least two of each")
    if b.sum() == 0 or b.sum() == len(b):
        raise ValueError(f"all {len(b)} runs are {'benign' if b.sum() else 'harmful'}: there is no boundary to "
                         "fit; widen the grid")
    if not (0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level}")
    F = np.column_stack([np.log(N), np.log(snr)])
    beta = _fit_logistic(F, b, l2)
    a, log_C = _relation(beta)
    out = {"a": a, "C": math.exp(log_C), "log_C": log_C, "beta": [float(x) for x in beta], "n": int(len(b)),
           "n_benign": int(b.sum()), "l2": l2, "level": level, "n_boot": int(n_boot)}
    if n_boot:
        boots = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(b), size=len(b))
            if b[idx].min() == b[idx].max() or np.any(F[idx].min(axis=0) == F[idx].max(axis=0)):
                continue                      # one class, or a constant N or SNR: no boundary in it; skip it
            boots.append(_relation(_fit_logistic(F[idx], b[idx], l2)))
        if not boots:
            raise ValueError(f"none of the {n_boot} bootstrap resamples had both classes and two values of N and "
                             "SNR; use more runs or n_boot=0")
        A = np.array(boots)                    # (n_ok, 2): a, log C
        q = [(1 - level) / 2, (1 + level) / 2]
        out["ci_a"] = [float(x) for x in np.quantile(A[:, 0], q)]
        out["ci_C"] = [float(math.exp(x)) for x in np.quantile(A[:, 1], q)]
        out["n_boot_used"] = int(len(A))
    if sigma_ratio is not None:
        out["sigma_ratio"] = float(sigma_ratio)
        out["C_axis"] = out["C"] * sigma_ratio ** a
        if n_boot:
            c_axis = np.exp(A[:, 1] + A[:, 0] * math.log(sigma_ratio))
            out["ci_C_axis"] = [float(x) for x in np.quantile(c_axis, q)]
    return out


def describe(fit: dict) -> str:
    """One line: the fitted relation with its intervals in both SNR conventions."""
    s = f"fitted boundary N*SNR^a = C: a = {fit['a']:.3f}"
    if "ci_a" in fit:
        s += f" [{fit['ci_a'][0]:.3f}, {fit['ci_a'][1]:.3f}]"
    s += f", C = {fit['C']:.3g}"
    if "ci_C" in fit:
        s += f" [{fit['ci_C'][0]:.3g}, {fit['ci_C'][1]:.3g}]"
    s += " (SNR = |mu|/(sigma_p sqrt d))"
    if "C_axis" in fit:
        s += f"; axis convention C_axis = {fit['C_axis']:.4g}"
        if "ci_C_axis" in fit:
            s += f" [{fit['ci_C_axis'][0]:.4g}, {fit['ci_C_axis'][1]:.4g}]"
    s += f"; {int(100 * fit['level'])}% bootstrap CIs, {fit['n']} runs, {fit['n_benign']} benign"
    return s


def fit_sweep(sweep_dir, n_boot: int = 1000, seed: int = 0, level: float = 0.95, save: bool = True) -> dict:
    """Fit the boundary of a saved sweep (table.csv, sweep.json); writes sweep_dir/fit.json and returns the dict."""
    sweep_dir = Path(sweep_dir)
    t = read_columns(sweep_dir / "table.csv")
    meta = load_json(sweep_dir / "sweep.json")
    ok = t["converged"] & np.isfinite(t["test_loss"])
    benign = t["test_loss"][ok] < BENIGN_LOSS
    ratio = meta["data"]["sigma_p"] / meta["data"]["snr_axis_sigma"]
    # the bootstrap stream is keyed apart from every run stream (those have 3 keys)
    rng = np.random.default_rng([seed, 0xF17])
    fit = fit_boundary(t["N"][ok], t["snr"][ok], benign, rng, n_boot=n_boot, level=level, sigma_ratio=ratio)
    fit.update(benign_loss=BENIGN_LOSS, n_not_converged=int((~ok).sum()), seed=seed)
    if save:
        save_json(sweep_dir / "fit.json", fit)
    return fit


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Fit N·SNR^a = C to a saved sweep; print it and write fit.json.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("sweep_dir", help="folder with table.csv and sweep.json")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap Generator")
    p.add_argument("--level", type=float, default=0.95, help="confidence level")
    a = p.parse_args(argv)
    print(describe(fit_sweep(a.sweep_dir, a.n_boot, a.seed, a.level)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
