"""The stage detector (docs/math.md (14.8)–(14.12)) on constructed trajectories with known boundaries — every step
recorded, a log-spaced grid, cut short (censored), with noise — against a plain-loop restatement on random series,
and the summary over seeds (14.13), (14.14) against hand computations."""
import math

import numpy as np
import pytest

from refvit.li2025.stages import (BOUNDARY_NAMES, Boundary, Stages, StageRule, detect_stages, stage_summary)
from refvit.trainer import log_steps

N, M_K = 10, 4
T = 300
# The boundaries of `trajectory` under the default StageRule, worked out in its docstring.
KNOWN = {"t1": 7, "t2": 20, "t3": 47, "t4": 29, "s11_exit": 161}


def trajectory(T=T, rng=None, noise=1.0):
    """Series at every step 0..T with known boundaries (default rule: w = 2, rtol 0.05, θ = 0.95, h = 10, ν = 1,
    ε = 0.01, β = 0.1, q = 0.9, so 9 of the 10 samples).

    value noise  V_i(t) = c_i (0.05 t + 0.02 (5 − t)²₊): slopes of V̄ are 0.05 c̄ from [5, 6] on, 0.03 c̄ on [4, 5],
                 −0.01 c̄ on [3, 4]. Row 6 ends [4, 5], [5, 6] (0.03, 0.05: 25 % apart); row 7 ends [5, 6], [6, 7]
                 (equal): T₁ = 7, the onset 5 plus the window.
    key noise    K(t) = K₀ (1 + t): rms at T₁ over rms at 0 is 8.
    agreement    0.97 on steps 0..9 (ten steps, one short of the hold [t, t + 10]), 0.5 at 10, rising as
                 0.5 + 0.5 (t − 10)/10.5 to 1 (0.929 at 19, 0.976 at 20), a dip to 0.6 on [60, 80] (the later sign
                 flips): T₂ = 20.
    signals      sign changes of query signal 1 at 40 and of key signal 2 at 47, none later; the vote fractions are
                 0.5 before 30 and 1 from 30 on: T₃ = 47 (held 253 ≥ 10 steps).
    s21          0.5 e^{−ln 50 · t/c_i}, c_i = 20.5 + i, below ε = 0.01 iff t > c_i: sample i first at 21 + i, nine of
                 ten first at 29: T₄ = 29 (s11 = 1/2 there).
    s11          0.5 − 0.002 (t − e_i)₊, e_i = 100.5 + 10 i, out of 1/2 ± 0.1 iff t > e_i + 50: sample i first at
                 151 + 10 i; fewer than nine in the band first at 161: the s11 exit is 161.
    ``noise`` scales the perturbations drawn from ``rng`` (see test_noisy_trajectories for their sizes).
    """
    t = np.arange(T + 1, dtype=float)
    c = np.linspace(0.8, 1.2, N)
    V = c[:, None] * (0.05 * t + 0.02 * np.clip(5 - t, 0, None) ** 2)              # (N, T+1)
    K0 = np.random.default_rng(99).standard_normal((M_K, N)) * 1e-3
    key = K0[None] * (1 + t)[:, None, None]                                         # (T+1, M_K, N)
    A = np.where(t < 10, 0.97, np.clip(0.5 + 0.5 * (t - 10) / 10.5, 0, 1))
    A = np.where((t >= 60) & (t <= 80), 0.6, A)
    qs = np.tile([0.3, -0.2, 0.4, 0.5], (T + 1, 1)) * (1 + t)[:, None]             # (T+1, M_K)
    ks = np.tile([-0.3, 0.2, 0.1, -0.5], (T + 1, 1)) * (1 + t)[:, None]
    qs[t >= 40, 1] *= -1
    ks[t >= 47, 2] *= -1
    vote = np.where(t >= 30, 1.0, 0.5)
    ci = 20.5 + np.arange(N)
    s21 = 0.5 * np.exp(-np.log(50) * t[:, None] / ci[None])                         # (T+1, N)
    e = 100.5 + 10 * np.arange(N)
    s11 = 0.5 - 0.002 * np.clip(t[:, None] - e[None], 0, None)
    if rng is not None:
        # perturbations well inside every margin (see test_noisy_trajectories)
        V = V * (1 + noise * 1e-4 * rng.standard_normal(V.shape))
        A = np.clip(A + noise * 0.004 * rng.standard_normal(A.shape), 0, 1)
        s21 = s21 * np.exp(noise * 0.02 * rng.standard_normal(s21.shape))
        s11 = s11 + noise * 2e-4 * rng.standard_normal(s11.shape)
        qs = qs + noise * 1e-3 * rng.standard_normal(qs.shape)
    return {"value_noise": V.T, "key_noise": key, "qk_noise_agree": A, "query_signal": qs, "key_signal": ks,
            "query_signal_vote": vote, "key_signal_vote": vote.copy(), "s11": s11, "s21": s21}


