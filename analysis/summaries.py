"""Text summaries of saved results: the reproduction's and each study's. They read saved files only."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from refvit.fit import describe
from refvit.io import load_json, read_csv
from refvit.jiang2024.studies import lr_tag
from refvit.magen2025.tables import probe_rule
from refvit.runstore import quarantine_note


def reproduce_summary(sweep_dir) -> str:
    """The reproduction's summary: what the saved sweep folder (sweep.json, table.csv, fit.json) determines.

    No timings: those belong to one run on one machine (``results/timing_<preset>.json``), not to the results.
    """
    d = Path(sweep_dir)
    meta = load_json(d / "sweep.json")
    rows = read_csv(d / "table.csv")
    n_conv = sum(r["converged"] for r in rows)
    train = meta["train"]
    lines = [
        f"refvit reproduce --preset {meta['name']}",
        f"Figure 1 sweep: {len(meta['Ns'])} N x {len(meta['mu_norms'])} |mu| x {meta['repeats']} seeds = "
        f"{len(rows)} runs (coords {train['coords']}, backend {train['backend']}, base seed {meta['seed']}); "
        f"converged {n_conv}/{len(rows)}" + "".join(
            f", {sum(r['status'] == st for r in rows)} {st}" for st in sorted({r["status"] for r in rows})
            if st != "converged"),
        describe(load_json(d / "fit.json")),
    ]
    return "\n".join(lines) + "\n" + quarantine_note(d)    # nothing when no file was set aside


def timing_line(timing: dict) -> str:
    """One line of wall-clock timings (seconds) of a reproduction run."""
    parts = ", ".join(f"{k.replace('_seconds', '')} {v:.1f}" for k, v in timing.items() if k.endswith("_seconds"))
    return f"timing (wall clock, seconds, {timing.get('workers', '?')} worker(s)): {parts}"


def _fmt(x, spec=".3g"):
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _ci(row: dict, stem: str, spec: str, value: str | None = None, note: str = "") -> str:
    """"x [lo, hi]" from a table row: the value ``row[value or stem]`` and its interval ``<stem>_lo``, ``<stem>_hi``;
    ``note`` is added inside the brackets ("x [lo, hi; note]")."""
    note = f"; {note}" if note else ""
    return f"{_fmt(row[value or stem], spec)} [{_fmt(row[stem + '_lo'], spec)}, {_fmt(row[stem + '_hi'], spec)}{note}]"


def optimizer_summary(out, command: str = "") -> str:
    """The text summary of a saved optimizer study folder."""
    out = Path(out)
    meta = load_json(out / "study.json")
    lines = [command or f"refvit study optimizers --preset {meta['name']}",
             f"rate rule: {meta['lr_rule']} on the grid {meta['lr_grid']} (pilot streams tagged {tuple(meta['pilot_stream_tag'])});"
             f" converged = training loss < {meta['loss_threshold']}"]
    summary = read_csv(out / "summary.csv")
    for s in meta["settings"]:
        choice = load_json(out / s["name"] / "lr_choice.json")
        lines.append(f"[{s['name']}] budget {s['train']['steps']} steps; comparison grid {len(s['Ns'])} N x "
                     f"{len(s['mu_norms'])} |mu| x {s['repeats']} seeds")
        for opt in meta["optimizers"]:
            c = choice[opt]
            scan = ", ".join(f"{lr_tag(x['lr'])}:{'ok' if x['feasible'] else 'fail'}"
                             + (f"/{x['heldout_loss']:.3g}" if x["feasible"] else "") for x in c["scanned"])
            lines.append(f"  {opt:6s} lr={lr_tag(c['lr'])} (largest stable {lr_tag(c['largest_stable'])}, "
                         f"heldout {lr_tag(c['heldout']) if c['heldout'] is not None else '-'}); scan "
                         f"lr:feasible/heldout loss = {scan}")
        for ser in load_json(out / s["name"] / "series.json"):
            ref = ", a reference: not chosen by the rule" if ser["reference"] else ""
            lines.append(f"  {ser['series']} (lr = {ser['lr']:g}{ref}):")
            for r in summary:
                if r["setting"] == s["name"] and r["series"] == ser["series"]:
                    lines.append(f"      {r['group']:10s} runs {r['n_converged']}/{r['n_runs']} converged; steps "
                                 f"median {_fmt(r['steps_median'], 'g')} [{_fmt(r['steps_min'], 'g')}, "
                                 f"{_fmt(r['steps_max'], 'g')}]; test loss {_fmt(r['test_loss_mean'])} ± "
                                 f"{_fmt(r['test_loss_std'])}; test error {_fmt(r['test_error_mean'])}")
    return "\n".join(lines) + "\n"


def label_noise_summary(out, command: str = "") -> str:
    """The text summary of a saved label-noise study folder."""
    out = Path(out)
    meta = load_json(out / "study.json")
    lines = [command or f"refvit study label-noise --preset {meta['name']}",
             f"GD lr={meta['train']['lr']:g}, budget {meta['train']['steps']} steps, {len(meta['Ns'])} N x "
             f"{len(meta['mu_norms'])} |mu| x {meta['repeats']} seeds per flip rate; benign cells: N*SNR^2 >= "
             f"{meta['benign_factor']:g} x {meta['boundary_N_snr2']:g} (sigma_p), harmful: <= {meta['boundary_N_snr2']:g}/{meta['benign_factor']:g}"]
    for r in read_csv(out / "summary.csv"):
        lines.append(f"  p={r['flip_rate']:<4g} {r['group']:10s} runs {r['n_converged']}/{r['n_runs']} converged; "
                     f"test 0-1 error {_fmt(r['test_error_mean'])} ± {_fmt(r['test_error_std'])}; test loss "
                     f"{_fmt(r['test_loss_mean'])}; steps median {_fmt(r['steps_median'], 'g')}")
    return "\n".join(lines) + "\n"


def sharpness_summary(out, command: str = "") -> str:
    """The text summary of a saved sharpness study folder: one line per condition (conditions.csv)."""
    out = Path(out)
    meta = load_json(out / "study.json")
    rule = "eta = 0.1*1024/d" if meta["lr_scaling"] == "inverse_d" else "eta fixed"
    lines = [command or f"refvit study sharpness --preset {meta['name']}",
             f"Figure-1 setting, {rule}; N in {meta['Ns']}, {len(meta['snrs'])} SNRs in [{min(meta['snrs']):.3g}, "
             f"{max(meta['snrs']):.3g}] (sigma_p convention), {meta['repeats']} seeds per cell; fits with "
             f"{meta['n_boot']} bootstrap resamples, 95% intervals; width = 10%-90% benign in log(N*SNR^2) at fixed N",
             f"{'condition':22s} {'eta':>8s} {'runs':>11s} {'a [95% CI]':>22s} {'C [95% CI]':>22s} "
             f"{'width [95% CI]':>22s}  fit, excluded runs"]
    for r in read_csv(out / "conditions.csv"):
        lines.append(f"{r['condition']:22s} {r['lr']:8.4g} {r['n_converged']:>5d}/{r['n_runs']:<5d} "
                     f"{_ci(r, 'a', '.3f'):>22s} {_ci(r, 'C', '.3g'):>22s} {_ci(r, 'width', '.3f'):>22s}  "
                     f"{r['method']}{' (separable)' if r['separable'] else ''}, {r['excluded']}")
    lines.append("width at each N separately [95% CI; resamples without an estimate]:")
    for r in read_csv(out / "widths.csv"):
        w = "separable (sharper than the grid)" if r["separable"] else \
            _ci(r, "width", ".3f", note=str(r["n_boot_no_estimate"]))
        lines.append(f"  {r['condition']:22s} N={r['N']:<3d} {r['n_benign']:>4d}/{r['n']:<4d} benign  {w}")
    return "\n".join(lines) + "\n"


def phase_summary(out, command: str = "") -> str:
    """The text summary of a saved phase study folder: per condition the median phase lengths with intervals, then
    the fitted exponents (summary.csv, scaling.csv)."""
    out = Path(out)
    meta = load_json(out / "study.json")
    lines = [command or f"refvit study phases --preset {meta['name']}",
             f"{meta['runs']} seeds per condition; T1: attention {meta['delta_uniform']:.0%} away from 1/M, T2: gap at "
             f"{1 - meta['delta_settled']:.0%} of its largest change, T3: training loss < 0.01; medians [95% bootstrap "
             "intervals] in steps; censored runs counted (c=)"]

    def med(r, k):
        c = f" c={r[k + '_censored']}" if r[k + "_censored"] else ""
        return _ci(r, k, "g", value=k + "_median") + c
    for r in read_csv(out / "summary.csv"):
        lines.append(f"  {r['setting']:8s} N={r['N']:<3d} |mu|={r['mu_norm']:<5g} eta={r['lr']:<6g} "
                     f"N*SNR^2={r['N_snr2']:<7.3g} benign {r['n_benign']}/{r['n_runs']}, signal wins "
                     f"{r['n_signal_winner']}/{r['n_runs']}: phase 1 {med(r, 'len1')}; phase 2 {med(r, 'len2')}; "
                     f"T3 {med(r, 't3')}")
    lines.append("exponents: log(steps) = c + p1 log(N*SNR^2) + p2 log(eta) + p3 log|mu| [95% bootstrap intervals]")
    for r in read_csv(out / "scaling.csv"):
        lines.append(f"  {r['setting']:8s} {r['side']:7s} {r['key']:4s} runs {r['n']} (excluded {r['n_excluded']}): "
                     f"p1 {_ci(r, 'p_N_snr2', '.2f')}, p2 {_ci(r, 'p_lr', '.2f')}, p3 {_ci(r, 'p_mu_norm', '.2f')}")
    return "\n".join(lines) + "\n"


def signgd_summary(out, command: str = "") -> str:
    """The second setting's study: thresholds per optimizer, stage boundaries, loss rates, the Adam sweep."""
    out = Path(out)
    meta = load_json(out / "study.json")
    snr, thr = read_csv(out / "snr.csv"), read_csv(out / "thresholds.csv")
    lines = [command or f"refvit study signgd --preset {meta['name']}",
             f"data: N={meta['data']['N']}, d={meta['data']['d']}, s={meta['data']['s']}, "
             f"sigma_p={meta['data']['sigma_p']:g}, {meta['data']['noise']} noise; {meta['runs']} seeds per "
             f"condition; a run generalizes when its test error is <= 0.1 (docs/math.md (15.1))",
             "SNR threshold of each optimizer (docs/math.md (15.3), 95% bootstrap interval):"]
    for t in thr:
        n_tr = sum(r["optimizer"] == t["optimizer"] for r in snr)
        if t["separable"] and math.isfinite(t["bracket_lo"]) and t["bracket_lo"] == t["bracket_hi"]:
            val = f"at {_fmt(t['bracket_lo'])} (every run below fails, every run above generalizes, both at it)"
        elif t["separable"] and math.isfinite(t["bracket_lo"]):
            val = f"between {_fmt(t['bracket_lo'])} and {_fmt(t['bracket_hi'])} (separable)"
        elif math.isfinite(t["threshold"]):
            val = f"{_fmt(t['threshold'])} [{_fmt(t['lo'])}, {_fmt(t['hi'])}]"
        else:
            val = f"none ({t['message']})"
        lines.append(f"  {t['optimizer']:6s} SNR* = {val}; {t['n_good']}/{t['n']} trained runs generalize "
                     f"({n_tr} runs)")
    for opt in ("signgd", "adam"):
        rows = [r for r in read_csv(out / "stage_summary.csv") if r["optimizer"] == opt]
        if rows:
            parts = [f"{r['boundary']} {_fmt(r['median'])} [{_fmt(r['lo'])}, {_fmt(r['hi'])}]"
                     + (f" ({r['n_censored']} of {r['n']} censored)" if r["n_censored"] else "") for r in rows]
            lines.append(f"stages ({opt}, median step [interval], docs/math.md §14.2): " + "; ".join(parts))
    rates = read_csv(out / "rates.csv")
    stages = read_csv(out / "stages.csv")
    for opt in ("signgd", "adam"):
        rr = [r for r in rates if r["optimizer"] == opt]
        growth = [r["key_growth"] for r in stages if r["optimizer"] == opt]
        if rr:
            lines.append(f"dynamics ({opt}, |mu|={meta['dyn_mu']:g}): mean test error "
                         f"{_fmt(float(np.mean([r['test_error'] for r in rr])))}, mean test loss "
                         f"{_fmt(float(np.mean([r['test_loss'] for r in rr])))}; key noise at t1 / at t=0 (rms): "
                         f"{_fmt(min(growth))} to {_fmt(max(growth))}" if growth else "")
        if rr:
            lin = sum(r["better"] == "linear" for r in rr)
            lines.append(f"training loss ({opt}): the linear-rate fit of log L is the better one in {lin}/{len(rr)}"
                         f" runs; median rate {_fmt(float(np.median([r['rate'] for r in rr])))} per step, "
                         f"median power {_fmt(float(np.median([r['power'] for r in rr])))} (docs/math.md (15.4))")
    adam = read_csv(out / "adam.csv")
    if adam:
        lines.append("Adam against SignGD on the same data and init (mean over seeds):")
        for key in sorted({(r["adam_eps"], r["beta1"], r["beta2"]) for r in adam}):
            g = [r for r in adam if (r["adam_eps"], r["beta1"], r["beta2"]) == key]
            lines.append(f"  eps={key[0]:.0e} betas=({key[1]:g}, {key[2]:g}): test error "
                         f"{_fmt(float(np.mean([r['test_error'] for r in g])))} (SignGD "
                         f"{_fmt(float(np.mean([r['ref_test_error'] for r in g])))}), distance to SignGD "
                         f"{_fmt(float(np.mean([r['ref_distance'] for r in g])))}")
    return "\n".join(lines) + "\n"


