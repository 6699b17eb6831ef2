"""The fitted benign/harmful boundary (docs/math.md §11): logistic regression of the benign indicator on log N, log SNR.

    P(benign | N, SNR) = σ(β₀ + β₁ log N + β₂ log SNR),      benign := converged run with test loss < 0.2

The 50 % contour β₀ + β₁ log N + β₂ log SNR = 0 is the curve **N·SNR^a = C** with a = β₂/β₁ and C = exp(−β₀/β₁).
The theory predicts a = 2 (N·SNR² ≍ 1, docs/math.md §9.1); the authors draw N·SNR_axis² = 1000 (docs/math.md §10.1),
i.e. C = 2.5 with the SNR of the noise token (docs/math.md §1.4). SNR here is the theory's ‖μ‖/(σ_p √d); the same fit in the
axis convention SNR_axis = SNR·σ_p/σ_axis has the same a and C_axis = C·(σ_p/σ_axis)^a.

Estimator: exact maximum likelihood (Newton's method), with no penalty. On (quasi-)separable labels — a line in
(log N, log SNR) that puts every benign run on one side — the likelihood has no maximum: the coefficients grow
without bound and any finite answer would be one a penalty invented. That case is detected exactly (a linear
program) and reported as ``separable``; ``method="firth"`` (Firth's bias-reduced penalized likelihood, finite on
separable data) is then available as a stated alternative. The width of the transition: at fixed N the benign
probability goes from 10 % to 90 % over Δ log SNR = 2·ln 9 / β₂, i.e. ‖μ‖₉₀/‖μ‖₁₀ = 9^(2/β₂) at every N, and
Δ log(N·SNR²) = 4·ln 9 / β₂.

Confidence intervals: percentile bootstrap over runs (resampled with replacement; an explicit Generator).
Resamples without both classes, (for MLE) separable ones, and those where Newton's method does not converge have
no estimate; they are counted, not hidden.
Non-converged runs are left out (the authors stored them as NaN, docs/math.md §10.1), and so are runs whose test
loss is not finite (``refvit.results.counted``, the one rule for which runs count, which the figures use too);
``fit["excluded"]`` counts the runs left out by status (e.g. max_steps, diverged, overflow, nonfinite_test) and
``describe`` prints those counts.

The estimators here know no setting: ``refvit.jiang2024.boundary`` fits a saved Figure-1 sweep folder with them
(``refvit fit SWEEP_DIR``), and the other settings' studies call ``fit_boundary`` and ``fit_threshold`` directly.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linprog
from scipy.special import expit

from .primitives import logistic_loss

METHODS = ("mle", "firth")
WIDTH_LOG = 2.0 * math.log(9.0)     # logit(0.9) − logit(0.1): the 10 %–90 % range of a logistic in its argument


class FitDidNotConverge(ValueError):
    """Newton's method did not reach the score tolerance in 200 steps (near-separated labels, or Firth's fit on
    labels no line explains)."""


def is_separable(F: np.ndarray, b: np.ndarray) -> bool:
    """True when some non-zero w puts every label on its side: sgn_i·(w₀ + F_i·w) ≥ 0 for all i (quasi-complete
    separation included). Then the logistic likelihood has no finite maximum (Albert & Anderson 1984).

    Linear program (``separation_margin``): maximize Σ_i sgn_i·g_iᵀw subject to sgn_i·g_iᵀw ≥ 0 and |w| ≤ 1
    (standardized features); the optimum is > 0 exactly when such a w exists.
    """
    margin = separation_margin(F, b)
    # 1e-7 on a sum of n terms of size ≤ |g|·|w| ~ 1: far above the LP's 1e-9 feasibility tolerance, far below
    # the smallest margin a real separating direction leaves on a finite grid
    return margin is not None and margin > 1e-7


def separation_margin(F: np.ndarray, b: np.ndarray) -> float | None:
    """The optimum of ``is_separable``'s linear program (None when the solver finds none; 0.0 for no rows)."""
    if len(b) == 0:
        return 0.0
    G = _design(F)[0]
    A = (2.0 * b - 1.0)[:, None] * G                          # rows sgn_i·g_i
    # Repeated rows (a grid's runs, a bootstrap resample) are one constraint each, weighted in the objective by how
    # often they occur: the same LP, several times smaller on a sweep's table.
    A = A[np.lexsort(A.T[::-1])]                              # equal rows next to each other
    new = np.concatenate([[True], np.any(A[1:] != A[:-1], axis=1)])
    rows, count = A[new], np.diff(np.append(np.flatnonzero(new), len(A)))
    res = linprog(-(count @ rows), A_ub=-rows, b_ub=np.zeros(len(rows)), bounds=[(-1, 1)] * G.shape[1],
                  method="highs")
    return float(-res.fun) if res.status == 0 else None


