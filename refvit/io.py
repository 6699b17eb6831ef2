"""Files: written atomically (temporary file in the same folder, then ``os.replace``), read without executing them.

Results are .npz (loaded with ``allow_pickle=False``) and JSON; never pickle.

One error path: every loader here raises ``FileProblem`` (a ValueError carrying the path) naming the file and what
is wrong with it — missing, empty, truncated, not JSON, not an .npz, wrong schema — and ``one_line_errors`` turns it
(and OSError, zipfile.BadZipFile, json.JSONDecodeError) into one line ``refvit: error: FILE: what`` and exit status 2
for the command line and the figure scripts.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np


class FileProblem(ValueError):
    """A file that cannot be used: ``path`` and ``what`` is wrong with it; str() is ``"PATH: what"``."""

    def __init__(self, path, what: str):
        self.path, self.what = Path(path), what
        super().__init__(f"{path}: {what}")


def _read_problem(path, e: BaseException) -> FileProblem:
    """The FileProblem for an error raised while opening or reading ``path``."""
    if isinstance(e, FileNotFoundError):
        return FileProblem(path, "missing (no such file)")
    if isinstance(e, IsADirectoryError):
        return FileProblem(path, "is a folder, not a file")
    if isinstance(e, PermissionError):
        return FileProblem(path, "not readable (permission denied)")
    if isinstance(e, UnicodeDecodeError):
        return FileProblem(path, "not text (it does not decode as UTF-8)")
    return FileProblem(path, f"cannot be read ({type(e).__name__}: {e})")


def one_line_errors(main):
    """Wrap a ``main(argv) -> int``: bad settings and unusable files end with one line on stderr and status 2;
    Ctrl-C with one line (what was saved, how to resume) and status 130, the shell's code for SIGINT."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt as e:
            saved = f"{e} (every run that finished)" if str(e) else "every finished run is saved"
            print(f"refvit: interrupted: {saved}; run the same command again to resume", file=sys.stderr)
            return 130
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            print(f"refvit: error: {where}{e.strerror or e}", file=sys.stderr)
        except (zipfile.BadZipFile, json.JSONDecodeError, ValueError) as e:   # FileProblem is a ValueError
            print(f"refvit: error: {e}", file=sys.stderr)
        return 2
    return wrapped


def check_writable(folder) -> Path:
    """Create ``folder`` and check a file can be written in it, before any work whose results would go there."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write_check.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise FileProblem(folder, f"results cannot be written there ({e.strerror or e}); choose a writable "
                                  "folder") from None
    return folder


def _refuse_special(path: Path) -> None:
    """A ``FileProblem`` if ``path`` exists and is not a regular file: renaming a new file over it would replace a
    folder, a device such as /dev/null, or a pipe, not write into it."""
    if path.is_dir():
        raise FileProblem(path, "is a folder; give a file name for this output")
    if path.exists() and not path.is_file():
        raise FileProblem(path, "is not a regular file (a device or a pipe) and would be replaced; give a file name "
                                "for this output")


def check_output(path) -> Path:
    """Check, before any work whose result goes to file ``path``, that it can be written there: not a folder, a
    device or a pipe, and its folder creatable and writable (``check_writable``); a ``FileProblem`` naming the path
    otherwise."""
    path = Path(path)
    _refuse_special(path)
    check_writable(path.parent)
    return path


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
    _refuse_special(path)
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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and not e.filename:   # a full disk says only "No space left on device": name it
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    return path


def save_npz(path, **arrays) -> Path:
    """Write arrays to ``path`` (.npz) atomically. Object arrays are refused so that loading never unpickles."""
    for k, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise ValueError(f"array {k!r} has dtype object; store numbers or strings only")
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_npz(path) -> dict:
    """Read an .npz into a dict of arrays with ``allow_pickle=False``; ``FileProblem`` if it is not one."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, UnicodeDecodeError) as e:
        raise _read_problem(path, e) from None
    except (ValueError, EOFError, zipfile.BadZipFile) as e:   # numpy treats non-zip, non-npy bytes as a pickle
        raise FileProblem(path, f"not an .npz archive or truncated ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise FileProblem(path, "holds a single .npy array, not an .npz archive")
    try:
        with z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e) or "Object arrays" in str(e):
            raise FileProblem(path, "holds object arrays, which are never unpickled; store numbers or strings")
        raise FileProblem(path, f"truncated or damaged .npz ({e})") from None
    except Exception as e:  # noqa: BLE001 - EOFError, BadZipFile, zlib.error… from a damaged member: name the file
        raise FileProblem(path, f"truncated or damaged .npz ({type(e).__name__}: {e})") from None


