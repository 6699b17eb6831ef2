"""Every file refvit reads back is what it claims to be, and every stop is a clean one (second round of fault
injection). One test per kind of fault; each was seen to fail on the code before its fix.

New names are reached through their modules so that, on the old code, each test fails on its own fault rather than
the whole file on an import.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import refvit.io as rio
from refvit import DataConfig, ModelConfig, TrainConfig
from refvit.jiang2024 import dynamics as dyn
from refvit.results import dynamics_run_file, load_history


def tiny_dynamics(seed=0) -> "dyn.Dynamics":
    """Two regimes × 2 runs of a d=64 model, 30 steps: milliseconds per run."""
    return dyn.Dynamics("tiny", (("harmful", 1), ("benign", 8)), 2, seed,
                        DataConfig(N=4, M=3, d=64, sigma_p=1.0, sigma_w=0.05, n_test=20),
                        ModelConfig(d_h=8, d_v=8, init_scale=1.0),
                        TrainConfig(lr=0.5, steps=30, eval_every=1, coords="span", backend="numpy"))


def edit_summary(path, **changes):
    """Rewrite a history file with its summary changed (a hand-edited or foreign file)."""
    s, a = load_history(path)
    rio.save_npz(path, **a, summary=np.array(json.dumps({**s, **changes})))


@pytest.fixture()
def dyn_folder(tmp_path):
    out = tmp_path / "dyn"
    dyn.run_dynamics(tiny_dynamics(), out, workers=0, progress=False)
    return out


# --- 1. Figure-3 dynamics files are checked against what they claim to be --------------------------------------

@pytest.mark.parametrize("fault", ["other regime", "other repeat", "other seed", "truncated", "status bogus",
                                   "coefficients bogus", "nan loss"])
def test_a_dynamics_file_that_is_not_its_run_is_quarantined_and_recomputed(dyn_folder, tmp_path, capsys, fault):
    spec = tiny_dynamics()
    f = {(n, r): dyn_folder / dynamics_run_file(n, mu, r) for n, mu, r in spec.specs()}
    target = f[("harmful", 1)]
    good = load_history(target)[1]["h_train_loss"]
    if fault == "other regime":
        target.write_bytes(f[("benign", 1)].read_bytes())
    elif fault == "other repeat":
        target.write_bytes(f[("harmful", 0)].read_bytes())
    elif fault == "other seed":             # the same run of a folder made with seed 1
        dyn.run_dynamics(tiny_dynamics(seed=1), tmp_path / "dyn1", workers=0, progress=False)
        target.write_bytes((tmp_path / "dyn1" / target.name).read_bytes())
    elif fault == "truncated":               # used to stop every rerun with the same error
        target.write_bytes(target.read_bytes()[:200])
    elif fault == "status bogus":
        edit_summary(target, status="finished")
    elif fault == "coefficients bogus":      # a categorical field outside its allowed values
        edit_summary(target, coefficients="maybe")
    else:                                    # a trained run promises a finite final loss
        edit_summary(target, status="converged", train_loss=float("nan"))
    dyn.run_dynamics(spec, dyn_folder, workers=0, progress=False)
    assert (dyn_folder / "quarantine" / target.name).exists(), capsys.readouterr().err
    # the recomputed run is the original one: the same stream gives the same losses exactly
    assert np.array_equal(load_history(target)[1]["h_train_loss"], good)
    meta, runs = dyn.load_runs(dyn_folder)
    assert runs["harmful"][1][0]["repeat"] == 1 and runs["harmful"][1][0]["regime"] == "harmful"


def test_fig_dynamics_main_names_a_swapped_file_in_one_line(dyn_folder, tmp_path, capsys):
    from refvit.analysis import fig_dynamics
    spec = tiny_dynamics()
    a, b = (dyn_folder / dynamics_run_file("benign", 8, r) for r in (0, 1))
    b.write_bytes(a.read_bytes())           # repeat 0 copied over repeat 1: the bands would shrink silently
    assert fig_dynamics.main([str(dyn_folder), "--out", str(tmp_path / "f.png"), "--dpi", "30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(b) in err and "repeat" in err
    assert spec.identity("benign", 8, 1)["repeat"] == 1


# --- 2. the fit never uses a table that is not the folder's verified runs --------------------------------------

def test_fit_rebuilds_a_table_of_another_seed_from_the_verified_run_files(tmp_path, capsys):
    from refvit.jiang2024.boundary import fit_sweep
    from refvit.jiang2024.sweep import run_sweep

    from .test_sweep import tiny_sweep
    a, b = tmp_path / "a", tmp_path / "b"
    run_sweep(tiny_sweep(seed=0), a, workers=0, progress=False)
    run_sweep(tiny_sweep(seed=1), b, workers=0, progress=False)
    ref = fit_sweep(a, n_boot=0, save=False)
    table = (a / "table.csv").read_bytes()
    other = fit_sweep(b, n_boot=0, save=False)
    assert other["C"] != ref["C"]                       # the two seeds' tables do fit differently
    (a / "table.csv").write_bytes((b / "table.csv").read_bytes())     # another seed's table copied into place
    assert fit_sweep(a, n_boot=0, save=False) == ref
    assert (a / "table.csv").read_bytes() == table      # rebuilt, so the figures agree with the fit
    assert str(a / "table.csv") in capsys.readouterr().err


# --- 3. categorical fields are accepted only from their allowed values -----------------------------------------

def test_a_study_table_never_copies_a_status_it_did_not_verify(tmp_path, capsys):
    """The label-noise study's tables are built from each flip rate's sweep folder: a table.csv there with an
    unknown status (or a converged flag that contradicts it) must not reach the study's table."""
    from refvit.jiang2024.studies.labelnoise import p_folder, write_label_noise_tables
    from refvit.jiang2024.sweep import run_sweep

    from .test_sweep import tiny_sweep
    sw = tiny_sweep(Ns=(2, 4), mus=(1, 8), repeats=1)
    run_sweep(sw, tmp_path / p_folder(0.0), workers=0, progress=False)
    meta = {"flip_rates": [0.0], "benign_factor": 2.0}
    ref = write_label_noise_tables(meta, tmp_path)["table"]
    sub = tmp_path / p_folder(0.0) / "table.csv"
    lines = sub.read_text().splitlines()
    col = lines[0].split(",").index("status")
    bad = [",".join("finished" if j == col else c for j, c in enumerate(ln.split(","))) for ln in lines[1:]]
    sub.write_text("\n".join([lines[0], *bad]) + "\n")
    got = write_label_noise_tables(meta, tmp_path)["table"]
    assert {r["status"] for r in got} <= {"converged", "max_steps", "diverged", "overflow", "nonfinite_test"}
    assert [r["status"] for r in got] == [r["status"] for r in ref]
    assert "finished" not in (tmp_path / "table.csv").read_text()


