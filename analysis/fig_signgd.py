"""The second setting's figures (SignGD and Adam on the two-token transformer), drawn from results already loaded.

Pure drawing: the caller loads and checks the study's files; each ``figure_*`` function takes what they hold —
history runs as (summary, arrays) pairs as ``refvit.results.load_history`` returns them, table rows as
``refvit.io.read_csv`` returns them — writes one PNG atomically and returns its path. The matching ``*_fig`` function
builds the same matplotlib Figure without saving it. Every drawn artist carries a gid that says what it shows
("key_noise s=0 i=3", "mean s11", "band s11", ...), and every panel one such as "a" or "d:query_noise", so the drawn
numbers can be read back (``artist``).

Quantities (rows of a history, first axis K = recorded steps ``arrays["step"]``; s ∈ [m_k], i ∈ [n]):
    query noise ⟨w_{Q,s}, y_i ξ_i⟩, key noise ⟨w_{K,s}, y_i ξ_i⟩ (K, m_k, n); query signal ⟨w_{Q,s}, μ⟩ (K, m_k);
    mean value noise ⟨v, y_i ξ_i⟩ (K, n); softmax outputs s_{i,11} (signal query on signal key) and s_{i,21} (noise
    query on signal key) (K, n); training loss (K,); test loss (K,), NaN where not evaluated.

Figure 1, ``figure_dynamics``: SignGD dynamics at low signal (first run of the list unless said otherwise):
  (a) key noise over t = 0…2, six (s, i) pairs and the mean over all pairs; (b) mean value noise over t = 0…2 per
  sample and its mean, with the per-step increments; (c) s_{i,11}, s_{i,21}: mean over samples, band min–max over
  samples, log axes; (d) query noise, key noise and query signal over t, each curve dotted (orange) when positive at
  t = 100 and solid (blue) when not, with the two group means in bold.
Figure 2, ``figure_optimizers``: (a) SignGD and (b) Adam query noise grouped by sign at t = 100 as in 1(d); (c)
  training loss of every run (log y) with the fitted rates from rates.csv in the legend; (d) test loss at SNR ≈ 0.5 and
  ≈ 1.0 (closest SNR run) for GD, SignGD and Adam: mean over repeats, band min–max over repeats, at the steps where
  every repeat has a finite test loss.
Figure 3, ``figure_beyond``: (a) test error against SNR per optimizer (runs as dots, mean line), the fitted threshold
  SNR* (line) and its interval (span), or, when the data are separable, the bracket that holds SNR* (hatched); (b)
  Adam's ε × (β₁, β₂) sweep: test error and distance to SignGD against ε, SignGD's test error as a reference.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refvit.io import load_json, read_csv, save_figure  # noqa: E402
from refvit.li2025.study import SignGDStudy  # noqa: E402
from refvit.li2025.tables import load_part  # noqa: E402

NAMES = {"gd": "GD", "signgd": "SignGD", "adam": "Adam"}
COLORS = {"gd": "C0", "signgd": "C3", "adam": "C2"}          # the colours of analysis/fig_optimizers.py
T_SIGN = 100                                                  # the step whose signs group the curves
GROUPS = ((True, "positive", ":", "C1"), (False, "negative", "-", "C0"))   # (sign > 0 at T_SIGN, name, style, colour)
SNR_TARGETS = (0.5, 1.0)
SOFTMAX_FLOOR = 1e-30       # s_{i,21} underflows to 0 under SignGD; the log axis stops here
SHAPES = {"h_train_loss": ("K",), "h_test_loss": ("K",), "h_query_noise": ("K", "m_k", "n"),
          "h_key_noise": ("K", "m_k", "n"), "h_query_signal": ("K", "m_k"), "h_value_noise": ("K", "n"),
          "h_s11": ("K", "n"), "h_s21": ("K", "n")}


# ---------------------------------------------------------------- input checks (one-line ValueErrors)

def check_run(run, where: str, keys, optimizer: str | None = None) -> tuple[dict, dict]:
    """(summary, arrays) of one history run with the series ``keys`` of consistent shapes (``SHAPES``)."""
    if not (isinstance(run, (tuple, list)) and len(run) == 2 and all(isinstance(x, dict) for x in run)):
        raise ValueError(f"{where}: expected a (summary dict, arrays dict) pair as load_history returns, "
                         f"got {type(run).__name__}")
    summary, arrays = run
    if optimizer is not None and summary.get("optimizer") != optimizer:
        raise ValueError(f"{where}: summary optimizer is {summary.get('optimizer')!r}, expected {optimizer!r}")
    if "step" not in arrays:
        raise ValueError(f"{where}: arrays lack 'step' (the recorded steps)")
    step = np.asarray(arrays["step"])
    if step.ndim != 1 or len(step) < 2 or np.any(np.diff(step) <= 0):
        raise ValueError(f"{where}: 'step' must be an increasing (K,) array with K >= 2, got shape {step.shape}")
    dims = {"K": len(step)}
    for key in keys:
        if key not in arrays:
            raise ValueError(f"{where}: arrays lack {key!r}")
        shape, spec = np.shape(arrays[key]), SHAPES[key]
        if len(shape) != len(spec):
            raise ValueError(f"{where}: {key} has shape {shape}, expected ({', '.join(spec)})")
        for name, size in zip(spec, shape):
            if dims.setdefault(name, size) != size:
                raise ValueError(f"{where}: {key} has shape {shape}: its {name} axis is {size}, other series say "
                                 f"{dims[name]}")
    return summary, arrays


def check_rows(rows, what: str, columns) -> list[dict]:
    """A non-empty list of table rows (dicts) holding ``columns``."""
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ValueError(f"{what}: no rows (an empty table)")
    for k, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"{what}: row {k} is a {type(r).__name__}, expected a dict as read_csv returns")
        lacking = [c for c in columns if c not in r]
        if lacking:
            raise ValueError(f"{what}: row {k} lacks the column(s) {lacking}")
    return list(rows)


def row_at(arrays: dict, t: int, where: str) -> int:
    """Index of the recorded row at step ``t``."""
    hit = np.flatnonzero(np.asarray(arrays["step"]) == t)
    if not len(hit):
        raise ValueError(f"{where}: no recorded row at step {t} (the figure groups curves by their sign there)")
    return int(hit[0])


def _need(runs, what: str) -> list:
    if not isinstance(runs, (list, tuple)) or not runs:
        raise ValueError(f"{what}: no runs given")
    return list(runs)


# ---------------------------------------------------------------- drawing

def artist(ax, gid: str):
    """The artist of ``ax`` (line, collection or patch) whose gid is ``gid``; KeyError if none."""
    for a in list(ax.lines) + list(ax.collections) + list(ax.patches):
        if a.get_gid() == gid:
            return a
    raise KeyError(gid)


def panel(fig, gid: str):
    """The Axes of ``fig`` whose gid is ``gid`` ("a", "d:query_noise", ...)."""
    return next(ax for ax in fig.axes if ax.get_gid() == gid)


def _log_time(ax, end) -> None:
    ax.set_xscale("symlog", linthresh=1)          # log beyond t = 1, with t = 0 (initialization) still shown
    ax.set_xlim(0, end)
    ax.set_xlabel("step t (log axis beyond t = 1)")


def draw_grouped(ax, arrays: dict, key: str, label: str, where: str) -> dict:
    """Every curve of ``arrays[key]`` ((K, m_k, n) or (K, m_k)) over t, dotted orange when it is > 0 at t = T_SIGN and
    solid blue otherwise, thin; the mean of each group bold. Returns {"positive": mask, "negative": mask} (shape of
    one row) and, under "flipped", how many negative-at-T_SIGN curves end positive."""
    X = np.asarray(arrays[key], dtype=float)
    t = np.asarray(arrays["step"])
    pos = X[row_at(arrays, T_SIGN, where)] > 0
    name = key.removeprefix("h_")
    for idx in np.ndindex(*X.shape[1:]):
        style = GROUPS[0] if pos[idx] else GROUPS[1]
        tag = " ".join(f"{c}={v}" for c, v in zip("si", idx))
        ax.plot(t, X[(slice(None),) + idx], ls=style[2], color=style[3], lw=0.6, alpha=0.45, gid=f"{name} {tag}")
    for sign, gname, ls, color in GROUPS:
        mask = pos if sign else ~pos
        if mask.any():
            style = "dotted" if sign else "solid"
            ax.plot(t, X[:, mask].mean(axis=1), ls=ls, color=color, lw=2.4, gid=f"{gname} mean",
                    label=f"{gname} at t = {T_SIGN}: {int(mask.sum())} of {mask.size} ({style}; bold: their mean)")
    ax.axhline(0, color="0.4", lw=0.7)
    ax.axvline(T_SIGN, color="0.4", lw=0.7, ls="--")
    _log_time(ax, t[-1])
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="best")
    flipped = int(np.sum(~pos & (X[-1] > 0)))
    return {"positive": pos, "negative": ~pos, "flipped": flipped}


def _first_steps(arrays: dict, where: str) -> np.ndarray:
    """Indices of the rows at steps 0, 1, 2."""
    return np.array([row_at(arrays, t, where) for t in (0, 1, 2)])


def _run_name(summary: dict) -> str:
    return f"{NAMES.get(summary.get('optimizer'), summary.get('optimizer'))}, repeat {summary.get('repeat', '?')}"


# ---------------------------------------------------------------- Figure 1: SignGD dynamics

FIG1_KEYS = ("h_key_noise", "h_value_noise", "h_s11", "h_s21", "h_query_noise", "h_query_signal")


def dynamics_fig(runs, run: int = 0):
    """Figure 1 from SignGD dynamics runs; the per-curve panels show ``runs[run]``. Returns the Figure."""
    runs = _need(runs, "figure_dynamics runs (SignGD dynamics)")
    for k, r in enumerate(runs):
        check_run(r, f"figure_dynamics run {k}", FIG1_KEYS, optimizer="signgd")
    if not 0 <= run < len(runs):
        raise ValueError(f"figure_dynamics run must be in [0, {len(runs) - 1}], got {run}")
    s, a = runs[run]
    where = f"figure_dynamics run {run}"
    early = _first_steps(a, where)
    t = np.asarray(a["step"])
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5), constrained_layout=True)

    ax = axes[0, 0]                                          # (a) key noise, t = 0…2
    ax.set_gid("a")
    KN = np.asarray(a["h_key_noise"], dtype=float)[early]    # (3, m_k, n)
    pairs = list(np.ndindex(*KN.shape[1:]))[:6]
    for j, (si, i) in enumerate(pairs):
        ax.plot(t[early], KN[:, si, i], marker="o", ms=4, lw=1.2, color=f"C{j}", gid=f"key_noise s={si} i={i}",
                label=f"(s, i) = ({si}, {i})")
    mean = KN.reshape(3, -1).mean(axis=1)
    ax.plot(t[early], mean, marker="s", color="k", lw=2.4, gid="mean key_noise",
            label=f"mean over all {KN[0].size} pairs")
    dk = np.abs(KN - KN[0]).max()
    ax.set_title(f"(a) key noise ⟨w_K,s, y_i ξ_i⟩ over t = 0…2\nlargest change from t = 0: {dk:.3g}", fontsize=10)
    ax.set_xlabel("step t")
    ax.set_ylabel("⟨w_K,s, y_i ξ_i⟩")
    ax.set_xticks([0, 1, 2])

    ax = axes[0, 1]                                          # (b) mean value noise, t = 0…2
    ax.set_gid("b")
    VN = np.asarray(a["h_value_noise"], dtype=float)[early]  # (3, n)
    for i in range(VN.shape[1]):
        ax.plot(t[early], VN[:, i], color="0.6", lw=0.8, alpha=0.6, gid=f"value_noise i={i}",
                label="each sample i" if i == 0 else None)
    m = VN.mean(axis=1)
    inc = np.diff(m)
    ax.plot(t[early], m, color="C3", marker="o", lw=2.4, gid="mean value_noise",
            label=f"mean over the {VN.shape[1]} samples; increments {inc[0]:.3g}, {inc[1]:.3g} per step")
    ax.set_title("(b) mean value noise ⟨v, y_i ξ_i⟩ over t = 0…2", fontsize=10)
    ax.set_xlabel("step t")
    ax.set_ylabel("⟨v, y_i ξ_i⟩")
    ax.set_xticks([0, 1, 2])

    ax = axes[0, 2]                                          # (c) softmax outputs
    ax.set_gid("c")
    lows = []
    for key, name, color in (("h_s11", "s_i,11: signal query → signal key", "C2"),
                             ("h_s21", "s_i,21: noise query → signal key", "C4")):
        S = np.asarray(a[key], dtype=float)                  # (K, n)
        tag = key.removeprefix("h_")
        ax.fill_between(t, S.min(axis=1), S.max(axis=1), color=color, alpha=0.2, lw=0, gid=f"band {tag}")
        ax.plot(t, S.mean(axis=1), color=color, lw=2, gid=f"mean {tag}", label=name)
        lows.append(S[S > 0].min() if (S > 0).any() else SOFTMAX_FLOOR)
    ax.axhline(0.5, color="0.4", lw=0.8, ls=":", label="1/2")
    ax.set_yscale("log")
    ax.set_ylim(max(min(lows) / 3, SOFTMAX_FLOOR), 1.0)
    _log_time(ax, t[-1])
    ax.set_ylabel(f"softmax output (log; axis stops at {SOFTMAX_FLOOR:g})")
    ax.set_title(f"(c) softmax outputs over t = 0…{t[-1]}\nmean over the {S.shape[1]} samples i, band: min–max over i",
                 fontsize=10)

    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5)

    flips = []
    for ax, key, label in zip(axes[1], ("h_query_noise", "h_key_noise", "h_query_signal"),
                              ("query noise ⟨w_Q,s, y_i ξ_i⟩", "key noise ⟨w_K,s, y_i ξ_i⟩",
                               "query signal ⟨w_Q,s, μ⟩")):
        name = key.removeprefix("h_")
        ax.set_gid(f"d:{name}")
        g = draw_grouped(ax, a, key, label, where)
        flips.append(g["flipped"])
        per = "(s, i)" if np.ndim(g["positive"]) == 2 else "s"
        ax.set_title(f"(d) {label.split(' ⟨')[0]}, one curve per {per}\nnegative at t = {T_SIGN} and positive at "
                     f"t = {t[-1]}: {g['flipped']} of {int(g['negative'].sum())}", fontsize=10)
    fig.suptitle(f"SignGD dynamics ({_run_name(s)} of {len(runs)} runs, ‖μ‖ = {s.get('mu_norm', '?')}, "
                 f"lr = {s.get('lr', '?')}). Dashed grey line: t = {T_SIGN}, where the curves of (d) are grouped by "
                 "sign", fontsize=11)
    return fig


def figure_dynamics(runs, path, run: int = 0, dpi: int = 110) -> Path:
    """Draw Figure 1 (SignGD dynamics) from loaded runs into the PNG ``path``; returns ``path``."""
    return save_figure(dynamics_fig(runs, run), path, dpi)


# ---------------------------------------------------------------- Figure 2: SignGD against Adam (and GD)

RATE_COLUMNS = ("optimizer", "repeat", "rate", "r2_linear", "power", "r2_power", "better")


def _by_optimizer(runs, what: str, keys, need) -> dict:
    out = {}
    for k, r in enumerate(runs):
        s, _ = check_run(r, f"{what} run {k}", keys)
        out.setdefault(s.get("optimizer"), []).append(r)
    missing = [o for o in need if o not in out]
    if missing:
        raise ValueError(f"{what}: no runs of {', '.join(NAMES[o] for o in missing)} (optimizer "
                         f"{' / '.join(repr(o) for o in missing)})")
    return out


def rate_label(opt: str, rows: list[dict], n_runs: int) -> str:
    """Legend text: median (over repeats) linear rate and power with their R², and how often each fit was better."""
    rows = [r for r in rows if r["optimizer"] == opt]
    rate = np.array([r["rate"] for r in rows], dtype=float)
    power = np.array([r["power"] for r in rows], dtype=float)
    ok = np.isfinite(rate) & np.isfinite(power)
    if not ok.any():
        return f"{NAMES[opt]} ({n_runs} runs): no rate fit"
    med = lambda key: float(np.median([r[key] for r, g in zip(rows, ok) if g]))   # noqa: E731
    lin = sum(r["better"] == "linear" for r, g in zip(rows, ok) if g)
    return (f"{NAMES[opt]} ({n_runs} runs): log L ≈ a − r·t, r = {med('rate'):.3g}/step (R² {med('r2_linear'):.3f});"
            f" log L ≈ b − p·log t, p = {med('power'):.3g} (R² {med('r2_power'):.3f}); linear fits better in "
            f"{lin} of {int(ok.sum())}")


def closest_snr(values, target: float) -> float:
    """The value closest to ``target`` on a log scale (SNR grids are geometric)."""
    values = sorted(set(values))
    return min(values, key=lambda v: abs(math.log(v / target)))


def loss_band(runs: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) of the test loss over repeats, at the steps where every repeat has a finite value."""
    common = None
    for _, a in runs:
        t = np.asarray(a["step"])
        ok = set(t[np.isfinite(np.asarray(a["h_test_loss"], dtype=float))].tolist())
        common = ok if common is None else common & ok
    steps = np.array(sorted(common), dtype=int)
    Y = np.array([[float(np.asarray(a["h_test_loss"])[np.flatnonzero(np.asarray(a["step"]) == t)[0]]) for t in steps]
                  for _, a in runs]).reshape(len(runs), len(steps))
    return steps, Y.mean(axis=0), Y.min(axis=0), Y.max(axis=0)


