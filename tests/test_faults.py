"""Fault injection: nothing is silently wrong. One test per kind of fault; each failed on the code before the fix.

New names are reached through their modules (``rio.FileProblem``) so that on the old code each test fails on its
own fault rather than the whole file on an import.
"""
import json
import math
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import refvit.io as rio
import refvit.jiang2024.sweep as sweep_mod
from refvit.analysis import fig_heatmap
from refvit import DataConfig, ModelConfig, Params, TrainConfig, forward
from refvit.cli import main as cli_main
from refvit.streams import streams
from refvit.jiang2024.experiment import draw_cell
from refvit.fit import describe, fit_boundary
from refvit.jiang2024.boundary import fit_sweep
from refvit.results import load_history, sweep_run_file
from refvit.jiang2024.sweep import Sweep, run_sweep
from refvit.jiang2024.tracking import track_train
from refvit.jiang2024.train import train

from .problems import PATIENCE, wait_until
from .test_sweep import REPO, csv_without_seconds, tiny_sweep


def small_cell():
    data_cfg = DataConfig(N=4, M=3, d=16, mu_norm=1.0, sigma_p=1.0, sigma_w=0.05, n_test=4)
    return draw_cell(data_cfg, ModelConfig(d_h=4, d_v=4, init_scale=1.0), 0, (1,))


# --- 1. sweeps verify what they read --------------------------------------------------------------------------

def test_sweep_quarantines_and_recomputes_every_bad_run_file(tmp_path, capsys):
    sw = tiny_sweep(Ns=(2, 4), mus=(1, 8), repeats=2)
    run_sweep(sw, tmp_path / "ref", workers=0, progress=False)
    out = tmp_path / "hurt"
    run_sweep(sw, out, workers=0, progress=False)
    runs = out / "runs"
    names = [sweep_run_file(*s) for s in sw.specs()]
    good = json.loads((runs / names[0]).read_text())
    faults = {
        names[0]: (runs / names[0]).read_text()[:40],                      # truncated
        names[1]: "\x00garbage\x7f",                                        # garbage
        names[2]: "",                                                       # empty
        names[3]: "{}",
        names[4]: "[]",
        names[5]: json.dumps(good),                                         # another run's row (wrong N/‖μ‖)
        names[6]: json.dumps({**json.loads((runs / names[6]).read_text()), "settings_hash": "0" * 16}),
        names[7]: json.dumps({**json.loads((runs / names[7]).read_text()), "test_loss": float("nan")}),
    }
    for name, text in faults.items():
        (runs / name).write_text(text)
    capsys.readouterr()
    run_sweep(sw, out, workers=0, progress=False)
    err = capsys.readouterr().err
    assert sorted(p.name for p in (out / "quarantine").iterdir()) == sorted(faults)   # moved aside, not deleted
    for name in faults:
        assert name in err                                                  # each one named
    assert csv_without_seconds(out / "table.csv") == csv_without_seconds(tmp_path / "ref" / "table.csv")

    # a damaged manifest never blocks a rerun: named, set aside and written anew (every run file carries the
    # settings hash, so the runs are still checked one by one)
    (out / "sweep.json").write_text('{"seed": 0, "da')
    capsys.readouterr()
    run_sweep(sw, out, workers=0, progress=False)
    assert "sweep.json: not valid JSON" in capsys.readouterr().err
    assert (out / "quarantine" / "sweep.json").read_text() == '{"seed": 0, "da'
    assert json.loads((out / "sweep.json").read_text()) == json.loads(json.dumps(sw.to_dict()))
    # the folder is claimed exclusively while a sweep runs: a second sweep (other settings) is refused
    with sweep_mod.claim(out):
        with pytest.raises(ValueError, match="another sweep is running"):
            run_sweep(tiny_sweep(seed=1, Ns=(2, 4), mus=(1, 8), repeats=2), out, workers=0, progress=False)
    # a run without a finite test loss keeps a status of its own, and the fit counts it as excluded
    path = out / "runs" / names[2]
    row = json.loads(path.read_text())
    path.write_text(json.dumps({**row, "status": "nonfinite_test", "converged": False, "test_loss": float("nan"),
                                "test_error": float("nan")}))
    sweep_mod.write_table(sw, out)
    fit = fit_sweep(out, n_boot=0, save=False, method="firth")
    assert fit["excluded"].get("nonfinite_test") == 1 and "1 nonfinite_test" in describe(fit)
    if os.geteuid() != 0:                       # root writes through permissions: the check cannot fail there
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="cannot be written"):
            run_sweep(sw, locked / "sweep", workers=0, progress=False)


