"""Files: written atomically (temporary file in the same folder, then ``os.replace``), read without executing them.

Results are .npz (loaded with ``allow_pickle=False``) and JSON; never pickle.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()   # read once at import: os.umask can only be read by setting it, which races with threads


def atomic_write(path, write) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it over ``path``.

    Readers see the old file or the new one, never half of one; a crash leaves no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        fh = os.fdopen(fd, "wb")         # owns fd from here on: closing fh closes it
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        with fh:
            os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600; give the file the mode a plain open() would
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)   # atomic on POSIX: readers see the old file or the new one, never half of one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_npz(path, **arrays) -> Path:
    """Write arrays to ``path`` (.npz) atomically. Object arrays are refused so that loading never unpickles."""
    for k, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise ValueError(f"array {k!r} has dtype object; store numbers or strings only")
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_npz(path) -> dict:
    """Read an .npz into a dict of arrays with ``allow_pickle=False``."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN is written as NaN, which Python's json reads back)."""
    return atomic_write(path, lambda fh: fh.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def load_json(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_manifest(path, spec: dict, ignore=()) -> None:
    """Write ``spec`` as JSON at ``path``; if a manifest is already there, first refuse a folder whose runs were made
    with other settings (keys in ``ignore``, such as the grid, may differ: a resumed run may grow the grid)."""
    new = json.loads(json.dumps(spec))          # the same normalization as the stored file (tuples → lists)
    if Path(path).exists():
        old = load_json(path)
        diff = sorted(k for k in set(old) | set(new) if k not in ignore and old.get(k) != new.get(k))
        if diff:
            raise ValueError(f"{Path(path).parent} holds runs made with different settings ({', '.join(diff)}); "
                             "use another results folder or delete this one")
    save_json(path, new)


def save_csv(path, rows: list, columns) -> Path:
    """Write ``rows`` (dicts) as CSV with the given column order, atomically. Floats are written with ``repr`` (the
    shortest text that reads back to the same float), so a table written twice from equal rows is byte-identical."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([repr(float(row[k])) if isinstance(row[k], float) else str(row[k]) for k in columns])
    return atomic_write(path, lambda fh: fh.write(buf.getvalue().encode()))


def _parse_cell(v: str):
    """A CSV cell written by ``save_csv``: "True"/"False" → bool, then int, then float (repr text), else str."""
    if v in ("True", "False"):
        return v == "True"
    for parse in (int, float):
        try:
            return parse(v)
        except ValueError:
            pass
    return v


def read_csv(path) -> list[dict]:
    """A table written by ``save_csv``, as a list of dicts with typed values (ints stay ints)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def read_columns(path) -> dict:
    """A table written by ``save_csv``, as columns {name: numpy array} (int, float, bool or str arrays)."""
    rows = read_csv(path)
    if not rows:
        raise ValueError(f"{path} has no rows")
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (format from the file suffix) and close it."""
    import matplotlib.pyplot as plt   # here, not at the top: sweep workers import refvit.io but never draw
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, dpi=dpi, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path