def on(steps, series):
    """The rows of a dense series (row t = step t) at ``steps``."""
    return {k: v[steps] for k, v in series.items()}


def test_known_boundaries_every_step():
    st = detect_stages(trajectory(), np.arange(T + 1))
    assert {k: getattr(st, k).step for k in BOUNDARY_NAMES} == KNOWN
    assert not any(getattr(st, k).censored for k in BOUNDARY_NAMES)
    # every step recorded: the event is pinned to one step
    assert all(getattr(st, k).earliest == getattr(st, k).step for k in BOUNDARY_NAMES)
    assert st.key_growth == pytest.approx(8.0, rel=1e-12)         # (1 + 7)/(1 + 0), up to rounding of the rms
    assert not st.ordered()          # T₄ = 29 < T₃ = 47: the stages overlap, and the detector says so
    assert Stages(*st[:3], Boundary(50, False, 50), st.s11_exit, st.key_growth).ordered()


@pytest.mark.parametrize("per_decade", [20, 7])
def test_known_boundaries_on_a_log_grid(per_decade):
    """On a log grid each boundary is the first recorded step at or after the dense one (every condition here holds
    from its boundary on), and the dense boundary lies in [earliest, step]."""
    steps = log_steps(T, per_decade)
    st = detect_stages(on(steps, trajectory()), steps)
    for name, dense in KNOWN.items():
        b = getattr(st, name)
        if name in ("t1", "t2"):
            continue                                   # window conditions: checked below
        assert b.step == steps[np.searchsorted(steps, dense)] and b.earliest <= dense <= b.step, (name, b)
        assert not b.censored
    if per_decade == 20:
        # 0..11 all recorded: T₁ = 7 as dense; T₂: rows 20, 22, 25, 28 fill [20, 30] and are all ≥ 0.95
        assert steps[:12].tolist() == list(range(12)) and (st.t1.step, st.t2.step) == (7, 20)
        assert (st.t3.step, st.t3.earliest) == (50, 46)          # the sign change at 47 lies in (45, 50]
    else:
        # per_decade 7: 0, 1, 2, 3, 4, 5, 7, 10, 14, 19, 27, 37, ...: the slopes of V̄ on [4, 5] (0.03) and [5, 7]
        # (0.05) differ, [5, 7] and [7, 10] agree: T₁ = 10. Agreement: row 19 (0.929) fails, row 27 holds on
        # [27, 37]: T₂ = 27
        assert steps[:10].tolist() == [0, 1, 2, 3, 4, 5, 7, 10, 14, 19]
        assert (st.t1.step, st.t1.earliest, st.t2.step, st.t2.earliest) == (10, 8, 27, 20)


@pytest.mark.parametrize("cut, censored", [
    (25, {"t2", "t4", "t3", "s11_exit"}),   # T₂'s hold [20, 30] does not fit in the run; s21 crosses at 29
    (56, {"t3", "s11_exit"}),               # 56 − 47 = 9 < h = 10: T₃ not yet confirmed
    (57, {"s11_exit"}),                     # 57 − 47 = 10: confirmed
    (160, {"s11_exit"}),                    # one step before the s11 exit
])
def test_censored_boundaries(cut, censored):
    st = detect_stages(on(np.arange(cut + 1), trajectory()), np.arange(cut + 1))
    for name in BOUNDARY_NAMES:
        b = getattr(st, name)
        if name in censored:
            assert b == Boundary(cut, True, cut + 1), (name, b)       # at the last step, never extrapolated
        else:
            assert b == Boundary(KNOWN[name], False, KNOWN[name]), (name, b)


