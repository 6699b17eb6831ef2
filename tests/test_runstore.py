"""Folders of saved runs (refvit.runstore): a file is trusted only when it is the run it claims to be and whole;
anything else is moved aside (never lost) and recomputed."""
import json

import numpy as np
import pytest

from refvit import runstore
from refvit.io import FileProblem, save_npz
from refvit.jiang2024.sweep import Sweep

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
