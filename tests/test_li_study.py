"""The second setting's study (refvit study signgd) on a tiny design: resumable and verified, its tables equal to
independent computations from the run files, the rate fits against closed forms, and bad designs refused."""
import json
import math

import numpy as np
import pytest

from refvit.io import read_csv
from refvit.li2025 import LiDataConfig, LiModelConfig, make_dataset
from refvit.li2025 import experiment as li_experiment
from refvit.li2025.experiment import run_study
from refvit.li2025.study import GOOD_ERROR, SignGDStudy, identity, specs
from refvit.li2025.tables import generalizes, load_part, rate_fits, write_tables
from refvit.results import load_history
from refvit.streams import cell_key, streams
from tests.problems import newton_logistic


def tiny(**changes) -> SignGDStudy:
    """Tenths of a second per run: d = 60, s = 5, 50 test samples, tens of steps."""
    base = dict(runs=2, data=LiDataConfig(N=8, d=60, s=5, n_test=50), model=LiModelConfig(m_k=3, m_v=2),
                snrs=(0.3, 1.0, 3.0), schedules=(("gd", 0.5, 60), ("signgd", 1e-2, 120), ("adam", 1e-2, 120)),
                adam_eps=(1e-8, 1e-2), adam_betas=((0.9, 0.999),), per_decade=10)
    return SignGDStudy("tiny", **{**base, **changes})


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    run_study(tiny(), out, workers=0, progress=False)
    return out


def test_every_run_is_saved_with_its_identity_and_the_tables_are_written(done):
    study = tiny()
    for part, opt, mu, r, _, _, fname in specs(study):
        summary, arrays = load_history(done / part / "runs" / fname)
        assert {k: summary[k] for k in identity(study, part, opt, mu, r)} == identity(study, part, opt, mu, r)
        # the Adam part keeps its final row only (its tables use the summaries); the others a log-spaced history
        assert len(arrays["step"]) == len(arrays["h_train_loss"]) >= (1 if part == "adam" else 3)
    for name in ("snr", "thresholds", "stages", "stage_summary", "rates", "adam"):
        assert (done / f"{name}.csv").exists(), name
    assert [t["optimizer"] for t in read_csv(done / "thresholds.csv")] == ["gd", "signgd", "adam"]


def test_the_snr_table_is_the_run_files_summaries(done):
    """Each row from its file, read here independently; generalizes = trained and test error <= GOOD_ERROR."""
    study, rows = tiny(), read_csv(done / "snr.csv")
    files = [(load_history(done / "snr" / "runs" / spec[6])[0], spec) for spec in specs(study) if spec[0] == "snr"]
    assert len(rows) == len(files) == 3 * 3 * 2
    for row, (s, _) in zip(rows, files):
        assert (row["optimizer"], row["repeat"], row["test_error"]) == (s["optimizer"], s["repeat"], s["test_error"])
        good = s["status"] in ("converged", "max_steps") and s["test_error"] <= GOOD_ERROR
        assert row["generalizes"] == good


def test_the_threshold_is_the_independent_fit_of_the_snr_table(done):
    """Where an optimizer's labels can be fitted, SNR* = exp(−β₀/β₁) of an independent Newton fit on log SNR."""
    rows, thr = read_csv(done / "snr.csv"), read_csv(done / "thresholds.csv")
    for t in thr:
        mine = [r for r in rows if r["optimizer"] == t["optimizer"]]
        b = np.array([float(r["generalizes"]) for r in mine])
        assert (t["n"], t["n_good"]) == (len(mine), int(b.sum()))
        if math.isfinite(t["threshold"]):
            w = newton_logistic(np.log([r["snr"] for r in mine])[:, None], b)
            # 1e-8 relative: two Newton solvers of one convex problem, each converged to ~1e-13 in β
            assert t["threshold"] == pytest.approx(math.exp(-w[0] / w[1]), rel=1e-8)


def test_gd_signgd_and_adam_see_the_same_data_and_init():
    study = tiny()
    mu = study.mu_of(1.0)
    draws = []
    for opt in ("gd", "signgd"):
        rng = streams(study.seed, *cell_key(study.data.N, mu, 1))
        draws.append(make_dataset(study.data.replace(mu_norm=mu), rng.data, rng.test).X)
    np.testing.assert_array_equal(draws[0], draws[1])
    keys = {(p, o, mu_, r) for p, o, mu_, r, *_ in specs(study)}
    assert ("snr", "gd", mu, 1) in keys and ("snr", "signgd", mu, 1) in keys