def optimizers_fig(dyn_runs, snr_runs, rates):
    """Figure 2 from dynamics runs (SignGD and Adam), SNR runs (GD, SignGD, Adam) and rates.csv rows."""
    dyn = _by_optimizer(_need(dyn_runs, "figure_optimizers dyn_runs"), "figure_optimizers dyn_runs",
                        ("h_query_noise", "h_train_loss"), ("signgd", "adam"))
    snr = _by_optimizer(_need(snr_runs, "figure_optimizers snr_runs"), "figure_optimizers snr_runs",
                        ("h_test_loss",), ("gd", "signgd", "adam"))
    for k, (s, _) in enumerate(snr_runs):
        if not (isinstance(s.get("snr"), (int, float)) and s["snr"] > 0):
            raise ValueError(f"figure_optimizers snr_runs run {k}: summary 'snr' must be a number > 0, "
                             f"got {s.get('snr')!r}")
    rates = check_rows(rates, "figure_optimizers rates (rates.csv)", RATE_COLUMNS)
    missing = [NAMES[o] for o in ("signgd", "adam") if not any(r["optimizer"] == o for r in rates)]
    if missing:
        raise ValueError(f"figure_optimizers rates (rates.csv): no rows of {', '.join(missing)}")

    fig, axes = plt.subplots(2, 2, figsize=(15, 10.5), constrained_layout=True)
    for ax, opt, letter in ((axes[0, 0], "signgd", "a"), (axes[0, 1], "adam", "b")):
        s, a = dyn[opt][0]
        ax.set_gid(letter)
        g = draw_grouped(ax, a, "h_query_noise", "query noise ⟨w_Q,s, y_i ξ_i⟩", f"figure_optimizers {opt} run 0")
        ax.set_title(f"({letter}) {NAMES[opt]} query noise, one curve per (s, i) ({_run_name(s)})\n"
                     f"negative at t = {T_SIGN} and positive at t = {a['step'][-1]}: {g['flipped']} of "
                     f"{int(g['negative'].sum())}", fontsize=10)

    ax = axes[1, 0]                                          # (c) training loss
    ax.set_gid("c")
    for opt in ("signgd", "adam"):
        for k, (s, a) in enumerate(dyn[opt]):
            ax.plot(a["step"], a["h_train_loss"], color=COLORS[opt], lw=1.2, alpha=0.8,
                    gid=f"train_loss {opt} {k}", label=rate_label(opt, rates, len(dyn[opt])) if k == 0 else None)
    ax.set_yscale("log")
    ax.set_xlim(0, None)
    ax.set_xlabel("step t")
    ax.set_ylabel("training loss (log)")
    ax.set_title("(c) training loss, one line per run; legend: fits over t ≥ 10 (medians over runs)", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)

    ax = axes[1, 1]                                          # (d) test loss at two SNRs
    ax.set_gid("d")
    end = 1
    for opt in ("gd", "signgd", "adam"):
        groups = {}
        for r in snr[opt]:
            groups.setdefault(float(r[0]["snr"]), []).append(r)
        chosen = []
        for target, ls in zip(SNR_TARGETS, ("--", "-")):
            v = closest_snr(groups, target)
            if v in chosen:
                continue                                     # one SNR only: drawn once
            chosen.append(v)
            steps, m, lo, hi = loss_band(groups[v])
            if not len(steps):
                continue
            end = max(end, int(steps[-1]))
            ax.fill_between(steps, lo, hi, color=COLORS[opt], alpha=0.15, lw=0, gid=f"band {opt} snr={v:g}")
            ax.plot(steps, m, color=COLORS[opt], ls=ls, marker=".", ms=3, lw=1.6, gid=f"mean {opt} snr={v:g}",
                    label=f"{NAMES[opt]}, SNR = {v:g}: mean of {len(groups[v])} repeats")
    ax.set_yscale("log")
    _log_time(ax, end)
    ax.set_ylabel("test loss (log)")
    ax.set_title(f"(d) test loss at SNR ≈ {SNR_TARGETS[0]:g} (dashed) and ≈ {SNR_TARGETS[1]:g} (solid)\n"
                 "steps where every repeat has a test loss; band: min–max over repeats", fontsize=10)
    ax.legend(fontsize=7.5, ncol=2)
    ax.grid(alpha=0.3)
    fig.suptitle(f"SignGD against Adam (and GD): (a), (b) curves dotted orange when positive at t = {T_SIGN} "
                 "(dashed grey line), solid blue when not", fontsize=11)
    return fig


