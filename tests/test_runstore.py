"""Folders of saved runs (refvit.runstore): a file is trusted only when it is the run it claims to be and whole;
anything else is moved aside (never lost) and recomputed."""
import json
import re

import numpy as np
import pytest
from scipy.special import expit

from refvit.analysis.fig_heatmap import cell_grid
from refvit import runstore
from refvit.io import FileProblem, save_npz, write_manifest
from refvit.jiang2024.boundary import fit_columns
from refvit.jiang2024.sweep import Sweep
from refvit.results import ALWAYS_FINITE, COLUMNS, SETTINGS_HASH, check_run_row, counted

from .problems import table_row

EXPECT = {"regime": "benign", "mu_norm": 30.0, "repeat": 2, "seed": 0, "settings_hash": "abc"}


def history_file(path, summary=None, rows=4, series_rows=None):
    """A history file as refvit.results.save_history writes it, with a summary that can be spoiled."""
    summary = {**EXPECT, "status": "converged", "train_loss": 0.01, "test_loss": 0.3, **(summary or {})}
    save_npz(path, step=np.arange(rows), h_train_loss=np.linspace(1, 0, series_rows or rows),
             summary=np.array(json.dumps(summary)))
    return path


def test_a_whole_file_of_the_expected_run_loads(tmp_path):
    (tmp_path / "runs").mkdir()
    got = runstore.load_or_quarantine(history_file(tmp_path / "runs" / "a.npz"), EXPECT, ("h_train_loss",))
    summary, arrays = got
    assert summary["repeat"] == 2 and len(arrays["h_train_loss"]) == 4
    assert not (tmp_path / "quarantine").exists()


@pytest.mark.parametrize("spoil, why", [
    ({"repeat": 3}, "holds the run"),                      # another repeat copied into place
    ({"regime": "harmful"}, "holds the run"),              # another regime
    ({"settings_hash": "zzz"}, "holds the run"),           # made with other settings
    ({"status": "finished"}, "unknown status"),            # a category outside the allowed values
    ({"test_loss": float("nan")}, "not finite"),           # a trained run must have a finite test loss
])
def test_a_file_of_another_run_or_with_bad_values_is_quarantined(tmp_path, capsys, spoil, why):
    (tmp_path / "runs").mkdir()
    path = history_file(tmp_path / "runs" / "a.npz", spoil)
    assert runstore.load_or_quarantine(path, EXPECT, ("h_train_loss",)) is None
    assert not path.exists() and (tmp_path / "quarantine" / "a.npz").exists()
    assert why in capsys.readouterr().err


def test_a_diverged_run_may_have_a_nonfinite_loss(tmp_path):
    (tmp_path / "runs").mkdir()
    path = history_file(tmp_path / "runs" / "a.npz", {"status": "diverged", "test_loss": float("nan")})
    assert runstore.load_or_quarantine(path, EXPECT) is not None


def test_a_truncated_file_or_a_short_series_is_quarantined(tmp_path):
    (tmp_path / "runs").mkdir()
    short = history_file(tmp_path / "runs" / "short.npz", series_rows=3)        # 3 rows of a 4-step history
    assert runstore.load_or_quarantine(short, EXPECT, ("h_train_loss",)) is None
    cut = history_file(tmp_path / "runs" / "cut.npz")
    cut.write_bytes(cut.read_bytes()[:50])
    assert runstore.load_or_quarantine(cut, EXPECT, ("h_train_loss",)) is None
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == ["cut.npz", "short.npz"]


def test_quarantining_the_same_name_three_times_keeps_every_copy(tmp_path):
    (tmp_path / "runs").mkdir()
    contents = []
    for k in range(3):
        path = tmp_path / "runs" / "a.json"
        path.write_text(f"copy {k}")
        contents.append(f"copy {k}")
        runstore.quarantine(path, "test")
    kept = sorted(p.read_text() for p in (tmp_path / "quarantine").iterdir())
    assert kept == contents


def test_a_folder_is_owned_by_one_process_at_a_time(tmp_path):
    with runstore.claim(tmp_path, "study"):
        with pytest.raises(FileProblem, match="another study is running"):
            with runstore.claim(tmp_path, "study"):
                pass
    with runstore.claim(tmp_path):          # released when the first one ends
        pass