def test_a_history_whose_converged_flag_contradicts_its_status_is_refused(tmp_path):
    from refvit import runstore
    (tmp_path / "runs").mkdir()
    path = tmp_path / "runs" / "a.npz"
    summary = {"repeat": 0, "status": "max_steps", "converged": True, "train_loss": 0.1, "test_loss": 0.2}
    rio.save_npz(path, step=np.arange(3), summary=np.array(json.dumps(summary)))
    assert runstore.load_or_quarantine(path, {"repeat": 0}) is None
    assert (tmp_path / "quarantine" / "a.npz").exists()


# --- 5. Ctrl-C: one line (what was saved, how to resume), exit 130, workers ended -------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds workers through /proc")
@pytest.mark.parametrize("when", ["mid-run", "start-up"])
def test_ctrl_c_during_a_sweep_prints_one_line_and_exits_130_with_its_workers_ended(tmp_path, when):
    """mid-run: both workers busy with a run; start-up: as soon as they exist, while they still import (a worker
    interrupted there used to print its own KeyboardInterrupt traceback)."""
    from .problems import PATIENCE, wait_until
    from .test_faults import alive, cpu_seconds, end_leftovers, pool_workers
    from .test_sweep import REPO
    from refvit.jiang2024.sweep import Sweep
    # each run is 4000 steps of dense training (seconds), so the workers are mid-run when Ctrl-C arrives
    sw = Sweep("slow", (2, 4), (1, 2), 1, 0, DataConfig(N=2, M=16, d=1024, mu_norm=1.0, n_test=20),
               ModelConfig(d_h=256, d_v=256), TrainConfig(lr=0.01, steps=4000, backend="numpy"))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(sw.to_dict()))
    out = tmp_path / "out"
    # The sweep takes Ctrl-C as under a terminal even when these tests run in a background job, which starts with
    # SIGINT ignored: an ignored signal stays ignored across exec (Python would install no handler for it), while a
    # handled one is reset to the default. So SIGINT is handled here while the sweep starts.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "refvit.cli", "sweep", str(out), "--spec", str(spec),
                                 "--workers", "2", "--no-progress"], cwd=REPO, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGINT, old)
    workers = set()

    def two_workers():
        assert proc.poll() is None, "the sweep ended before it started 2 workers"
        workers.update(pool_workers(proc.pid))
        return len(workers) >= 2

    try:
        wait_until(two_workers, "the sweep starting 2 workers")
        if when == "mid-run":
            wait_until(lambda: all(cpu_seconds(w) > 3.0 for w in workers), "both workers busy with a run")
        os.killpg(proc.pid, signal.SIGINT)            # a terminal sends Ctrl-C to the whole process group
        err = proc.communicate(timeout=PATIENCE)[1].decode()
        assert proc.returncode == 130, err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "0 of 4 runs of sweep slow are saved in" in err and str(out) in err and "resume" in err, err
        wait_until(lambda: not any(alive(w) for w in workers), "workers outlived the interrupted sweep")
    finally:
        end_leftovers(workers, proc)