# --- 2. no orphans ----------------------------------------------------------------------------------------------

def children(pid: int) -> set:
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out |= {int(c) for c in task.read_text().split()}
    return out


def _stat(pid: int) -> list:
    """The fields of /proc/<pid>/stat after the command name (state first), [] once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()
    except (FileNotFoundError, ProcessLookupError):
        return []


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return bool(stat) and stat[0] != "Z"


def end_leftovers(workers, proc) -> None:
    """Kill what a test started and left running: only the worker PIDs it found, and its own process."""
    for w in workers:
        if alive(w):
            os.kill(w, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (fields 14 and 15 of /proc/<pid>/stat), 0 once it is gone."""
    stat = _stat(pid)
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK") if stat else 0.0


def pool_workers(pid: int) -> set:
    """The multiprocessing workers among the children of ``pid`` (their command line runs spawn_main)."""
    found = set()
    for c in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes():
                found.add(c)
        except (FileNotFoundError, ProcessLookupError):
            pass            # a child that ended between the listing and the read
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds workers through /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_end_when_the_parent_is_killed(tmp_path, sig):
    """Every wait polls for its event with the generous bound of ``wait_until``: on a busy machine start-up alone
    can take seconds, and a fixed deadline of a few seconds fails there at random."""
    # each run is minutes of dense training, so the workers are mid-run when the parent dies
    sw = Sweep("slow", (2, 4), (1, 2), 1, 0, DataConfig(N=2, M=16, d=1024, mu_norm=1.0, n_test=20),
               ModelConfig(d_h=256, d_v=256), TrainConfig(lr=0.01, steps=4000, backend="numpy"))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(sw.to_dict()))
    cmd = [sys.executable, "-m", "refvit.cli", "sweep", str(tmp_path / "out"), "--spec", str(spec),
           "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    workers = set()

    def two_workers():
        assert proc.poll() is None, "the sweep ended before it started 2 workers"
        found = pool_workers(proc.pid)
        workers.update(found)                       # every worker seen, so that `finally` can clean up after it
        return len(found) >= 2

    try:
        wait_until(two_workers, "the sweep starting 2 workers")
        # mid-run, not mid-start-up: each worker has used more CPU than its start-up (importing numpy, scipy and
        # refvit.cli takes 1.4 s of CPU), and far less than one run of this sweep (minutes of CPU)
        wait_until(lambda: all(cpu_seconds(w) > 3.0 for w in workers), "both workers busy with a run")
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.kill(proc.pid, sig)
        proc.wait(timeout=PATIENCE)
        # the kernel's parent-death signal or the 0.2 s watchdog ends them: fast, but polled, never a fixed deadline
        wait_until(lambda: not any(alive(w) for w in workers), "workers outlived their parent")
        # `… | cat` returns: stdout reaches EOF once no process holds it
        wait_until(lambda: select.select([proc.stdout], [], [], 0.05)[0], "stdout never reached EOF")
        assert proc.stdout.read() == b""
    finally:
        end_leftovers(workers, proc)
        proc.stdout.close()


# --- 3. overflow named as overflow --------------------------------------------------------------------------------

def test_overflow_is_reported_as_overflow_with_its_scale():
    data, p = small_cell()
    _, h = train(p, data.X, data.y, X_test=data.X_test * 1e160, y_test=data.y_test, lr=0.1, steps=5)
    assert h.status == "nonfinite_test" and math.isnan(h.final_test_loss) and math.isnan(h.final_test_error)
    assert "overflowed" in h.message and "max token norm" in h.message and "lr" not in h.message
    _, h = train(p, data.X * 1e160, data.y, lr=0.1, steps=5)
    assert h.status == "overflow" and "max |logit|" in h.message and "reduce lr" not in h.message
    with pytest.raises(ValueError, match="overflowed"):
        forward(p, data.X * 1e160)
    _, h = train(p, data.X, data.y, lr=1e200, steps=5)              # finite start, non-finite after updates
    assert h.status == "diverged" and "reduce lr" in h.message
    with pytest.raises(ValueError, match="overflows in float64"):
        DataConfig(mu_norm=1e200)
    with pytest.raises(ValueError, match="underflows to 0"):
        ModelConfig(init_scale=1e300)


# --- 4. validation at the boundary --------------------------------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda: streams(1.7), "non-negative integers"),
    (lambda: streams(True), "non-negative integers"),
    (lambda: streams(0, 4, 2.5), "non-negative integers"),
    (lambda: tiny_sweep(Ns=(2.9, 4.2)), "whole numbers"),
    (lambda: TrainConfig(adam_betas=(0.9,)), "pair"),
    (lambda: TrainConfig(adam_betas=0.9), "pair"),
    (lambda: TrainConfig(adam_betas=("0.9", 0.999)), "numbers"),
    (lambda: DataConfig(sigma_p=1e-200), "sigma_p"),
    (lambda: DataConfig(snr_axis_sigma=1e-200), "snr_axis_sigma"),
])
def test_bad_values_are_refused_at_the_boundary(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cli_options_are_checked_while_parsing_and_no_boot_promises_no_intervals(capsys):
    for argv in (["coefficients", "train", "--N", "-2"], ["coefficients", "train", "--steps", "0"],
                 ["reproduce", "--workers", "-1"]):
        with pytest.raises(SystemExit) as stop:
            cli_main(argv)
        assert stop.value.code == 2
    rng = np.random.default_rng(0)
    N = np.repeat([2.0, 4.0, 8.0, 16.0], 25)
    snr = np.tile(np.geomspace(0.1, 10, 25), 4)
    benign = (rng.random(100) < 1 / (1 + (2.5 / (N * snr ** 2)) ** 2)).astype(float)
    text = describe(fit_boundary(N, snr, benign, rng, n_boot=0))
    assert "no intervals" in text and "CIs" not in text


# --- 5. one error path for files ------------------------------------------------------------------------------------

def test_every_loader_names_the_file_and_the_cli_prints_one_line(tmp_path, capsys):
    bad = {"missing.json": None, "empty.json": "", "garbage.json": "{nope", "list.json": "[]"}
    for name, text in bad.items():
        if text is not None:
            (tmp_path / name).write_text(text)
    for name in bad:
        with pytest.raises(rio.FileProblem) as e:
            rio.load_json(tmp_path / name, expect=dict)
        assert e.value.path == tmp_path / name and str(tmp_path / name) in str(e.value)
    rio.save_npz(tmp_path / "ok.npz", a=np.arange(3.0))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:30])
    (tmp_path / "text.npz").write_text("not an archive")
    np.savez(tmp_path / "obj.npz", a=np.array([{}], dtype=object))
    for name in ("cut.npz", "text.npz", "obj.npz", "nowhere.npz"):
        with pytest.raises(rio.FileProblem, match=name):
            rio.load_npz(tmp_path / name)
    with pytest.raises(rio.FileProblem, match="not a history file"):
        load_history(tmp_path / "ok.npz")
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(rio.FileProblem, match="line 3"):
        rio.read_csv(tmp_path / "t.csv")
    with pytest.raises(rio.FileProblem, match="no header"):
        rio.read_columns(tmp_path / "empty.json")
    capsys.readouterr()
    runs = [(cli_main, ["coefficients", "weights", str(tmp_path / "nowhere.npz")], "nowhere.npz: missing"),
            (cli_main, ["coefficients", "weights", str(tmp_path / "ok.npz"), "--results", str(tmp_path)],
             "ok.npz: lacks"),
            (cli_main, ["coefficients", "draw", str(tmp_path / "text.npz")], "text.npz: not an .npz"),
            (fig_heatmap.main, [str(tmp_path)], "table.csv: missing")]
    for main, argv, message in runs:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("refvit: error: ") and message in err and err.count("\n") == 1, err