def test_the_settings_hash_is_the_sweeps():
    """One hash for every folder kind: the sweep's manifest hash is runstore's hash of its settings."""
    sw = Sweep.quick()
    assert sw.settings_hash() == runstore.settings_hash(sw.settings())
    assert runstore.settings_hash({"a": 1, "b": 2}) == runstore.settings_hash({"b": 2, "a": 1})
    assert runstore.settings_hash({"a": 1}) != runstore.settings_hash({"a": 2})


def _arrays(rows=4):
    summary = {**EXPECT, "status": "converged", "train_loss": 0.01, "test_loss": 0.3}
    return {"step": np.arange(rows), "h_train_loss": np.linspace(1, 0, rows), "summary": np.array(json.dumps(summary))}


def test_compute_missing_keeps_whole_files_and_recomputes_the_rest_with_every_check(tmp_path):
    """Only the jobs whose file is absent or fails its check (identity, and the series it is given) run; a file
    short of a series is quarantined, so the check reaches every reader of the folder."""
    runs = tmp_path / "runs"
    good, short, absent = runs / "good.npz", runs / "short.npz", runs / "absent.npz"
    history_file(runs.mkdir() or good)
    history_file(short, series_rows=3)
    ran = []
    jobs = [(p, EXPECT, lambda name: ran.append(name) or _arrays(), (p.name,)) for p in (good, short, absent)]
    runstore.compute_missing(jobs, "test", workers=0, progress=False, series=("h_train_loss",))
    assert ran == ["short.npz", "absent.npz"]
    assert (tmp_path / "quarantine" / "short.npz").exists() and short.exists() and absent.exists()
    ran.clear()
    runstore.compute_missing(jobs, "test", workers=0, progress=False, series=("h_train_loss",))
    assert ran == []                                                  # everything now whole: nothing recomputed


# --- every check fed what it must refuse ------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["converged", "max_steps"])
@pytest.mark.parametrize("key", ["train_loss", "test_loss"])
def test_a_history_file_of_a_trained_run_with_a_nonfinite_loss_is_refused(tmp_path, status, key):
    # every TRAINED status promises finite losses, not only "converged"
    path = history_file(tmp_path / "a.npz", {"status": status, key: float("inf")})
    with pytest.raises(FileProblem, match=f"{key} not finite although status is '{status}'"):
        runstore.load_run(path, EXPECT)


def run_row(**change) -> dict:
    """A whole run file's row (every column of ``COLUMNS`` and the settings hash), with ``change`` applied."""
    row = {**table_row(N=20, mu_norm=80.0, repeat=1, seed=0, test_loss=0.1, train_loss=0.01, test_error=0.05),
           SETTINGS_HASH: "abc"}
    row.update(change)
    return row


IDENTITY = {"N": 20, "mu_norm": 80.0, "repeat": 1, "seed": 0, SETTINGS_HASH: "abc"}


def test_a_whole_run_row_is_accepted():
    row = run_row()
    assert check_run_row("r.json", row, IDENTITY) is row


@pytest.mark.parametrize("change, why", [
    # a trained run (converged or ran every step) promises finite losses and test error
    *[({"status": "max_steps", "converged": False, k: v}, f"{k} not finite although status is 'max_steps'")
      for k in ("train_loss", "test_loss", "test_error") for v in (float("nan"), float("inf"))],
    *[({k: float("nan")}, f"{k} not finite although status is 'converged'")
      for k in ("train_loss", "test_loss", "test_error")],
    # the settings and timings are finite whatever the status (mu_norm is also checked against the file's name)
    *[({"status": s, "converged": False, k: float("inf")}, f"{k} not finite")
      for s in ("diverged", "overflow") for k in ALWAYS_FINITE if k not in IDENTITY],
    ({"status": "max_steps"}, "converged=True contradicts status 'max_steps'"),
    ({"status": "converged", "converged": False}, "converged=False contradicts"),
    ({"status": "finished"}, "unknown status 'finished'"),
    ({"repeat": 2}, "repeat is 2 but"),
    ({SETTINGS_HASH: "zzz"}, "settings_hash is 'zzz'"),
    ({"N": True}, "column N should be int"),                     # a bool is not a count
    ({"converged": 1}, "column converged should be bool"),
    ({"mu_norm": "80"}, "column mu_norm should be float"),
])
def test_a_run_row_that_breaks_a_promise_is_refused(change, why):
    with pytest.raises(FileProblem, match=re.escape(why)):
        check_run_row("r.json", run_row(**change), IDENTITY)