# --- 6. expected errors end in one line naming what to change ---------------------------------------------------

def test_sizes_that_cannot_be_allocated_are_refused_before_allocating(monkeypatch):
    import refvit.primitives as prim
    from refvit.jiang2024.data import dataset_bytes, make_dataset
    from refvit.jiang2024.sweep import Sweep
    cfg = DataConfig(N=2_000_000, M=16, d=4096, n_test=20)
    # (N + n_test)·M·d float64, and as much again for the two draws' temporaries (drawn at the same time): by hand
    assert dataset_bytes(cfg) == 8 * (2_000_020 * 16 * 4096) + 8 * 2_000_020 * 16 * 4096
    monkeypatch.setattr(prim, "physical_memory", lambda: 2**30)       # a 1 GiB machine, whatever this one has
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"N=2000000.*GiB.*reduce N"):
        make_dataset(cfg, rng, rng)
    with pytest.raises(ValueError, match=r"N=2000000.*GiB"):
        Sweep("x", (2, 2_000_000), (1,), 1, 0, cfg)
    small = cfg.replace(N=4, d=64)
    assert make_dataset(small, rng, rng).X.shape == (4, 16, 64)        # what fits is not refused


@pytest.mark.parametrize("args, name", [(("cfg", 1, 2), "data_rng"), (("cfg", "gen", None), "test_rng"),
                                        (({"N": 2}, "gen", "gen"), "cfg")])