def _edge_value(b: dict) -> str:
    """The constant c of a boundary row: "c [lo, hi]", or its bracket when the labels are separable."""
    if b["c_separable"] and math.isfinite(b["c_bracket_lo"]):
        return f"between {_fmt(b['c_bracket_lo'])} and {_fmt(b['c_bracket_hi'])} (separable)"
    if math.isfinite(b["c"]):
        return _ci(b, "c", ".3g")
    return f"none ({b['c_message']})"


def singlehead_summary(out, command: str = "") -> str:
    """The third setting's study: the benign band after two GD steps, the maximum-margin boundary and certificate."""
    out = Path(out)
    meta = load_json(out / "study.json")
    ts, mm, probe = read_csv(out / "twostep.csv"), read_csv(out / "maxmargin.csv"), read_csv(out / "probe.csv")
    bounds = read_csv(out / "boundary.csv")
    d = meta["data"]
    lines = [command or f"refvit study single-head --preset {meta['name']}",
             f"data: d={d['d']}, M=2, flip rate {d['flip_rate']:g} ({d['flips']} flips), {d['n_test']} clean test "
             f"samples; n in {meta['ns']}, {len(meta['snrs'])} SNRs, {meta['runs']} training sets per cell; "
             f"two GD steps from zero with step size eta = {meta['step_size']:g}"
             f"{' x n' if meta['step_scaling'] == 'n' else ''}; benign = every training label fitted "
             "and clean test error <= 0.1 (docs/math.md (17.3))"]
    extra = {part: read_csv(out / f"{part}.csv") if (out / f"{part}.csv").exists() else []
             for part in ("longrun", "tokens", "query")}
    qm = meta.get("query_model", {})
    whats = {"longrun": f"{meta.get('long_steps', 0)} GD steps with eta = {meta.get('long_step_size', 0):g} x n "
                        "(beyond the paper)",
             "tokens": f"two GD steps on M = {meta.get('tokens', 0)} tokens with eta = "
                       f"{meta.get('tokens_step_size', 0):g} x n x M/2 (beyond the paper)",
             "query": f"{meta.get('query_steps', 0)} GD steps of trained W_Q, W_K, v (d_h = {qm.get('d_h')}, Gaussian "
                      f"init sigma0 = {qm.get('sigma0')}) with eta = {meta.get('query_step_size', 0):g} x n "
                      "(beyond the paper)"}
    for method, what, rows in (("twostep", "two GD steps", ts), ("maxmargin", "max-margin interpolator", mm),
                               *((p, whats[p], extra[p]) for p in extra)):
        if not rows:
            continue
        fitted = sum(r["status"] == "converged" if method == "maxmargin" else r["train_error"] == 0 for r in rows)
        lines.append(f"{what}: {sum(r['benign'] for r in rows)}/{len(rows)} runs benign, {fitted} interpolated")
        for b in (b for b in bounds if b["method"] == method):
            if b["runs"] == 0 or b["n_good"] in (0, b["runs"]):
                lines.append(f"  {b['edge']} edge: no transition on this grid ({b['n_good']}/{b['runs']} benign)")
                continue
            exp = (f"{_ci(b, 'exponent', '.3g')} ({b['fit_method']} fit)" if math.isfinite(b["exponent"])
                   else f"none ({b['fit_message']})")
            lines.append(f"  {b['edge']} edge: SNR*·√n = c = {_edge_value(b)}; SNR* ∝ n^e with e = {exp} "
                         "(theory: -0.5; docs/math.md (17.10), 95% bootstrap intervals)")
    for rows, where in ((ts, "after step 2, benign two-step runs"), (extra["longrun"], "at the end of the benign "
                        "long runs"), (extra["tokens"], "after step 2, benign tokens runs"),
                        (extra["query"], "at the end of the benign query runs")):
        good = [r for r in rows if r["benign"]]
        if good:
            lines.append(f"attention on the signal token {where} (mean [min, max]): " + ", ".join(
                f"{g} {_fmt(np.mean([r[k] for r in good]))} [{_fmt(min(r[k] for r in good))}, "
                f"{_fmt(max(r[k] for r in good))}]" for g, k in (("clean", "attn_signal_clean"),
                                                                 ("flipped", "attn_signal_flipped"))))
        if good and rows is ts:
            lines.append(f"  of them interpolated after step 1 alone: {sum(r['train_error_step1'] == 0 for r in good)}"
                         f"/{len(good)}; test error against noisy labels (expected, (17.2)) at most "
                         f"{_fmt(max(r['test_error_noisy'] for r in good))}")
    ok = [r for r in mm if r["status"] == "converged"]
    if ok:
        lines.append(f"max-margin certificate over {len(ok)}/{len(mm)} solved runs (docs/math.md (17.6)): largest "
                     f"stationarity residual {_fmt(max(r['stationarity'] for r in ok))}, largest infeasibility "
                     f"{_fmt(max(r['feasibility'] for r in ok))}, largest slackness "
                     f"{_fmt(max(r['slackness'] for r in ok))}, largest relative norm spread over starts "
                     f"{_fmt(max(r['norm_spread'] for r in ok))} ({sum(r['starts_ok'] for r in ok)}/"
                     f"{sum(r['starts'] for r in ok)} starts solved)")
    if probe:
        lrs = sorted({r["lr"] for r in probe})
        parts = [f"{lr:g}: {sum(r['benign'] for r in probe if r['lr'] == lr)}/"
                 f"{sum(r['train_error'] == 0 for r in probe if r['lr'] == lr)}" for lr in lrs]
        lines.append(f"step-size probe over the grid ({sum(r['lr'] == lrs[0] for r in probe)} runs per step size), "
                     f"benign/interpolated after step 2: " + ", ".join(parts)
                     + f"; the rule of docs/math.md (17.4) gives {_fmt(probe_rule(probe))} (this study used "
                     f"{meta['step_size']:g}, eta = step size x {'n' if meta['step_scaling'] == 'n' else '1'})")
    interp = [f"n={n}: {sum(r['train_error'] == 0 for r in ts if r['n'] == n)}/{sum(r['n'] == n for r in ts)}"
              for n in meta["ns"]]
    lines.append("two-step runs interpolated after step 2, per n: " + ", ".join(interp))
    spread = [r for r in ok if r["norm_spread"] > 1e-6]
    if spread:
        lines.append(f"max-margin runs whose solved starts reached different norms (spread > 1e-6, (17.8)): "
                     f"{len(spread)}; largest {_fmt(max(r['norm_spread'] for r in spread))}")
    return "\n".join(lines) + "\n"
