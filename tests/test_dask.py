"""Optional: the sweep on a real dask.distributed cluster (two worker processes), also when a worker dies mid-sweep.

Skips cleanly without dask. Each worker runs one thread with one BLAS thread (the environment is given to the
workers when they start); the parent process writes the run files and the table, as with the local pool.
"""
import os
import signal
import threading
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from refvit.executors import BLAS_ENV  # noqa: E402
from refvit.jiang2024.sweep import run_sweep  # noqa: E402

from .problems import PATIENCE, wait_until  # noqa: E402
from .test_sweep import csv_without_seconds, tiny_sweep  # noqa: E402


def sweep_for_dask():
    """40 runs of 1000 GD steps each (no early stop): long enough (~0.1 s a run) to kill a worker in the middle."""
    return tiny_sweep(steps=1000, loss_threshold=None, Ns=(2, 4), mus=(1, 2, 4, 8, 16), repeats=4)


@pytest.fixture(scope="module")
def local_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    run_sweep(sweep_for_dask(), out, workers=2, progress=False)
    return csv_without_seconds(out / "table.csv")


@pytest.fixture
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       env={k: "1" for k in BLAS_ENV})
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def worker_pids(client) -> dict:
    """{worker address: PID of its process}."""
    return client.run(os.getpid)


def test_sweep_on_a_local_cluster_equals_the_local_pool(client, local_table, tmp_path):
    envs = client.run(lambda: {k: os.environ.get(k) for k in BLAS_ENV})
    assert len(envs) == 2 and all(env == {k: "1" for k in BLAS_ENV} for env in envs.values())
    rows = run_sweep(sweep_for_dask(), tmp_path, executor=client.get_executor(), progress=False)
    assert len(rows) == 40
    assert csv_without_seconds(tmp_path / "table.csv") == local_table


def test_sweep_survives_a_worker_killed_mid_sweep(client, local_table, tmp_path):
    runs, killed = tmp_path / "runs", {}

    def kill_one_worker_once_runs_are_saved():
        # polled with a generous bound: a fixed 30 s could pass on a busy machine before 2 runs were saved
        try:
            wait_until(lambda: len(list(runs.glob("*.json"))) >= 2, "two runs saved", every=0.01)
        except AssertionError as e:
            killed.update(error=str(e))
            return
        addr, pid = sorted(worker_pids(client).items())[0]
        killed.update(pid=pid, saved=len(list(runs.glob("*.json"))))
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_one_worker_once_runs_are_saved, daemon=True)
    killer.start()
    run_sweep(sweep_for_dask(), tmp_path, executor=client.get_executor(), progress=False)
    killer.join(timeout=PATIENCE)
    assert "error" not in killed and 2 <= killed["saved"] < 40, killed        # the worker died in the middle of the sweep
    assert killed["pid"] not in worker_pids(client).values()   # it was really killed (the nanny starts a new one)
    assert len(list(Path(runs).glob("*.json"))) == 40
    assert csv_without_seconds(tmp_path / "table.csv") == local_table