def test_never_reached_and_a_late_sign_change():
    x = trajectory()
    x["qk_noise_agree"] = np.minimum(x["qk_noise_agree"], 0.94)       # never at θ = 0.95
    x["s21"] = np.maximum(x["s21"], 0.02)                              # never below ε
    x["query_signal"][T, 0] *= -1                                      # a sign change at the very last step
    st = detect_stages(x, np.arange(T + 1))
    for name in ("t2", "t3", "t4", "s11_exit"):
        assert getattr(st, name) == Boundary(T, True, T + 1), name
    assert st.t1.step == 7 and not st.t1.censored
    x = trajectory()
    x["key_signal_vote"][52] = 0.75                                    # one s disagrees with the vote at 52
    assert detect_stages(x, np.arange(T + 1)).t3.step == 53
    x = trajectory()
    # exponential growth e^{0.2 t}: consecutive slopes differ by e^{0.2} = 1.22, 10 % from their mean at every t
    x["value_noise"] = np.tile(np.exp(0.2 * np.arange(T + 1.0)), (N, 1)).T
    st = detect_stages(x, np.arange(T + 1))
    assert st.t1.censored and math.isnan(st.key_growth)
    for V in (np.full(T + 1, 0.3), 1 - 0.05 * np.arange(T + 1.0)):    # no growth, or linear decay: not stage I's
        x["value_noise"] = np.tile(V, (N, 1)).T                          # linear growth
        assert detect_stages(x, np.arange(T + 1)).t1.censored


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_trajectories(seed):
    """Perturbations: V relative 1e-4 (V ≈ 0.35 near T₁, so the slopes move by ~5e-5, against the tolerance
    0.05·0.05 = 2.5e-3; the rejected row 6 is 25 % off), agreement ±0.004 (margins 0.021 at 19 and 0.026 at 20: > 5σ),
    s21 by e^{±0.02} (the crossings have margin ln 50 · 0.5/c_i ≥ 0.06 in the exponent: ≥ 3σ for each of ten
    samples, and the count uses 9 of them), s11 ±2e-4 (margins 0.001: 5σ), signals ±1e-3 on magnitudes ≥ 0.1 (no
    sign flips). Every boundary is recovered exactly."""
    st = detect_stages(trajectory(rng=np.random.default_rng(seed)), np.arange(T + 1))
    assert {k: getattr(st, k).step for k in BOUNDARY_NAMES} == KNOWN


def test_louder_noise_moves_boundaries_by_at_most_a_few_steps():
    """Five times the perturbations (agreement ±0.02, s11 ±1e-3, s21 e^{±0.1}): the margins above are now 1–2σ, so
    a crossing may move by a step or two; T₂ may also come later by up to the hold h = 10 (one row of its hold
    window below θ pushes it past that row); T₃ (signal signs) stays exact; nothing is censored."""
    for seed in range(4):
        st = detect_stages(trajectory(rng=np.random.default_rng(seed), noise=5.0), np.arange(T + 1))
        for name, want in KNOWN.items():
            b = getattr(st, name)
            lo, hi = {"t3": (0, 0), "t2": (-2, 10)}.get(name, (-2, 2))
            assert not b.censored and lo <= b.step - want <= hi, (seed, name, b)


def loop_t2_t3(x, steps, rule):
    """(14.9), (14.10) restated as loops over rows, for comparison with the vectorised detector."""
    K = len(steps)
    t2 = next((steps[b] for b in range(K) if steps[b] + rule.hold <= steps[-1] and all(
        x["qk_noise_agree"][k] >= rule.agree for k in range(b, K) if steps[k] <= steps[b] + rule.hold)), None)
    sig = np.concatenate([x["query_signal"], x["key_signal"]], axis=1)
    t3 = next((steps[b] for b in range(K) if steps[-1] - steps[b] >= rule.hold and all(
        np.array_equal(np.sign(sig[k]), np.sign(sig[b])) and x["query_signal_vote"][k] >= rule.vote
        and x["key_signal_vote"][k] >= rule.vote for k in range(b, K))), None)
    return t2, t3


