"""Crash safety of the file writes: a write that dies half way leaves the previous file whole and no partial file.

``refvit.io.atomic_write`` writes to a hidden temporary file beside the target and renames it over the target.
Interrupted by an exception it removes the temporary file; killed by SIGKILL it cannot, and the hidden
``.<name>.*.tmp`` file stays, but the target is never partial and nothing that reads results looks at hidden files.
A sweep whose run-file write dies is resumable, and its table equals the uninterrupted one.
"""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import refvit.io as io_mod
from refvit.jiang2024.config import DataConfig, ModelConfig
from refvit.config import TrainConfig
from refvit.jiang2024.sweep import Sweep, run_sweep

OLD = b"previous complete content\n" * 200
NEW = b"the new content, longer than the old one\n" * 400


def half_then(fh, action):
    fh.write(NEW[: len(NEW) // 2])
    fh.flush()
    action()


def test_an_exception_half_way_leaves_the_old_file_and_no_other(tmp_path):
    target = tmp_path / "result.json"
    target.write_bytes(OLD)

    def boom():
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        io_mod.atomic_write(target, lambda fh: half_then(fh, boom))
    assert target.read_bytes() == OLD
    assert sorted(os.listdir(tmp_path)) == ["result.json"]        # no temporary file left either
    io_mod.atomic_write(target, lambda fh: fh.write(NEW))           # and the next write works
    assert target.read_bytes() == NEW and sorted(os.listdir(tmp_path)) == ["result.json"]


def test_a_new_file_interrupted_half_way_does_not_appear(tmp_path):
    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io_mod.atomic_write(tmp_path / "new.npz", lambda fh: half_then(fh, interrupt))
    assert os.listdir(tmp_path) == []


CHILD = """
import sys, time
from pathlib import Path
from refvit.io import atomic_write
target, marker = Path(sys.argv[1]), Path(sys.argv[2])
new = b"the new content, longer than the old one\\n" * 400
def write(fh):
    fh.write(new[: len(new) // 2])
    fh.flush()
    marker.write_text("half")       # tell the parent: half the bytes are out
    time.sleep(120)
atomic_write(target, write)
"""


def test_sigkill_mid_write_leaves_the_old_file_whole(tmp_path):
    folder, marker = tmp_path / "out", tmp_path / "half_written"
    folder.mkdir()
    target = folder / "table.csv"
    target.write_bytes(OLD)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(marker)])
    try:
        deadline = time.monotonic() + 120          # generous: a busy machine may take seconds to start Python
        while not marker.exists():
            assert child.poll() is None, "the writer exited before writing"
            assert time.monotonic() < deadline, "the writer never got half way"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert target.read_bytes() == OLD
    # the only other entry is the hidden temporary file holding the half write, named so no reader picks it up
    others = [p for p in os.listdir(folder) if p != "table.csv"]
    assert all(p.startswith(".table.csv.") and p.endswith(".tmp") for p in others) and len(others) <= 1
    assert [p for p in os.listdir(folder) if not p.startswith(".")] == ["table.csv"]


def tiny_sweep():
    return Sweep("crash", (2, 4), (1, 4), 2, 0, DataConfig(N=2, M=3, d=16, mu_norm=1.0, sigma_p=1.0, n_test=6),
                 ModelConfig(d_h=2, d_v=2, init_scale=1.0), TrainConfig(lr=0.5, steps=20, backend="numpy"))


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")} for r in rows]


def test_a_run_file_write_that_dies_leaves_the_sweep_resumable(tmp_path, monkeypatch):
    sw = tiny_sweep()
    reference = run_sweep(sw, tmp_path / "whole", workers=0, progress=False)
    real, calls = io_mod.atomic_write, []

    def dying(path, write):
        if Path(path).parent.name == "runs":
            calls.append(path)
            if len(calls) == 3:                    # the third run file dies half way through its bytes
                def half(fh):
                    buf = io.BytesIO()
                    write(buf)
                    fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                    raise OSError("killed while writing")
                return real(path, half)
        return real(path, write)

    monkeypatch.setattr(io_mod, "atomic_write", dying)
    out = tmp_path / "broken"
    with pytest.raises(Exception):
        run_sweep(sw, out, workers=0, progress=False)
    monkeypatch.setattr(io_mod, "atomic_write", real)
    files = sorted(os.listdir(out / "runs"))
    assert len(files) == 2 and not any(f.startswith(".") for f in files)   # two whole runs, nothing partial
    for f in files:
        json.loads((out / "runs" / f).read_text())
    rows = run_sweep(sw, out, workers=0, progress=False)        # resumed: computes only the missing runs
    assert without_timing(rows) == without_timing(reference)
    assert (out / "table.csv").read_text().count("\n") == len(sw.specs()) + 1
    assert not [f for f in os.listdir(out / "runs") if f.startswith(".")]
