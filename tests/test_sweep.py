"""The Figure-1 sweep: runs reproducible alone, tables independent of executor and of interruptions (SIGKILL too)."""
import copy
import json
import os
import pickle
import platform
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

import refvit.jiang2024.sweep as sweep_mod
from refvit.jiang2024.config import DataConfig, ModelConfig
from refvit.config import TrainConfig
from refvit.jiang2024.experiment import run_cell
from refvit.executors import BLAS_ENV, default_executor
from refvit.io import read_columns as load_table
from refvit.results import TIMING_COLUMNS, sweep_run_file
from refvit.runstore import settings_hash
from refvit.jiang2024.sweep import COLUMNS, Sweep, run_one, run_sweep, table_rows

REPO = Path(__file__).resolve().parents[1]


def tiny_sweep(seed=0, steps=200, loss_threshold=0.01, Ns=(2, 4, 8), mus=(1, 2, 4, 8, 16), repeats=2) -> Sweep:
    """Milliseconds per run; d=64 ≫ N, so it still shows a benign/harmful split near N·SNR² ≈ 2 (runs ~40)."""
    return Sweep("tiny", Ns, mus, repeats, seed,
                 DataConfig(N=2, M=3, d=64, mu_norm=1.0, sigma_p=1.0, sigma_w=0.05, n_test=20),
                 ModelConfig(d_h=8, d_v=8, init_scale=1.0),
                 TrainConfig(lr=1.0, steps=steps, loss_threshold=loss_threshold, backend="numpy"))


def csv_without_seconds(path) -> list[list[str]]:
    """The table's text cells without the timing columns (the only ones allowed to differ)."""
    lines = [line.split(",") for line in Path(path).read_text().splitlines()]
    keep = [j for j, name in enumerate(lines[0]) if name not in TIMING_COLUMNS]
    assert len(keep) == len(lines[0]) - 2
    return [[row[j] for j in keep] for row in lines]


def test_row_equals_the_cell_run_alone(tmp_path):
    sw = tiny_sweep()
    rows = run_sweep(sw, tmp_path, workers=0, progress=False)
    assert [(r["N"], int(r["mu_norm"]), r["repeat"]) for r in rows] == sw.specs()
    # an independent, direct call for one cell in the middle of the grid, streams keyed (seed, N, ‖μ‖, repeat)
    N, mu, rep = 4, 8, 1
    data_cfg = sw.data.replace(N=N, mu_norm=float(mu))
    alone = run_cell(data_cfg, sw.model, sw.train, seed=0, key=(N, mu, rep)).summary
    row = next(r for r in rows if (r["N"], r["mu_norm"], r["repeat"]) == (N, mu, rep))
    for k in ("steps", "status", "train_loss", "test_loss", "test_error", "attn_signal", "attn_noise", "snr"):
        assert row[k] == alone[k], k      # exact: same streams, same code path, same process
    assert row["snr_axis"] == pytest.approx(mu / (0.2 * 8), rel=1e-15)   # ‖μ‖/(0.2·√64), up to one rounding
    # the tiny grid is not degenerate: both regimes occur, so the figure and fit tests below mean something
    losses = [r["test_loss"] for r in rows if r["converged"]]
    assert min(losses) < 0.2 < max(losses)


def test_table_is_independent_of_executor_and_completion_order(tmp_path):
    sw = tiny_sweep()
    run_sweep(sw, tmp_path / "serial", workers=0, progress=False)
    with ThreadPoolExecutor(max_workers=3) as ex:       # runs finish in another order
        run_sweep(sw, tmp_path / "threads", executor=ex, progress=False)
    assert csv_without_seconds(tmp_path / "serial" / "table.csv") == \
        csv_without_seconds(tmp_path / "threads" / "table.csv")
    t = load_table(tmp_path / "serial" / "table.csv")
    assert list(t) == list(COLUMNS)
    assert t["converged"].dtype == bool and t["N"].dtype.kind == "i"


def test_a_stream_tag_gives_other_draws_than_every_untagged_seed():
    """Tagged runs (the studies' pilots) never share streams with reported runs, whatever the seeds."""
    sw = tiny_sweep()
    data_cfg = sw.data.replace(N=4, mu_norm=8.0)
    tagged = run_one(data_cfg, sw.model, sw.train, 0, 0, (1,))
    untagged = {run_one(data_cfg, sw.model, sw.train, seed, 0)["test_loss"] for seed in range(3)}
    assert tagged["test_loss"] not in untagged
    assert Sweep.from_dict(json.loads(json.dumps(replace(sw, stream_tag=(1,)).to_dict()))).stream_tag == (1,)