def save_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN is written as NaN, which Python's json reads back)."""
    return atomic_write(path, lambda fh: fh.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def load_json(path, expect: type | None = None):
    """The JSON value in ``path``; ``FileProblem`` if it is missing, empty, not JSON, or (``expect``) of another
    type or empty (``{}`` or ``[]`` where an object or list with content is expected)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise _read_problem(path, e) from None
    if not text.strip():
        raise FileProblem(path, "empty file (an interrupted write?)")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise FileProblem(path, f"not valid JSON, truncated or damaged ({e.msg} at line {e.lineno} column "
                                f"{e.colno})") from None
    if expect is not None:
        kind = {dict: "a JSON object", list: "a JSON list"}.get(expect, expect.__name__)
        if not isinstance(value, expect):
            raise FileProblem(path, f"expected {kind}, found {type(value).__name__} {text.strip()[:40]!r}")
        if not value:
            raise FileProblem(path, f"expected {kind} with content, found an empty one")
    return value


def write_manifest(path, spec: dict, ignore=()) -> None:
    """Write ``spec`` as JSON at ``path``; if a manifest is already there, first refuse a folder whose runs were made
    with other settings (keys in ``ignore``, such as the grid, may differ: a resumed run may grow the grid)."""
    new = json.loads(json.dumps(spec))          # the same normalization as the stored file (tuples → lists)
    if Path(path).exists():
        old = load_json(path, expect=dict)
        diff = sorted(k for k in set(old) | set(new) if k not in ignore and old.get(k) != new.get(k))
        if diff:
            raise ValueError(f"{Path(path).parent} holds runs made with different settings ({', '.join(diff)}); "
                             "use another results folder or delete this one")
    save_json(path, new)


def csv_text(rows: list, columns) -> str:
    """The text ``save_csv`` writes for ``rows``: floats with ``repr`` (the shortest text that reads back to the
    same float), so a table written twice from equal rows is byte-identical."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([repr(float(row[k])) if isinstance(row[k], float) else str(row[k]) for k in columns])
    return buf.getvalue()


def save_csv(path, rows: list, columns) -> Path:
    """Write ``rows`` (dicts) as CSV with the given column order, atomically (``csv_text``)."""
    text = csv_text(rows, columns)
    return atomic_write(path, lambda fh: fh.write(text.encode()))


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


def read_csv(path, columns=()) -> list[dict]:
    """A table written by ``save_csv``, as a list of dicts with typed values (ints stay ints).

    ``FileProblem`` if it is missing, has no header, a row of another length, or lacks one of ``columns``."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            raw = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as e:
        raise _read_problem(path, e) from None
    except csv.Error as e:
        raise FileProblem(path, f"not a valid CSV table ({e})") from None
    if not raw or not raw[0]:
        raise FileProblem(path, "empty file: no header row")
    header, body = raw[0], raw[1:]
    lacking = [c for c in columns if c not in header]
    if lacking:
        raise FileProblem(path, f"lacks the column(s) {lacking}: not a table of this kind")
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise FileProblem(path, f"line {i} has {len(row)} cells but the header has {len(header)} (truncated?)")
    return [{k: _parse_cell(v) for k, v in zip(header, row)} for row in body]


def read_columns(path, columns=()) -> dict:
    """A table written by ``save_csv``, as columns {name: numpy array} (int, float, bool or str arrays)."""
    rows = read_csv(path, columns)
    if not rows:
        raise FileProblem(path, "has a header but no rows")
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (format from the file suffix) and close it."""
    import matplotlib.pyplot as plt   # here, not at the top: sweep workers import refvit.io but never draw
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, dpi=dpi, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path