def test_make_dataset_names_an_argument_of_the_wrong_type(args, name):
    from refvit.jiang2024.data import make_dataset
    real = {"cfg": DataConfig(N=2, M=3, d=8), "gen": np.random.default_rng(0)}
    with pytest.raises(ValueError, match=name):
        make_dataset(*(real.get(a, a) if isinstance(a, str) else a for a in args))


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_non_finite_timeout_is_one_line(value, capsys, tmp_path):
    from refvit.cli import main
    (tmp_path / "f.py").write_text("def forward(W_Q, W_K, W_V, w_O, X):\n    return X[:, 0, 0] * 0.0\n")
    assert main(["crosscheck", f"{tmp_path / 'f.py'}:forward", "--timeout", value, "--cases", "small"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "timeout" in err


@pytest.mark.parametrize("drop", ["steps", "traj_steps", "cases", "case file", "case settings"])
def test_a_golden_manifest_missing_a_field_is_one_line_naming_it(tmp_path, drop):
    from refvit import golden
    m = json.loads((Path(__file__).parent / "golden" / "manifest.json").read_text())
    if drop.startswith("case "):
        m["cases"][0].pop(drop.split()[1])
    else:
        m.pop(drop)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=drop.split()[-1]):
        golden.regenerate(tmp_path / "g" / "manifest.json", tmp_path / "out")
    with pytest.raises(ValueError, match=drop.split()[-1]):
        golden.check(tmp_path / "g")


# --- 7. messages name the path; output paths are checked before the work ----------------------------------------

def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, monkeypatch, capsys):
    import errno
    import os as os_mod

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os_mod, "fsync", full)       # what a full disk does to the last step of every write
    target = tmp_path / "deep" / "x.json"

    @rio.one_line_errors
    def main():
        rio.save_json(target, {"a": 1})
    assert main() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(target) in err and "No space left" in err
    assert not target.exists() and not list(target.parent.glob(".*.tmp"))    # no partial file left behind