def figure_optimizers(dyn_runs, snr_runs, rates, path, dpi: int = 110) -> Path:
    """Draw Figure 2 (SignGD against Adam and GD) from loaded runs and rates.csv rows into ``path``; returns it."""
    return save_figure(optimizers_fig(dyn_runs, snr_runs, rates), path, dpi)


# ---------------------------------------------------------------- Figure 3: beyond the paper

SNR_COLUMNS = ("optimizer", "snr", "test_error")
THRESHOLD_COLUMNS = ("optimizer", "threshold", "lo", "hi", "bracket_lo", "bracket_hi")
ADAM_COLUMNS = ("adam_eps", "beta1", "beta2", "repeat", "test_error", "ref_test_error", "ref_distance")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def draw_threshold(ax, row: dict, color) -> str:
    """SNR* as a dash-dot line with its interval shaded; else the bracket that holds it, hatched (both ends finite) or
    a dotted one-sided bound; else nothing. Returns which: "threshold", "bracket", "bound" or "none"."""
    opt = NAMES.get(row["optimizer"], row["optimizer"])
    gid = row["optimizer"]
    if _finite(row["threshold"]):
        ax.axvline(row["threshold"], color=color, lw=1.8, ls="-.", gid=f"threshold {gid}",
                   label=f"{opt}: fitted SNR* = {row['threshold']:.3g}")
        if _finite(row["lo"]) and _finite(row["hi"]):
            ax.axvspan(row["lo"], row["hi"], color=color, alpha=0.12, lw=0, gid=f"interval {gid}",
                       label=f"{opt}: SNR* interval [{row['lo']:.3g}, {row['hi']:.3g}]")
        return "threshold"
    why = "separable, no fit" if row.get("separable") is True else "no fit"
    lo, hi = row["bracket_lo"], row["bracket_hi"]
    if _finite(lo) and lo == hi:            # quasi-separable: runs fail below, succeed above, and split at lo
        ax.axvline(lo, color=color, lw=1.8, ls="--", gid=f"bracket {gid}",
                   label=f"{opt} ({why}): runs split at SNR {lo:.3g}, fail below, generalize above")
        return "bracket"
    if _finite(lo) and _finite(hi):
        ax.axvspan(lo, hi, facecolor="none", edgecolor=color, hatch="//", lw=0.8, gid=f"bracket {gid}",
                   label=f"{opt} ({why}): SNR* in [{lo:.3g}, {hi:.3g}]")
        return "bracket"
    if _finite(lo) or _finite(hi):
        x, rel = (lo, "≥") if _finite(lo) else (hi, "≤")
        ax.axvline(x, color=color, lw=1.8, ls=":", gid=f"bound {gid}", label=f"{opt} ({why}): SNR* {rel} {x:.3g}")
        return "bound"
    return "none"