# --- 6. bounded memory on long runs ---------------------------------------------------------------------------------

def test_history_every_keeps_every_kth_row_and_the_last(tmp_path):
    data, p = small_cell()
    _, full = train(p, data.X, data.y, lr=0.1, steps=25)
    _, thin = train(p, data.X, data.y, config=TrainConfig(lr=0.1, steps=25, history_every=10))
    _, last = train(p, data.X, data.y, config=TrainConfig(lr=0.1, steps=25, history_every=0))
    assert list(thin.step) == [0, 10, 20, 25] and list(last.step) == [25]
    for key, series in full.values.items():
        np.testing.assert_array_equal(thin[key], series[thin.step])   # exact: the same trajectory, subsampled
        np.testing.assert_array_equal(last[key], series[-1:])
    assert thin.final_train_loss == full.final_train_loss


def test_overflow_is_named_under_the_coefficient_tracker_too():
    """The tracker is an objective like the others: an overflow at the start gets the same status and message."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 3, 8)) * 1e200            # finite tokens whose logits overflow in float64
    p = Params(*(rng.standard_normal(s) for s in ((8, 2), (8, 2), (8, 2), (2,))))
    with np.errstate(over="ignore"):
        _, hist, _ = track_train(p, X, np.array([1.0, -1.0, 1.0, -1.0]), config=TrainConfig(lr=0.1, steps=3))
    assert hist.status == "overflow" and "overflowed" in hist.message and hist.steps == 0