def test_a_json_output_under_a_plain_file_is_refused_before_any_work(tmp_path, capsys):
    from refvit.cli import main
    called = tmp_path / "called"
    (tmp_path / "f.py").write_text(f"from pathlib import Path\ndef forward(W_Q, W_K, W_V, w_O, X):\n"
                                   f"    Path({str(called)!r}).touch()\n    return X[:, 0, 0] * 0.0\n")
    (tmp_path / "plain").write_text("x")
    assert main(["crosscheck", f"{tmp_path / 'f.py'}:forward", "--json", str(tmp_path / "plain" / "r.json"),
                 "--cases", "small"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "plain") in err
    assert not called.exists()                       # refused before the user's forward ran even once


# --- 8. modules that look runnable run, or say how --------------------------------------------------------------

@pytest.mark.parametrize("module, command", [
    ("refvit.jiang2024.sweep", "refvit sweep OUT"), ("refvit.jiang2024.dynamics", "refvit reproduce"),
    ("refvit.jiang2024.coefficients", "refvit coefficients"), ("refvit.pipelines", "refvit demo|reproduce"),
    ("refvit.jiang2024.studies.optimizers", "refvit study optimizers"),
    ("refvit.jiang2024.studies.labelnoise", "refvit study label-noise"),
    ("refvit.jiang2024.studies.sharpness", "refvit study sharpness"),
    ("refvit.jiang2024.studies.phases", "refvit study phases"),
    ("refvit.li2025.study", "refvit study signgd"), ("refvit.li2025.experiment", "refvit study signgd"),
    ("refvit.fit", "refvit fit SWEEP_DIR")])
def test_python_dash_m_on_a_library_module_says_which_command_runs_it(tmp_path, module, command):
    from .test_sweep import REPO
    r = subprocess.run([sys.executable, "-m", module, str(tmp_path / "out")], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    # runpy may warn first that a package's __init__ imported the module already; the message is the last line
    assert r.returncode != 0 and command in r.stderr.splitlines()[-1] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


# --- 9. quarantined files are counted in the summary ------------------------------------------------------------

def test_the_summary_counts_the_quarantined_files_and_their_size(tmp_path):
    from refvit.analysis.summaries import reproduce_summary
    from refvit.jiang2024.boundary import fit_sweep
    from refvit.jiang2024.sweep import run_sweep

    from .test_sweep import tiny_sweep
    sw = tiny_sweep()
    run_sweep(sw, tmp_path, workers=0, progress=False)
    fit_sweep(tmp_path, n_boot=0)
    clean = reproduce_summary(tmp_path)
    assert "quarantine" not in clean                 # nothing set aside, nothing said: the summary is unchanged
    runs = sorted((tmp_path / "runs").glob("*.json"))
    runs[0].write_text("{}")                         # 2 bytes
    runs[1].write_text("[1, 2]")                     # 6 bytes
    run_sweep(sw, tmp_path, workers=0, progress=False)
    text = reproduce_summary(tmp_path)
    assert text.startswith(clean)
    assert "quarantined: 2 files (8 bytes)" in text and str(tmp_path) in text


# --- 1 (continued). coefficient files are checked before they are drawn -----------------------------------------

@pytest.fixture(scope="module")
def coefficient_file(tmp_path_factory):
    from refvit.cli import main
    res = tmp_path_factory.mktemp("coef")
    assert main(["coefficients", "train", "--cell", "dynamics", "--mu", "30", "--steps", "8", "--results",
                 str(res), "--no-draw"]) == 0
    return res / "coefficients_dynamics_mu30.npz"


@pytest.mark.parametrize("fault", ["status bogus", "setting bogus", "short series", "N of another run",
                                   "a dynamics file"])
def test_a_coefficient_file_that_is_not_what_it_claims_is_named_in_one_line(coefficient_file, dyn_folder,
                                                                            tmp_path, capsys, fault):
    from refvit.cli import main
    bad = tmp_path / "bad.npz"
    a = rio.load_npz(coefficient_file)
    meta = json.loads(str(a.pop("summary")))
    if fault == "status bogus":
        meta["status"] = "finished"
    elif fault == "setting bogus":
        meta["setting"] = "somewhere"
    elif fault == "short series":                     # a tracked series one row short of the losses
        a["h_rho"] = a["h_rho"][:-1]
    elif fault == "N of another run":
        meta["N"] = meta["N"] + 2
    if fault == "a dynamics file":
        bad.write_bytes((dyn_folder / dynamics_run_file("benign", 8, 0)).read_bytes())
    else:
        rio.save_npz(bad, **a, summary=np.array(json.dumps(meta)))
    assert main(["coefficients", "draw", str(bad), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err, err
    assert not (tmp_path / "c.png").exists()
    # the file as written draws
    assert main(["coefficients", "draw", str(coefficient_file), "--out", str(tmp_path / "ok.png")]) == 0


def test_a_boundary_without_finite_c_is_one_line_not_an_overflow(tmp_path):
    """On a 2 × 2 grid whose labels follow ‖μ‖ alone, the MLE is separable and Firth's fit has β₁ ≈ 0: C = e^(−β₀/β₁)
    is beyond float64, which used to end in an OverflowError traceback."""
    from refvit.jiang2024.boundary import fit_sweep
    from refvit.jiang2024.sweep import run_sweep

    from .test_sweep import tiny_sweep
    run_sweep(tiny_sweep(Ns=(2, 4), mus=(1, 8), repeats=1), tmp_path, workers=0, progress=False)
    with pytest.raises(ValueError, match="no finite C.*widen the grid"):
        fit_sweep(tmp_path, n_boot=0)


# --- 4. a damaged file anywhere is set aside and recomputed, never blocks a rerun -------------------------------

@pytest.mark.parametrize("text", ['{"seed": 0, "da', "", "{}", "[]", "\x00\x7f"])
def test_a_damaged_dynamics_manifest_is_renewed_and_its_runs_kept(dyn_folder, capsys, text):
    before = {p.name: p.stat().st_mtime_ns for p in dyn_folder.glob("*.npz")}
    (dyn_folder / "dynamics.json").write_text(text)
    dyn.run_dynamics(tiny_dynamics(), dyn_folder, workers=0, progress=False)       # used to stop every rerun
    assert "dynamics.json" in capsys.readouterr().err
    assert (dyn_folder / "quarantine" / "dynamics.json").read_text() == text      # set aside, not deleted
    assert {p.name: p.stat().st_mtime_ns for p in dyn_folder.glob("*.npz")} == before   # runs checked, kept
    assert dyn.load_runs(dyn_folder)[0]["seed"] == 0
    # an intact manifest of other settings is still refused: its runs would be another experiment's
    with pytest.raises(ValueError, match="different settings"):
        dyn.run_dynamics(tiny_dynamics(seed=1), dyn_folder, workers=0, progress=False)