def beyond_fig(snr_rows, thresholds, adam_rows):
    """Figure 3 from snr.csv, thresholds.csv and adam.csv rows."""
    snr_rows = check_rows(snr_rows, "figure_beyond snr_rows (snr.csv)", SNR_COLUMNS)
    thresholds = check_rows(thresholds, "figure_beyond thresholds (thresholds.csv)", THRESHOLD_COLUMNS)
    adam_rows = check_rows(adam_rows, "figure_beyond adam_rows (adam.csv)", ADAM_COLUMNS)
    bad = [r["snr"] for r in snr_rows if not (_finite(r["snr"]) and r["snr"] > 0)]
    if bad:
        raise ValueError(f"figure_beyond snr_rows (snr.csv): snr must be > 0 for a log axis, got {bad[0]!r}")
    bad = [r["adam_eps"] for r in adam_rows if not (_finite(r["adam_eps"]) and r["adam_eps"] > 0)]
    if bad:
        raise ValueError(f"figure_beyond adam_rows (adam.csv): adam_eps must be > 0 for a log axis, got {bad[0]!r}")

    fig, axes = plt.subplots(1, 3, figsize=(19, 6), constrained_layout=True)
    ax = axes[0]
    ax.set_gid("a")
    opts = [o for o in NAMES if any(r["optimizer"] == o for r in snr_rows)]
    opts += sorted({r["optimizer"] for r in snr_rows} - set(opts))
    for j, opt in enumerate(opts):
        color = COLORS.get(opt, f"C{4 + j}")
        rows = [r for r in snr_rows if r["optimizer"] == opt and _finite(r["test_error"])]
        skipped = sum(r["optimizer"] == opt for r in snr_rows) - len(rows)
        if rows:
            x = np.array([r["snr"] for r in rows], dtype=float)
            y = np.array([r["test_error"] for r in rows], dtype=float)
            ax.scatter(x, y, s=14, color=color, alpha=0.45, lw=0, gid=f"runs {opt}")
            xs = np.unique(x)
            ax.plot(xs, [y[x == v].mean() for v in xs], color=color, marker="o", ms=4, lw=1.6, gid=f"mean {opt}",
                    label=f"{NAMES.get(opt, opt)}: mean over repeats (dots: runs)"
                          + (f"; {skipped} runs without a test error left out" if skipped else ""))
        for t in (t for t in thresholds if t["optimizer"] == opt):
            draw_threshold(ax, t, color)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())   # minor labels of a short log axis overlap
    ax.set_ylim(-0.02, max(0.55, ax.get_ylim()[1]))
    ax.set_xlabel("SNR = ‖μ‖ / (σ_p √s)  (log)")
    ax.set_ylabel("test 0-1 error")
    ax.set_title("(a) test error against SNR, with the fitted threshold SNR* or the bracket that holds it",
                 fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")

    betas = sorted({(r["beta1"], r["beta2"]) for r in adam_rows})
    refs = {}                                              # SignGD's test error per repeat (same data and init)
    for r in adam_rows:
        if _finite(r["ref_test_error"]):
            refs.setdefault(r["repeat"], r["ref_test_error"])
    for ax, key, letter, ylabel in ((axes[1], "test_error", "b", "test 0-1 error"),
                                    (axes[2], "ref_distance", "b′", "‖θ_Adam − θ_SignGD‖ / ‖θ_SignGD − θ₀‖")):
        ax.set_gid(letter)
        for j, (b1, b2) in enumerate(betas):
            rows = [r for r in adam_rows if (r["beta1"], r["beta2"]) == (b1, b2) and _finite(r[key])]
            if not rows:
                continue
            x = np.array([r["adam_eps"] for r in rows], dtype=float)
            y = np.array([r[key] for r in rows], dtype=float)
            ax.scatter(x, y, s=12, color=f"C{j}", alpha=0.45, lw=0, gid=f"runs {key} b=({b1:g},{b2:g})")
            xs = np.unique(x)
            ax.plot(xs, [y[x == v].mean() for v in xs], color=f"C{j}", marker="o", ms=4, lw=1.6,
                    gid=f"mean {key} b=({b1:g},{b2:g})", label=f"(β₁, β₂) = ({b1:g}, {b2:g}): mean (dots: runs)")
        ax.set_xscale("log")
        ax.set_xlabel("Adam ε (log)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    if refs:
        ref = float(np.mean(list(refs.values())))
        axes[1].axhline(ref, color=COLORS["signgd"], ls="--", lw=1.5, gid="signgd reference",
                        label=f"SignGD, same data and init: mean test error {ref:.3g} ({len(refs)} repeats)")
    pos = np.array([r["ref_distance"] for r in adam_rows if _finite(r["ref_distance"])], dtype=float)
    if len(pos) and pos.min() > 0 and pos.max() / pos.min() > 20:
        axes[2].set_yscale("log")                          # a log axis only where it spreads the data
    axes[1].set_ylim(-0.02, max(0.55, axes[1].get_ylim()[1]))
    axes[1].set_title("(b) Adam ε × (β₁, β₂) sweep: test error", fontsize=10)
    axes[2].set_title("(b′) the same runs: distance of Adam's weights from SignGD's", fontsize=10)
    for ax in axes[1:]:
        ax.legend(fontsize=7.5)
    fig.suptitle("Beyond the paper: where each optimizer starts to generalize, and how far Adam is from SignGD",
                 fontsize=11)
    return fig


def figure_beyond(snr_rows, thresholds, adam_rows, path, dpi: int = 110) -> Path:
    """Draw Figure 3 (thresholds and the Adam sweep) from loaded table rows into ``path``; returns it."""
    return save_figure(beyond_fig(snr_rows, thresholds, adam_rows), path, dpi)


def signgd_figures(folder, dynamics_path, optimizers_path, beyond_path) -> list[Path]:
    """The three figures of a saved study folder (``refvit study signgd``): its run files are read through
    ``refvit.li2025.tables.load_part``, which checks each against the run it must be, and its tables as saved."""
    folder = Path(folder)
    study = SignGDStudy.from_dict(load_json(folder / "study.json"))
    dyn, snr = load_part(study, folder, "dynamics"), load_part(study, folder, "snr")
    return [figure_dynamics([r for r in dyn if r[0]["optimizer"] == "signgd"], dynamics_path),
            figure_optimizers(dyn, snr, read_csv(folder / "rates.csv"), optimizers_path),
            figure_beyond(read_csv(folder / "snr.csv"), read_csv(folder / "thresholds.csv"),
                          read_csv(folder / "adam.csv"), beyond_path)]