def test_a_rerun_computes_nothing_and_a_damaged_or_foreign_file_is_recomputed(done, monkeypatch, capsys):
    calls = []
    real = li_experiment.run_cell
    monkeypatch.setattr(li_experiment, "run_cell", lambda *a: calls.append(a) or real(*a))
    run_study(tiny(), done, workers=0, progress=False)
    assert calls == []
    study = tiny()
    names = [spec[6] for spec in specs(study) if spec[0] == "snr"]
    runs = done / "snr" / "runs"
    before = (runs / names[0]).read_bytes()
    (runs / names[0]).write_bytes(before[:100])                        # truncated
    (runs / names[1]).write_bytes((runs / names[2]).read_bytes())       # another run copied into place
    run_study(tiny(), done, workers=0, progress=False)
    assert len(calls) == 2
    assert (runs / names[0]).read_bytes() == before                    # recomputed to the same bytes
    err = capsys.readouterr().err
    assert "holds the run" in err and len(list((done / "snr" / "quarantine").iterdir())) == 2


def test_a_study_with_other_settings_is_refused_in_the_same_folder(done):
    with pytest.raises(ValueError, match="different settings"):
        run_study(tiny(model=LiModelConfig(m_k=4, m_v=2)), done, workers=0, progress=False)


def test_rate_fits_recover_closed_forms():
    t = np.unique(np.rint(np.logspace(0, 3, 40))).astype(int)
    exp_fit = rate_fits(t, np.exp(-0.1 * t - 0.3))
    # exact data: the fits are exact to rounding (1e-9 absolute on O(1) coefficients)
    assert exp_fit["rate"] == pytest.approx(0.1, abs=1e-9) and exp_fit["r2_linear"] == pytest.approx(1.0, abs=1e-12)
    assert exp_fit["better"] == "linear"
    pow_fit = rate_fits(t, 2.0 * t ** -1.5)
    assert pow_fit["power"] == pytest.approx(1.5, abs=1e-9) and pow_fit["better"] == "power"
    assert pow_fit["rows"] == int(np.sum(t >= 10))                     # rows before step 10 are left out
    with_zero = rate_fits(t, np.where(t > 500, 0.0, np.exp(-0.1 * t)))
    assert with_zero["rows"] == int(np.sum((t >= 10) & (t <= 500)))   # a loss of exactly 0 is not a row
    assert rate_fits(np.array([10, 20]), np.array([1.0, 0.5]))["better"] == "none"


def test_generalizes_is_trained_and_small_test_error():
    ok = {"status": "converged", "test_error": GOOD_ERROR}
    assert generalizes(ok) and generalizes({**ok, "status": "max_steps"})
    assert not generalizes({**ok, "test_error": GOOD_ERROR + 1e-9})
    assert not generalizes({**ok, "status": "diverged"})


@pytest.mark.parametrize("change, match", [
    (dict(snrs=(0.5, 0.5)), "snrs must be distinct"), (dict(snrs=(-1.0,)), "snrs must be"),
    (dict(adam_eps=(0.0,)), "adam_eps must be"), (dict(runs=0), "runs must be"),
    (dict(schedules=(("gd", 0.1, 10),)), "schedules must give"), (dict(adam_betas=((1.0, 0.9),)), "adam_betas"),
    (dict(dyn_mu=float("nan")), "mu_norm"),
])
def test_a_bad_design_is_refused_in_one_line(change, match):
    with pytest.raises(ValueError, match=match):
        tiny(**change)


def test_a_saved_design_reads_back_equal(done):
    study = tiny()
    assert SignGDStudy.from_dict(json.loads((done / "study.json").read_text())) == study
    with pytest.raises(ValueError, match="unknown study field"):
        SignGDStudy.from_dict({**study.to_dict(), "colour": 1})


def test_figures_and_summary_are_drawn_from_the_folder(done, tmp_path):
    from refvit.analysis.fig_signgd import signgd_figures
    from refvit.analysis.summaries import signgd_summary
    paths = signgd_figures(done, tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png")
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png"] and all(p.stat().st_size > 10_000 for p in paths)
    text = signgd_summary(done, "refvit study signgd --preset tiny")
    for opt in ("gd", "signgd", "adam"):
        assert f"  {opt:6s} SNR* = " in text
    assert text.startswith("refvit study signgd --preset tiny\n")
