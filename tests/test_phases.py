"""The phase detector (docs/math.md (12.6)–(12.8)) on constructed trajectories with known boundaries and against a
plain-loop reimplementation on real runs; the exponent fit (12.9) on exact power laws; the phase study end to end,
with a damaged history file quarantined and recomputed."""
import math

import numpy as np
import pytest

from refvit.analysis import fig_phases, summaries
from refvit.jiang2024.config import dynamics_setting
from refvit.jiang2024.experiment import cell_key, run_cell
from refvit.io import FileProblem, load_json, read_csv
from refvit.jiang2024.phases import detect_phases
from refvit.jiang2024.studies import PhaseStudy, run_phases
from refvit.jiang2024.studies import phases as phases_module
from refvit.jiang2024.studies.phases import PHASE_KEYS, median_ci, power_fit, run_file
from refvit.runstore import claim

M = 4
U = 1 / M


def ramp(T, start, stop, height):
    """0 before ``start``, rising linearly to ``height`` at ``stop``, then constant; (T+1,) over t = 0..T."""
    t = np.arange(T + 1, dtype=float)
    return height * np.clip((t - start) / (stop - start), 0, 1)


def loss(T, rate, l0=0.7):
    return l0 * np.exp(-rate * np.arange(T + 1))


def test_boundaries_of_a_constructed_benign_trajectory():
    """Attention uniform until 20, the signal gains 0.4 by step 60 while the noise loses 0.2; loss 0.7·e^{-t/30}.

    T₁: |a_s − 1/M| = 0.4·(t − 20)/40 ≥ 0.1/M = 0.025 first at t − 20 ≥ 2.5, i.e. t = 23 (t = 22 gives 0.02).
    T₂: Δg = 0.6·(t − 20)/40 ≥ 0.9·0.6 first at t − 20 ≥ 36: t = 56 lies exactly on the level, so rounding may put it
        on either side (the next test has strict crossings only).
    T₃: 0.7·e^{-t/30} < 0.01 first at t > 30·ln 70 = 127.46, i.e. t = 128.
    """
    T = 200
    a_s = U + ramp(T, 20, 60, 0.4)
    a_n = U - ramp(T, 20, 60, 0.2)
    ph = detect_phases(a_s, a_n, loss(T, 1 / 30), M)
    assert ph.t1 == 23 and ph.t2 in (56, 57) and ph.t3 == 128
    assert ph.winner == "signal" and ph.gap_change == pytest.approx(0.6, abs=1e-15)
    assert ph.lengths() == (23, ph.t2 - 23, 128 - ph.t2)


def test_boundaries_with_strict_crossings_and_the_noise_winning():
    """The mirror (noise wins), with the ramp ending at 61 so that the 90 % level is crossed strictly between
    integers: Δg = −0.6·(t − 20)/41, |Δg| ≥ 0.54 first at t − 20 ≥ 36.9, i.e. t = 57. T₁: 0.4·(t − 20)/41 ≥ 0.025 at
    t − 20 ≥ 2.5625, i.e. t = 23."""
    T = 100
    a_s = U - ramp(T, 20, 61, 0.2)
    a_n = U + ramp(T, 20, 61, 0.4)
    ph = detect_phases(a_s, a_n, loss(T, 1 / 30), M)
    assert (ph.t1, ph.t2, ph.t3, ph.winner) == (23, 57, None, "noise")       # loss never below 0.01 by t = 100
    assert ph.lengths() == (23, 34, None)


def test_offsets_at_init_noise_and_a_non_monotone_gap():
    T = 120
    rng = np.random.default_rng(0)
    # a start 0.002 off uniform (below 0.1/M = 0.025) and noise of 1e-4: the boundaries are those of the clean ramp
    off = 0.002 + 1e-4 * rng.standard_normal((2, T + 1))
    a_s = U + off[0] + ramp(T, 10, 50, 0.4)
    a_n = U + off[1] - ramp(T, 10, 50, 0.2)
    ph = detect_phases(a_s, a_n, loss(T, 0.1), M)
    # T₁: 0.002 + 0.4(t − 10)/40 ≥ 0.025 at t − 10 ≥ 2.3 → 13 (noise 1e-4 moves the crossing by 0.01 step);
    # T₂: Δg = 0.6(t − 10)/40 ≥ 0.54 at t ≥ 46 exactly: noise decides between 46 and 47
    assert ph.t1 == 13 and ph.t2 in (46, 47) and ph.t3 == 43      # 0.7 e^{-0.1 t} < 0.01 at t > 42.49
    assert ph.lengths()[2] < 0                                    # converged before attention settled
    # an initial gap of 0.04 (within δ₁/M of uniform) and a gap change of only 0.05: T₂ measures the change from
    # g(0), 0.05·(t − 10)/41 ≥ 0.045 first at t = 47 (the gap itself reaches 90 % of its peak 0.09 at t = 44);
    # T₁: 0.02 + 0.03·(t − 10)/41 ≥ 0.025 first at t = 17
    ph = detect_phases(U + 0.02 + ramp(T, 10, 51, 0.03), U - 0.02 - ramp(T, 10, 51, 0.02), loss(T, 0.1), M)
    assert (ph.t1, ph.t2) == (17, 47) and ph.gap_change == pytest.approx(0.05, abs=1e-15)
    # the gap overshoots to 0.6 at 50 and falls back to 0.3: T₂ is the first time it made 90 % of the peak
    peak = U + ramp(T, 10, 50, 0.4) - ramp(T, 50, 90, 0.2)
    ph = detect_phases(peak, np.full(T + 1, U) - ramp(T, 10, 50, 0.2) + ramp(T, 50, 90, 0.1), loss(T, 0.1), M)
    assert ph.t2 in (46, 47) and ph.gap_change == pytest.approx(0.6, abs=1e-15)