def _design(F: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(G, m, s): the design [1 | (F − m)/s] with F's column means m and stds s (standardized, for conditioning)."""
    m, s = F.mean(axis=0), F.std(axis=0)
    return np.column_stack([np.ones(len(F)), (F - m) / s]), m, s


def _fit_logistic(F: np.ndarray, b: np.ndarray, method: str = "mle") -> np.ndarray:
    """β (k+1,) maximizing the log-likelihood of labels b ∈ {0,1} on features F (n, k) plus an intercept, or for
    method="firth" the Jeffreys-penalized log-likelihood ℓ(β) + ½ log det I(β). Newton's method with step halving
    on standardized features, to |score| < 1e-10·n."""
    G, m, s = _design(F)
    sgn = 2.0 * b - 1.0

    def objective(w):
        z = G @ w
        val = -np.sum(logistic_loss(sgn * z))                # Σ log σ(sgn·z), the log-likelihood
        p = expit(z)
        info = G.T @ (G * (p * (1 - p))[:, None])            # Fisher information GᵀWG
        if method == "firth":
            val += 0.5 * np.linalg.slogdet(info)[1]
        return val, p, info

    w = np.zeros(G.shape[1])
    val, p, info = objective(w)
    for _ in range(200):
        score = G.T @ (b - p)
        if method == "firth":                                 # modified score Gᵀ(b − p + h(½ − p)), h = hat values
            h = np.einsum("ij,jk,ik->i", G, np.linalg.inv(info), G) * p * (1 - p)
            score = score + G.T @ (h * (0.5 - p))
        if np.max(np.abs(score)) < 1e-10 * len(b):
            break
        step = np.linalg.solve(info, score)
        for _ in range(60):                                   # step halving keeps every step an ascent step
            new = objective(w + step)
            if new[0] >= val - 1e-12 * abs(val):
                break
            step = step / 2
        w = w + step
        val, p, info = new
    else:
        raise FitDidNotConverge("the logistic fit did not converge in 200 Newton steps; check the benign labels")
    slopes = w[1:] / s                                        # back to the original features
    return np.concatenate([[w[0] - slopes @ m], slopes])


def _bootstrap(F: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int, method: str,
               statistic) -> tuple[list, int]:
    """(values, no_estimate): ``statistic(β)`` of the fit on each of ``n_boot`` resamples of the runs (with
    replacement). A resample with one class, a constant feature, (for MLE) separable labels, on which Newton's
    method does not converge, or whose statistic is not finite (a slope of 0 puts a threshold at infinity) has no
    estimate: it is counted in ``no_estimate``, not hidden."""
    boots, none = [], 0
    for _ in range(n_boot):
        idx = rng.integers(0, len(b), size=len(b))
        Fi, bi = F[idx], b[idx]
        if bi.min() == bi.max() or np.any(Fi.min(axis=0) == Fi.max(axis=0)) or \
                (method == "mle" and is_separable(Fi, bi)):
            none += 1
            continue
        try:
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):   # judged right below
                value = statistic(_fit_logistic(Fi, bi, method))
        except FitDidNotConverge:
            none += 1
            continue
        if np.all(np.isfinite(value)):
            boots.append(value)
        else:
            none += 1
    return boots, none


def _relation(beta: np.ndarray) -> tuple[float, float, float]:
    """(a, log C, width in log SNR) of the contour N·SNR^a = C and its 10 %–90 % band, from β = (β₀, β₁, β₂)."""
    b0, b1, b2 = beta
    return float(b2 / b1), float(-b0 / b1), float(WIDTH_LOG / b2)