def test_interrupted_sweep_resumes_without_recomputing(tmp_path, monkeypatch):
    sw = tiny_sweep()
    run_sweep(sw, tmp_path / "ref", workers=0, progress=False)

    calls = []
    real_run_one, real_save = sweep_mod.run_one, sweep_mod.save_json

    def counting_run_one(*args):
        calls.append(args)
        return real_run_one(*args)

    def dying_save(path, obj):                # the process "dies" after 7 runs were saved
        if Path(path).parent.name == "runs" and len(list(Path(path).parent.glob("*.json"))) == 7:
            raise KeyboardInterrupt
        return real_save(path, obj)

    monkeypatch.setattr(sweep_mod, "run_one", counting_run_one)
    monkeypatch.setattr(sweep_mod, "save_json", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sw, tmp_path / "cut", workers=0, progress=False)
    done = {p.name: p.read_text() for p in (tmp_path / "cut" / "runs").glob("*.json")}
    assert len(done) == 7 and not (tmp_path / "cut" / "table.csv").exists()

    monkeypatch.setattr(sweep_mod, "save_json", real_save)
    calls.clear()
    run_sweep(sw, tmp_path / "cut", workers=0, progress=False)
    assert len(calls) == len(sw.specs()) - 7                       # only the missing runs were computed
    for name, text in done.items():                                 # finished runs untouched (their seconds too)
        assert (tmp_path / "cut" / "runs" / name).read_text() == text
    assert csv_without_seconds(tmp_path / "cut" / "table.csv") == csv_without_seconds(tmp_path / "ref" / "table.csv")
    assert table_rows(sw, tmp_path / "cut", timing=False) == table_rows(sw, tmp_path / "ref", timing=False)


def test_interrupt_inside_a_serial_run_stops_at_once_and_keeps_every_finished_run(tmp_path, monkeypatch):
    """Ctrl-C in run 5 of a serial sweep: runs 1-4 are on disk, and nothing after run 5 was started."""
    sw = tiny_sweep()
    real_run_one, calls = sweep_mod.run_one, []

    def interrupted_run_one(*args):
        calls.append(args)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_run_one(*args)

    monkeypatch.setattr(sweep_mod, "run_one", interrupted_run_one)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sw, tmp_path / "cut", workers=0, progress=False)
    assert len(calls) == 5
    assert len(list((tmp_path / "cut" / "runs").glob("*.json"))) == 4


def test_sigkill_mid_sweep_then_restart_gives_the_uninterrupted_table(tmp_path):
    # ~40 ms per run (400 steps, no early stop) so that the kill lands mid-sweep
    sw = tiny_sweep(steps=400, loss_threshold=None, mus=(1, 2, 4, 8, 16, 32), repeats=2)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(sw.to_dict()))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "refvit.cli", "sweep", str(out), "--spec", str(spec), "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    runs, total = out / "runs", len(sw.specs())
    deadline = time.monotonic() + 120
    try:
        while not (runs.exists() and len(list(runs.glob("*.json"))) >= 3):
            assert proc.poll() is None, f"sweep ended before it could be killed: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "sweep did not start within 120 s"
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)        # the sweep and its worker process, as an OOM kill would
        proc.wait()
        proc.stderr.close()
    done = {p.name: p.read_text() for p in runs.glob("*.json")}
    assert 3 <= len(done) < total, f"kill was not mid-sweep: {len(done)} of {total} runs done"
    assert not (out / "table.csv").exists()

    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    for name, text in done.items():
        assert (runs / name).read_text() == text                   # not recomputed
    assert sorted(p.name for p in runs.iterdir()) == sorted(sweep_run_file(*s) for s in sw.specs())

    run_sweep(sw, tmp_path / "reference", workers=0, progress=False)    # uninterrupted, in this process
    assert csv_without_seconds(out / "table.csv") == csv_without_seconds(tmp_path / "reference" / "table.csv")


def test_default_pool_workers_use_one_blas_thread_and_parent_env_is_restored():
    before = {k: os.environ.get(k) for k in BLAS_ENV}
    with default_executor(1) as ex:
        seen = ex.submit(os.getenv, "OPENBLAS_NUM_THREADS").result()
        seen_omp = ex.submit(os.getenv, "OMP_NUM_THREADS").result()
    assert (seen, seen_omp) == ("1", "1")
    assert {k: os.environ.get(k) for k in BLAS_ENV} == before