def test_censored_boundaries():
    T = 50
    flat = np.full(T + 1, U)
    ph = detect_phases(flat, flat, loss(T, 0.2), M)
    assert (ph.t1, ph.t2, ph.winner) == (None, None, None) and ph.t3 == 22      # 0.7e^{-0.2t} < 0.01 at t > 21.2
    assert ph.lengths() == (None, None, None)
    # already non-uniform at t = 0: phase 1 has length 0
    ph = detect_phases(flat + 0.05 + ramp(T, 0, 11, 0.3), flat - 0.05, loss(T, 0.2), M)
    assert ph.t1 == 0 and ph.t2 == 10                                # 0.3·t/11 ≥ 0.27 first at t ≥ 9.9


def test_a_gap_that_peaks_before_t1_censors_t2():
    """Both tokens first move the same way (the gap peaks at t = 1; 0.02 < 0.1/M = 0.025), then together leave
    uniform (0.03 ≥ 0.025: T₁ = 2) while the gap is back at 0: |Δg| never returns to 90 % of its peak after T₁, so T₂ is censored."""
    a_s = U + np.array([0.0, 0.02, 0.03, 0.04, 0.05])
    a_n = U + np.array([0.0, 0.0, 0.03, 0.04, 0.05])
    ph = detect_phases(a_s, a_n, np.full(5, 0.5), M)
    assert (ph.t1, ph.t2, ph.winner) == (2, None, None) and ph.lengths() == (2, None, None)


def test_bad_input_is_refused():
    s = np.full(5, U)
    with pytest.raises(ValueError, match="one length"):
        detect_phases(s, s[:4], s, M)
    with pytest.raises(ValueError, match="non-finite"):
        detect_phases(s, s, np.array([1, np.nan, 1, 1, 1.0]), M)
    with pytest.raises(ValueError, match="M must be"):
        detect_phases(s, s, s, 1)


def loop_phases(a_s, a_n, L, M, d1=0.1, d2=0.1, tau=0.01):
    """(12.6)–(12.8) written as plain loops over t, for comparison with the vectorized detector."""
    t1 = next((t for t in range(len(L)) if max(abs(a_s[t] - 1 / M), abs(a_n[t] - 1 / M)) >= d1 / M), None)
    gaps = [abs((a_s[t] - a_n[t]) - (a_s[0] - a_n[0])) for t in range(len(L))]
    t2 = None if t1 is None else next((t for t in range(t1, len(L)) if gaps[t] >= (1 - d2) * max(gaps)), None)
    t3 = next((t for t in range(len(L)) if L[t] < tau), None)
    return t1, t2, t3


@pytest.mark.parametrize("mu", [1, 30])
def test_detector_matches_a_plain_loop_on_real_runs(mu):
    data, model, train = dynamics_setting(mu_norm=float(mu))
    run = run_cell(data, model, train.replace(steps=200, coords="span", backend="numpy"), 0, cell_key(10, mu, 0))
    h = run.history
    ph = detect_phases(h["attn_signal"], h["attn_noise"], h["train_loss"], data.M)
    # the loop restates the definitions, so this guards the vectorised indexing (first hits, the start at T₁)
    assert ph[:3] == loop_phases(h["attn_signal"], h["attn_noise"], h["train_loss"], data.M)
    assert ph.t1 is not None and ph.winner == ("signal" if mu == 30 else "noise")   # both sides of (10.3)


def test_power_fit_recovers_exact_exponents():
    rng = np.random.default_rng(0)
    rows = [{"N_snr2": x, "lr": e, "mu_norm": m, "len1": 3.0 * x ** 0.5 * e ** -1.0 * m ** 0.2}
            for x, e, m in zip(rng.uniform(0.1, 10, 40), rng.choice([0.005, 0.01, 0.02], 40), rng.uniform(5, 60, 40))]
    rows.append({"N_snr2": 1.0, "lr": 0.01, "mu_norm": 10.0, "len1": math.nan})          # censored: left out
    fit = power_fit(rows, "len1", np.random.default_rng(1), n_boot=20)
    # exact power-law data: least squares recovers the exponents to rounding (~1e-13 of the log-values)
    assert fit["p_N_snr2"] == pytest.approx(0.5, abs=1e-10) and fit["p_lr"] == pytest.approx(-1.0, abs=1e-10)
    assert fit["p_mu_norm"] == pytest.approx(0.2, abs=1e-10) and fit["n_excluded"] == 1 and fit["n"] == 40