def test_a_run_row_lacking_a_column_is_refused():
    for k in (*COLUMNS, SETTINGS_HASH):
        row = run_row()
        del row[k]
        with pytest.raises(FileProblem, match=re.escape(f"lacks the column(s) ['{k}']")):
            check_run_row("r.json", row, IDENTITY)


@pytest.mark.parametrize("status", ["diverged", "overflow", "nonfinite_test"])
def test_an_untrained_run_row_may_have_nonfinite_losses(status):
    row = run_row(status=status, converged=False, train_loss=float("nan"), test_loss=float("inf"),
                  test_error=float("nan"))
    assert check_run_row("r.json", row, IDENTITY) is row


def test_the_runs_that_count_are_the_converged_ones_with_a_finite_test_loss():
    """``counted``: the one rule for which runs enter the fit, the heatmap cells and the benign curves."""
    t = {"converged": np.array([True, True, True, True, False, False, False, False]),
         "test_loss": np.array([0.1, 5.0, np.nan, np.inf, 0.1, 0.0, np.nan, -np.inf]),
         "status": np.array(["converged"] * 4 + ["max_steps", "diverged", "overflow", "nonfinite_test"])}
    assert counted(t).tolist() == [True, True, False, False, False, False, False, False]
    for i in range(8):                                         # one run's row gives the same answer
        assert bool(counted({k: v[i] for k, v in t.items()})) == counted(t)[i]


def test_the_fit_and_the_heatmap_count_the_same_runs():
    """Runs that do not count carry extreme test losses at one N: counted by either reader, they would change the
    fit's run count and the cell counts."""
    rng = np.random.default_rng(0)
    rows = []
    for N in (2, 4, 8):
        for mu in (1, 2, 4, 8):
            for r in range(3):
                benign = rng.random() < expit(np.log(N) + 2 * np.log(mu / 4))   # a boundary N·(mu/4)² = 1
                loss = float(rng.uniform(0.0, 0.2) if benign else rng.uniform(0.2, 0.4))
                rows.append(table_row(N=N, mu_norm=float(mu), repeat=r, snr=mu / 8, snr_axis=mu / 2,
                                      test_loss=loss))
    for status, loss in (("max_steps", 0.01), ("diverged", np.nan), ("nonfinite_test", np.nan),
                         ("converged", np.inf)):
        rows.append(table_row(N=8, mu_norm=8.0, repeat=9, snr=1.0, snr_axis=4.0, test_loss=loss, status=status,
                              converged=status == "converged"))
    t = {k: np.array([r[k] for r in rows]) for k in COLUMNS}
    fit = fit_columns(t, {"sigma_p": 1.0, "snr_axis_sigma": 0.25, "d": 64}, n_boot=0)
    n = int(counted(t).sum())
    assert n == 36 and fit["n"] == n and fit["n_not_converged"] == 4
    assert fit["excluded"] == {"diverged": 1, "max_steps": 1, "nonfinite_test": 2}   # the converged inf: nonfinite
    g = cell_grid(t, "snr_axis")
    assert g["n_conv"].sum() == n and g["n_runs"].sum() == len(rows)
    assert g["mean_loss"][-1, -1] == pytest.approx(t["test_loss"][:36][-3:].mean(), rel=1e-15)  # one rounding


# --- the manifest refuses a folder made with other settings -----------------------------------------------------

def test_a_manifest_refuses_a_key_present_on_one_side_only(tmp_path):
    path = tmp_path / "sweep.json"
    write_manifest(path, {"seed": 0, "Ns": [2]})
    with pytest.raises(ValueError, match=r"different settings \(lr\)"):          # a key only the new spec has
        write_manifest(path, {"seed": 0, "Ns": [2], "lr": 0.1})
    with pytest.raises(ValueError, match=r"different settings \(Ns\)"):          # a key only the old one has
        write_manifest(path, {"seed": 0})
    with pytest.raises(ValueError, match=r"different settings \(seed\)"):
        write_manifest(path, {"seed": 1, "Ns": [2]})
    assert json.loads(path.read_text()) == {"seed": 0, "Ns": [2]}                 # nothing written
    write_manifest(path, {"seed": 0, "Ns": [2, 4], "mus": [1]}, ignore=("Ns", "mus"))   # the grid may grow
    assert json.loads(path.read_text()) == {"seed": 0, "Ns": [2, 4], "mus": [1]}