def refault_pages(mb: int, arrays: int = 4, rounds: int = 3) -> int:
    """Page faults of the last of ``rounds`` rounds that each touch ``arrays`` fresh ``mb`` MB arrays at once and
    free them: a cell's pattern (its data, weights and test products, then the next cell's)."""
    import resource
    import numpy as np
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        held = [np.ones(mb << 17) for _ in range(arrays)]      # (mb << 17) float64 = mb MB each, touched
        del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the memory setting is glibc's (mallopt)")
def test_pool_workers_reuse_the_memory_a_run_frees():
    # With glibc's defaults the 64 MB freed at the top of the heap each round is more than its trim threshold (twice
    # the 16 MB its mmap threshold adjusts to), so it goes back to the kernel and every round faults its pages in
    # again (2044 faults measured here, with transparent huge pages). Kept, it faults on no page (0 measured); 100
    # leaves room for the allocator's own bookkeeping.
    with default_executor(1) as ex:
        faults = ex.submit(refault_pages, 16).result()
    assert faults < 100, f"{faults} page faults: the worker handed the memory it freed back to the kernel"


def test_a_sweeps_hash_is_computed_once_and_follows_its_settings():
    sw = tiny_sweep()
    first = sw.settings_hash()
    assert sw.settings_hash() is first == settings_hash(sw.settings())          # kept, and what it should be
    other = replace(sw, seed=1)                                                 # new settings: computed again
    assert other.settings_hash() == settings_hash(other.settings()) != first
    for same in (pickle.loads(pickle.dumps(sw)), copy.copy(sw), replace(sw)):   # equal settings: the same hash
        assert same == sw and same.settings_hash() == first


def test_folder_with_other_settings_is_refused_but_a_bigger_grid_reuses_runs(tmp_path):
    run_sweep(tiny_sweep(Ns=(2, 4), mus=(1, 8), repeats=1), tmp_path, workers=0, progress=False)
    with pytest.raises(ValueError, match="different settings"):
        run_sweep(tiny_sweep(seed=1, Ns=(2, 4), mus=(1, 8), repeats=1), tmp_path, workers=0, progress=False)
    first = (tmp_path / "runs" / sweep_run_file(2, 1, 0)).read_text()
    rows = run_sweep(tiny_sweep(Ns=(2, 4), mus=(1, 8, 16), repeats=1), tmp_path, workers=0, progress=False)
    assert len(rows) == 6
    assert (tmp_path / "runs" / sweep_run_file(2, 1, 0)).read_text() == first


@pytest.mark.parametrize("bad, match", [
    (dict(mus=(1.5,)), "positive integers"),
    (dict(Ns=(3,)), "even N"),
    (dict(repeats=0), "repeats"),
    (dict(seed=-1), "seed"),
])
def test_bad_sweeps_say_what_to_change(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_sweep(**bad)


def test_presets_have_the_documented_grids():
    q, p = Sweep.quick(backend="numpy"), Sweep.paper(backend="numpy")
    assert len(p.specs()) == 10_000 and p.Ns == tuple(range(2, 21, 2)) and p.mu_norms == tuple(range(1, 101))
    assert len(q.specs()) == 120
    # both presets run the authors' cell (math §10.1)
    d = p.data
    assert (d.M, d.d, d.sigma_p, d.sigma_w, p.model.d_h, p.model.init_scale, p.train.lr, p.train.steps,
            p.train.loss_threshold) == (16, 1024, 4.0, 0.2, 512, 16.0, 0.1, 1000, 0.01)
    assert Sweep.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_a_custom_grid_follows_the_figure1_protocol_by_default():
    """Sweep(name, Ns, mu_norms, repeats) alone trains as the presets do: the same data, model and training settings
    (η = 0.1, ≤ 1000 steps, stop below 0.01 by the authors' rule, span coordinates), hence the presets' settings hash
    (the hash leaves out the grid and the name)."""
    mine, quick = Sweep("mine", (2, 4, 8), (20, 40, 80), 3), Sweep.quick()
    assert mine.train == quick.train and mine.model == quick.model
    assert (mine.train.lr, mine.train.steps, mine.train.loss_threshold, mine.train.stop_rule,
            mine.train.coords) == (0.1, 1000, 0.01, "authors", "span")
    assert mine.settings_hash() == quick.settings_hash() == Sweep.paper().settings_hash()