def test_median_interval():
    x = np.array([1.0, 1, 1, 1, 1, 10, 10, 10, 100, 100, 1000])     # skewed: mean 113, median 10
    m, lo, hi = median_ci(x, np.random.default_rng(0), 200)
    # a resample's median exceeds 100 only if 6 of its 11 draws are the 1000 (probability ~1e-4), so the interval
    # lies in [1, 100]; a bootstrap of the mean would reach far above 100 (the mean itself is 113)
    assert m == 10.0 and lo <= m <= hi <= 100.0
    assert all(math.isnan(v) for v in median_ci(np.array([]), np.random.default_rng(0), 10))


def assert_summary(folder, rows, n_boot):
    """summary.csv: each condition's medians and intervals from its rows of phases.csv, with ``n_boot`` resamples
    on the condition's own stream, one key after the other (median_ci itself is checked by hand elsewhere)."""
    for c in read_csv(folder / "summary.csv"):
        mine = [x for x in rows if (x["setting"], x["N"], x["mu_norm"], x["lr"]) ==
                (c["setting"], c["N"], c["mu_norm"], c["lr"])]
        assert c["n_runs"] == len(mine) == 2 and c["n_benign"] == sum(x["benign"] for x in mine)
        rng = phases_module._stream(0, c["setting"], c["N"], int(c["mu_norm"]), c["lr"])
        for k in PHASE_KEYS:
            x = np.array([m[k] for m in mine], dtype=float)
            want = median_ci(x[np.isfinite(x)], rng, n_boot)
            got = (c[f"{k}_median"], c[f"{k}_lo"], c[f"{k}_hi"])
            assert np.allclose(got, want, rtol=0, atol=0, equal_nan=True), (k, got, want)   # the same arithmetic
            assert c[f"{k}_censored"] == int(np.sum(~np.isfinite(x)))


def test_phase_study_end_to_end_with_a_damaged_file(tmp_path):
    study = PhaseStudy("tiny", {"dynamics": ((10, 2, 0.01), (10, 30, 0.01)),
                                "figure1": ((20, 80, 0.1),)}, 2, steps=120, n_boot=20)
    run_phases(study, tmp_path, progress=False)
    rows = read_csv(tmp_path / "phases.csv")
    assert len(rows) == 6
    # every row against the detector applied to a fresh run of the same cell (a second path to the same numbers)
    r = next(x for x in rows if x["setting"] == "dynamics" and x["mu_norm"] == 30 and x["repeat"] == 1)
    data, model, train = dynamics_setting(mu_norm=30.0)
    h = run_cell(data, model, train.replace(steps=120, coords="span", backend="numpy"), 0, cell_key(10, 30, 1)).history
    ph = detect_phases(h["attn_signal"], h["attn_noise"], h["train_loss"], 3)
    assert (r["t1"], r["t2"]) == (ph.t1, ph.t2) and r["winner"] == ph.winner == "signal"
    assert_summary(tmp_path, rows, 20)
    before = (tmp_path / "phases.csv").read_bytes()
    victim = tmp_path / "dynamics" / "runs" / run_file(10, 30, 0.01, 1)
    victim.write_bytes(b"not an npz")
    run_phases(study, tmp_path, progress=False)
    assert (tmp_path / "phases.csv").read_bytes() == before               # recomputed to the same table
    assert len(list((tmp_path / "dynamics" / "quarantine").iterdir())) == 1  # the damaged file kept aside
    # a readable file of another run under this run's name (repeat 0 copied over repeat 1) is caught the same way
    other = tmp_path / "dynamics" / "runs" / run_file(10, 30, 0.01, 0)
    victim.write_bytes(other.read_bytes())
    run_phases(study, tmp_path, progress=False)
    assert (tmp_path / "phases.csv").read_bytes() == before
    assert len(list((tmp_path / "dynamics" / "quarantine").iterdir())) == 2
    with claim(tmp_path, "phase study"), pytest.raises(FileProblem, match="another phase study is running"):
        run_phases(study, tmp_path, progress=False)         # a second process on the same folder is refused
    paths = fig_phases.phase_figures(tmp_path, tmp_path / "runs.png", tmp_path / "lengths.png")
    assert all(p.stat().st_size > 10_000 for p in paths)
    assert fig_phases.main([str(tmp_path), "--out-runs", str(tmp_path / "r.png"), "--out-lengths",
                            str(tmp_path / "l.png"), "--dpi", "40"]) == 0 and (tmp_path / "l.png").exists()
    assert "exponents" in summaries.phase_summary(tmp_path)
    # the tables take n_boot from the study's record: 3 resamples of two runs give intervals that differ from the
    # default's 1000 (which almost surely reach both runs' values)
    ends = (lambda: [(c[f"{k}_lo"], c[f"{k}_hi"]) for c in read_csv(tmp_path / "summary.csv") for k in PHASE_KEYS])
    with_20 = ends()
    phases_module.write_phase_tables({**load_json(tmp_path / "study.json"), "n_boot": 3}, tmp_path)
    assert_summary(tmp_path, rows, 3)
    assert ends() != with_20                        # not vacuous: the number of resamples shows in the table
