"""Folders of saved runs, shared by every experiment of every setting: one process owns a folder at a time, every
file read back is checked against what it claims to be, and a file that fails is moved aside and recomputed.

A run's file is either a JSON row (a sweep's run) or a history ``.npz`` (``refvit.results.save_history``: per-step
series plus a JSON summary). Its *identity* is a dict of the fields that name the run (its cell, seed, repeat,
settings hash, …); every reader passes the identity it expects, so a file of another run, regime or seed copied into
place is caught. Nothing is deleted: a bad file goes to ``quarantine/`` beside the runs and is recomputed.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from .executors import execute
from .io import FileProblem, save_npz, write_manifest
from .results import STATUSES, TRAINED, load_history


def settings_hash(settings: dict) -> str:
    """A short hash of a JSON-able settings dict (sorted keys): stored in a manifest and in every run file."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def claim(out: Path, what: str = "sweep"):
    """Hold an exclusive lock on ``out/.sweep.lock`` while the body runs: one sweep (or study: ``what``) owns a
    folder at a time."""
    fd = os.open(Path(out) / ".sweep.lock", os.O_CREAT | os.O_RDWR, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileProblem(out, f"another {what} is running in this folder (it holds .sweep.lock); wait for it "
                                   "or use another folder") from None
        yield out
    finally:
        os.close(fd)                 # closing the descriptor releases the lock


def quarantine(path: Path, reason: str, home: Path | None = None,
               then: str = "the run will be recomputed") -> Path:
    """Move a bad run file to ``home/quarantine/`` (default: beside its ``runs/`` folder; never deleted), say so on
    stderr, return the move. A name quarantined before gets the first free suffix ``.1``, ``.2``, …, so no earlier
    copy is overwritten."""
    path = Path(path)
    folder = (path.parent.parent if home is None else Path(home)) / "quarantine"
    folder.mkdir(exist_ok=True)
    dest, k = folder / path.name, 0
    while dest.exists():
        k += 1
        dest = folder / f"{path.name}.{k}"
    os.replace(path, dest)
    print(f"refvit: warning: {reason}; moved to {dest}, {then}", file=sys.stderr)
    return dest


def renew_manifest(path: Path, spec: dict, ignore=()) -> None:
    """``refvit.io.write_manifest`` for a folder whose every run file stores its settings hash: a manifest that is
    damaged (unreadable, empty, not an object) is quarantined and written anew instead of blocking every rerun, since
    the runs are checked one by one anyway. An intact manifest of other settings is still refused."""
    try:
        write_manifest(path, spec, ignore)
    except FileProblem as e:
        quarantine(path, str(e), Path(path).parent, "written anew from this run's settings")
        write_manifest(path, spec, ignore)


def check_categories(path, record: dict, categories: dict) -> None:
    """Raise ``FileProblem`` naming ``path`` unless every field of ``categories`` ({name: allowed values}) holds
    one of its allowed values: a value outside them is never copied into a table or a figure."""
    for key, allowed in categories.items():
        if record.get(key) not in allowed:
            raise FileProblem(path, f"{key} is {record.get(key)!r}, not one of {', '.join(map(repr, allowed))}")


def check_history(path, summary: dict, arrays: dict, expect: dict, series=(), categories=None) -> None:
    """Raise ``FileProblem`` naming ``path`` unless the history file is the run ``expect`` names and is whole:
    the summary's identity fields equal ``expect``, its status is known, every field of ``categories``
    ({name: allowed values}) holds an allowed value, its final losses are finite when the status promises it
    (``TRAINED``), and every key of ``series`` is an array with one row per recorded step."""
    got = {k: summary.get(k) for k in expect}
    if got != expect:
        raise FileProblem(path, f"holds the run {got}, not {expect}")
    status = summary.get("status")
    if status not in STATUSES:
        raise FileProblem(path, f"unknown status {status!r}")
    if "converged" in summary and summary["converged"] is not (status == "converged"):
        raise FileProblem(path, f"converged={summary['converged']!r} contradicts status {status!r}")
    check_categories(path, summary, categories or {})
    if status in TRAINED:
        bad = [k for k in ("train_loss", "test_loss") if k in summary and
               not (isinstance(summary[k], (int, float)) and math.isfinite(summary[k]))]
        if bad:
            raise FileProblem(path, f"{', '.join(bad)} not finite although status is {status!r}")
    rows = len(arrays["step"])
    for key in series:
        a = arrays.get(key)
        if not isinstance(a, np.ndarray) or a.ndim < 1 or len(a) != rows:
            raise FileProblem(path, f"has no {key} series of {rows} rows")


def load_run(path, expect: dict, series=(), categories=None) -> tuple[dict, dict]:
    """(summary, arrays) of a saved history file; ``FileProblem`` if it does not load or fails ``check_history``."""
    summary, arrays = load_history(path)
    check_history(path, summary, arrays, expect, series, categories)
    return summary, arrays


def load_or_quarantine(path: Path, expect: dict, series=(), load=load_run, home: Path | None = None, **checks):
    """``load(path, expect, series, **checks)``, or None when the file is absent; a file that fails is quarantined
    (in ``home``, see ``quarantine``) and None returned."""
    if not Path(path).exists():
        return None
    try:
        return load(path, expect, series, **checks)
    except FileProblem as e:
        quarantine(path, str(e), home)
        return None


def compute_missing(jobs, desc: str, executor=None, workers: int | None = None, progress: bool = True, where=None,
                    series=(), load=load_run, **checks) -> None:
    """Compute every job of a claimed run folder whose history file is absent or fails its check, on an executor
    (``refvit.executors.execute``), saving each file as its run finishes; a file that fails is quarantined first.

    jobs : [(path, expect, fn, args)]: the file a run writes, the identity it must hold (``check_history``) and the
        worker call ``fn(*args)`` returning the file's arrays. ``series``, ``load`` and ``checks`` (``home``,
        ``categories``) go to ``load_or_quarantine`` for every file; ``where`` names the folder in a Ctrl-C message.
    """
    tasks = []
    for path, expect, fn, args in jobs:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if load_or_quarantine(path, expect, series, load, **checks) is None:
            tasks.append((fn, args, path))
    execute(tasks, lambda path, arrays: save_npz(path, **arrays), executor, workers, desc=desc, progress=progress,
            total=len(jobs), where=where)


def quarantined(folder) -> tuple[int, int]:
    """(files, bytes) held in every ``quarantine/`` folder under ``folder`` (a study's sweeps each have one)."""
    files = [p for q in Path(folder).rglob("quarantine") if q.is_dir() for p in q.iterdir() if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def quarantine_note(*folders) -> str:
    """One summary line on what the ``folders`` set aside (count and size), or "" when nothing was."""
    n = size = 0
    for folder in folders:
        k, b = quarantined(folder)
        n, size = n + k, size + b
    if not n:
        return ""
    where = " and ".join(str(f) for f in folders)
    return (f"quarantined: {n} file{'s' * (n != 1)} ({size} bytes) under {where}, set aside as damaged or not the "
            "run they claimed to be and recomputed; inspect or delete the quarantine/ folders\n")