def test_detector_matches_a_plain_loop_on_random_series():
    rng = np.random.default_rng(7)
    rule = StageRule(hold=4, vote=0.75)
    for _ in range(40):
        K = int(rng.integers(3, 30))
        steps = np.cumsum(rng.integers(1, 4, K)) - 1
        x = {"value_noise": rng.random((K, 3)), "key_noise": rng.random((K, 2, 3)), "s11": rng.random((K, 3)),
             "s21": rng.random((K, 3)), "qk_noise_agree": rng.choice([0.9, 0.96, 1.0], K),
             "query_signal": np.cumsum(rng.choice([0.0, 0.0, 0.0, 1.0], (K, 2)), 0) % 2 - 0.5,
             "key_signal": rng.choice([-1.0, 1.0], (K, 2)) * (rng.random((K, 1)) < 0.1) + 0.5,
             "query_signal_vote": rng.choice([0.5, 0.75, 1.0], K), "key_signal_vote": rng.choice([0.75, 1.0], K)}
        st = detect_stages(x, steps, rule)
        t2, t3 = loop_t2_t3(x, steps, rule)
        assert (None if st.t2.censored else st.t2.step) == t2
        assert (None if st.t3.censored else st.t3.step) == t3


def test_bad_input_is_refused():
    x = trajectory(T=20)
    with pytest.raises(ValueError, match="strictly increasing"):
        detect_stages(x, np.r_[0, 0, np.arange(2, 21)])
    with pytest.raises(ValueError, match="lacks"):
        detect_stages({k: v for k, v in x.items() if k != "s21"}, np.arange(21))
    with pytest.raises(ValueError, match="rows but steps"):
        detect_stages(x, np.arange(20))
    with pytest.raises(ValueError, match=r"must be \(K, n\)"):
        detect_stages({**x, "s11": x["s11"][:, 0]}, np.arange(21))
    x["s11"][3, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        detect_stages(x, np.arange(21))
    for bad in ({"agree": 1.5}, {"hold": -1}, {"window": 1}, {"s11_band": 0.5}, {"fraction": 0.0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be"):
            StageRule(**bad)
    assert StageRule.from_dict(StageRule(hold=3).to_dict()) == StageRule(hold=3)


def runs(values, last=100):
    """Stages of several runs whose every boundary is ``values[r]`` (None: censored at ``last``)."""
    b = [Boundary(last, True, last + 1) if v is None else Boundary(v, False, v) for v in values]
    return [Stages(x, x, x, x, x, 1.0) for x in b]


def test_summary_by_hand():
    # five runs, one censored: sorted 2, 2, 3, 4, (>100). Median x_(3) = 3. With n = 5 no symmetric interval
    # reaches 95 %: the whole range [x_(1), x_(5)], coverage 1 − 2·(1/2)⁵ = 0.9375, its top on the censored run
    s = stage_summary(runs([2, 3, None, 2, 4]))["t1"]
    assert (s.n, s.n_censored, s.median, s.lo, s.hi) == (5, 1, 3.0, 2.0, math.inf)
    assert s.coverage == pytest.approx(0.9375, abs=1e-15)        # binomial sums of small integers over 2⁵
    # ten runs 1..10: P(B ≤ 1) = 11/1024 ≤ 0.025 < P(B ≤ 2) = 56/1024, so j = 2: [x_(2), x_(9)] = [2, 9], coverage
    # 1 − 22/1024; median (5 + 6)/2. At level 0.8: P(B ≤ 2) ≤ 0.1 < P(B ≤ 3) = 176/1024, j = 3: [3, 8]
    ten = runs([7, 3, 10, 1, 5, 9, 2, 8, 6, 4])
    s = stage_summary(ten)["t3"]
    assert (s.median, s.lo, s.hi) == (5.5, 2.0, 9.0) and s.coverage == pytest.approx(1 - 22 / 1024, abs=1e-15)
    s = stage_summary(ten, level=0.8)["t3"]
    assert (s.lo, s.hi) == (3.0, 8.0) and s.coverage == pytest.approx(1 - 112 / 1024, abs=1e-15)
    # more than half censored: the median itself is "after the run"
    s = stage_summary(runs([5, None, None]))["t2"]
    assert (s.median, s.lo, s.n_censored) == (math.inf, 5.0, 2)
    # an even count whose upper middle run is censored: the median is not determined either; one censored run of
    # four leaves both middle runs observed
    assert stage_summary(runs([1, 2, None, None]))["t4"].median == math.inf
    assert stage_summary(runs([1, 2, 3, None]))["t4"].median == 2.5


def test_summary_refuses_ambiguous_censoring():
    mixed = runs([50], last=100) + runs([None], last=40)           # censored at 40 but another run saw 50
    with pytest.raises(ValueError, match="ambiguous"):
        stage_summary(mixed)
    with pytest.raises(ValueError, match="at least one run"):
        stage_summary([])