def fit_boundary(N, snr, benign, rng: np.random.Generator, n_boot: int = 1000, level: float = 0.95,
                 method: str = "mle", sigma_ratio: float | None = None) -> dict:
    """Fit N·SNR^a = C to benign indicators.

    Parameters
    ----------
    N, snr, benign : (n,) arrays — training-set size, SNR (theory convention), 0/1 (or bool) benign indicator.
    rng : Generator for the bootstrap.   n_boot : resamples (0: no intervals).   level : CI coverage.
    method : "mle" (exact maximum likelihood) or "firth" (bias-reduced, finite on separable labels).
    sigma_ratio : σ_p/σ_axis; if given, C_axis = C·ratio^a is reported as well (20 for Figure 1).

    Returns a JSON-able dict: method, separable, a, C, log_C, beta (β₀, β₁, β₂), width_log_snr (Δ log SNR from
    10 % to 90 % benign at fixed N), width_log_n_snr2 (the same in log N·SNR²), mu_ratio_10_90 (‖μ‖₉₀/‖μ‖₁₀),
    n, n_benign; with n_boot the intervals ci_a, ci_C, ci_width_log_snr (percentile, ``level``) and
    n_boot_used / n_boot_no_estimate; C_axis / ci_C_axis when ``sigma_ratio`` is given. For separable labels
    under "mle" the estimates are None and ``message`` says why.
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
    if method not in METHODS:
        raise ValueError(f"unknown fit method {method!r}; choose one of {', '.join(map(repr, METHODS))}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise ValueError(f"n_boot must be a whole number >= 0 (0: no intervals), got {n_boot!r}")
    F = np.column_stack([np.log(N), np.log(snr)])
    separable = is_separable(F, b)
    out = {"method": method, "separable": separable, "n": int(len(b)), "n_benign": int(b.sum()), "level": level,
           "n_boot": int(n_boot)}
    if separable and method == "mle":
        out.update(a=None, C=None, log_C=None, beta=None, width_log_snr=None, width_log_n_snr2=None,
                   mu_ratio_10_90=None, message="the benign labels are separable by a line in (log N, log SNR): "
                   "the maximum-likelihood boundary is not finite (its transition width is zero); "
                   "method='firth' gives a finite bias-reduced estimate")
        return out
    beta = _fit_logistic(F, b, method)
    a, log_C, width = _relation(beta)
    if not (abs(log_C) < 700 and abs(width) < 700):      # exp() of these would overflow float64 (~7.1e2)
        raise ValueError(f"the {method} fit's boundary has no finite C (log C = {log_C:.3g}, β = {beta.tolist()}): "
                         "the benign labels barely depend on N or SNR on this grid; widen the grid of N and ‖μ‖")
    out.update(a=a, C=math.exp(log_C), log_C=log_C, beta=[float(x) for x in beta], width_log_snr=width,
               width_log_n_snr2=2 * width, mu_ratio_10_90=math.exp(width))
    if n_boot:
        boots, none = _bootstrap(F, b, rng, n_boot, method, _relation)
        if not boots:
            raise ValueError(f"none of the {n_boot} bootstrap resamples has a finite estimate (one class, a "
                             "constant N or SNR, separable labels, or no convergence); use more runs, "
                             "method='firth' or n_boot=0")
        A = np.array(boots)                    # (n_ok, 3): a, log C, width
        q = [(1 - level) / 2, (1 + level) / 2]
        out["ci_a"] = [float(x) for x in np.quantile(A[:, 0], q)]
        out["ci_C"] = [float(math.exp(x)) for x in np.quantile(A[:, 1], q)]
        out["ci_width_log_snr"] = [float(x) for x in np.quantile(A[:, 2], q)]
        out["n_boot_used"], out["n_boot_no_estimate"] = int(len(A)), int(none)
    if sigma_ratio is not None:
        out["sigma_ratio"] = float(sigma_ratio)
        out["C_axis"] = out["C"] * sigma_ratio ** a
        if n_boot:
            c_axis = np.exp(A[:, 1] + A[:, 0] * math.log(sigma_ratio))
            out["ci_C_axis"] = [float(x) for x in np.quantile(c_axis, q)]
    return out


def _one_variable(x, good, name: str) -> tuple[np.ndarray, np.ndarray, dict, str]:
    """(F = log x as an (n, 1) design, b, the counts, why there is nothing to fit or "") for a 1-D logistic fit."""
    x, b = np.asarray(x, dtype=np.float64), np.asarray(good, dtype=np.float64)
    if x.ndim != 1 or x.shape != b.shape or not np.all(np.isfinite(x)) or np.any(x <= 0) or \
            not np.all((b == 0) | (b == 1)):
        raise ValueError(f"{name} must be finite and positive and the labels 0/1, as 1-D arrays of one length")
    F = np.log(x)[:, None]
    counts = {"n": int(len(b)), "n_benign": int(b.sum())}
    why = f"no runs, one class or one {name}: no transition to fit" if (
        len(b) == 0 or b.min() == b.max() or np.ptp(F) == 0) else ""
    return F, b, counts, why


def fit_width(snr, benign, rng: np.random.Generator, n_boot: int = 1000, level: float = 0.95) -> dict:
    """The transition width at one N: P(benign) = σ(β₀ + β log SNR) by exact maximum likelihood, and its width
    w = 4·ln 9 / β in log(N·SNR²) (docs/math.md (12.4) with β for β₂), with a percentile-bootstrap interval.

    snr, benign : (n,) arrays of one training-set size. Returns width, ci_width (None without n_boot or estimates),
    separable (then width is None: the transition is sharper than the grid resolves), n, n_benign,
    n_boot_no_estimate (resamples with one class, one SNR, separable labels or no convergence) and message (why
    width is None, else "").
    """
    F, b, counts, why = _one_variable(snr, benign, "snr")
    out = {**counts, "width": None, "ci_width": None, "separable": False, "n_boot_no_estimate": 0, "message": ""}
    if why:
        return {**out, "message": why}
    if is_separable(F, b):
        return {**out, "separable": True, "message": "separable: sharper than the grid resolves"}
    try:
        out["width"] = float(2 * WIDTH_LOG / _fit_logistic(F, b)[1])
    except FitDidNotConverge as e:
        return {**out, "message": str(e)}
    boots, out["n_boot_no_estimate"] = _bootstrap(F, b, rng, n_boot, "mle", lambda beta: 2 * WIDTH_LOG / beta[1])
    if boots:
        out["ci_width"] = [float(x) for x in np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])]
    return out


def fit_threshold(x, good, rng: np.random.Generator, n_boot: int = 1000, level: float = 0.95) -> dict:
    """The value of x where runs start to generalize: P(good) = σ(β₀ + β₁ log x) by exact maximum likelihood, and its
    50 % point x* = exp(−β₀/β₁) with a percentile-bootstrap interval (docs/math.md (15.3)).

    x, good : (n,) arrays (e.g. the SNR of each run and whether its test error is small). Returns threshold and
    ci_threshold (None without estimates), separable, bracket (for separable labels that increase with x: the
    largest x of a bad run and the smallest x of a good one, between which any threshold fits; equal ends when both
    kinds of run occur at that one x and nowhere else), n, n_benign (good
    runs), n_boot_no_estimate and message (why threshold is None, else "").
    """
    F, b, counts, why = _one_variable(x, good, "x")
    out = {**counts, "threshold": None, "ci_threshold": None, "separable": False, "bracket": None,
           "n_boot_no_estimate": 0, "message": ""}
    if why:
        return {**out, "message": why}
    if is_separable(F, b):
        xs = np.exp(F[:, 0])
        lo, hi = float(xs[b == 0].max()), float(xs[b == 1].min())
        return {**out, "separable": True, "bracket": [lo, hi] if lo <= hi else None,
                "message": "separable: every threshold between the bracket's ends fits" if lo < hi else (
                    "quasi-separable: every run below the bracket's value fails, every run above it succeeds, and "
                    "both happen at it" if lo == hi else "separable the other way: the good runs have the smaller x")}
    try:
        beta = _fit_logistic(F, b)
    except FitDidNotConverge as e:
        return {**out, "message": str(e)}
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):      # judged right below
        threshold = float(np.exp(-beta[0] / beta[1]))
    if not math.isfinite(threshold) or threshold == 0:
        return {**out, "message": f"the fitted slope in log x is {beta[1]:.3g}: no threshold within float64"}
    out["threshold"] = threshold
    boots, out["n_boot_no_estimate"] = _bootstrap(F, b, rng, n_boot, "mle", lambda c: np.exp(-c[0] / c[1]))
    if boots:
        out["ci_threshold"] = [float(v) for v in np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])]
    return out


def _describe_one(fit: dict) -> str:
    s = f"N*SNR^a = C: a = {fit['a']:.3f}"
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
    s += f"; transition 10%-90% benign: |mu|_90/|mu|_10 = {fit['mu_ratio_10_90']:.3g}"
    if "ci_width_log_snr" in fit:
        lo, hi = (math.exp(x) for x in fit["ci_width_log_snr"])
        s += f" [{lo:.3g}, {hi:.3g}]"
    return s


def describe(fit: dict) -> str:
    """One line: the fitted relation with its intervals in both SNR conventions, and the transition width."""
    if fit.get("n_boot"):
        tail = f"; {int(100 * fit['level'])}% bootstrap CIs, {fit['n']} runs, {fit['n_benign']} benign"
    else:
        tail = f"; no intervals (n_boot = 0), {fit['n']} runs, {fit['n_benign']} benign"
    if fit.get("excluded"):
        tail += "; excluded: " + ", ".join(f"{n} {status}" for status, n in sorted(fit["excluded"].items()))
    if fit.get("n_boot_no_estimate"):
        tail += f"; {fit['n_boot_no_estimate']} of {fit['n_boot']} resamples had no estimate"
    if fit["a"] is None:
        s = "fitted boundary: the benign labels are separable, so the maximum-likelihood boundary is not finite"
        if "firth" in fit:
            s += "; Firth's bias-reduced fit: " + _describe_one(fit["firth"])
        return s + tail
    return f"fitted boundary ({fit['method']}) " + _describe_one(fit) + tail


if __name__ == "__main__":    # the estimators have no command of their own; a sweep folder is fitted by `refvit fit`
    raise SystemExit("refvit.fit holds the estimators; fit a saved sweep folder with `refvit fit SWEEP_DIR` "
                     "(or `python -m refvit.cli fit SWEEP_DIR`)")
