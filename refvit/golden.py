"""Golden vectors: the cases of ``refvit.crosscheck`` with the reference's numbers, as files any language can read.

``refvit golden --out DIR`` writes one ``<case>.npz`` per case and ``manifest.json``:

* each .npz holds the inputs (X (N, M, d), y (N,), W_Q, W_K (d, d_h), W_V (d, d_v), w_O (d_v,), lr, train_w_O),
  the reference outputs at those inputs (f (N,), loss (), dW_Q, dW_K, dW_V, dw_O) and a GD trajectory with w_O
  frozen (docs/math.md §3): traj_step (K,) the saved steps, traj_W_Q (K, d, d_h), traj_W_K, traj_W_V (K, d, d_v),
  traj_w_O (K, d_v) the parameters *after* those many steps (step 0 = the start), and traj_loss (steps + 1,) the
  loss at every iterate. All float64 (y too), readable with ``np.load(..., allow_pickle=False)``.
* the manifest records the refvit and numpy versions, every case's settings (``CaseSpec``), the trajectory steps,
  and the sha256 and size of each file. It has no timestamp.

Files are byte-for-byte reproducible: the .npz members carry a fixed zip date and mode, not the time of writing,
so regenerating from a manifest's settings with the same software gives the same sha256 (the test suite
checks this). Across machines the numbers may differ in the last bits (BLAS summation order), so compare them with
a tolerance (``check``), not by hash.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from . import __version__
from .crosscheck import (SMALL_CASES, STEPS, CaseSpec, block_error, build_case, reference_step, select_cases,
                         trajectory_error)
from .io import atomic_write, load_json, load_npz, save_json
from .jiang2024.model import Params, forward, loss_and_grads

FORMAT = 1
DEFAULT_TRAJ_STEPS = (0, 1, 2, 5, 10, 20)   # a subset keeps the committed set small; traj_loss has every step
ZIP_DATE = (1980, 1, 1, 0, 0, 0)             # the earliest date zip can store; fixed, so the bytes are reproducible

# ``check`` tolerances (relative, as ``crosscheck.block_error`` / ``trajectory_error``): the same code on another
# machine differs only by summation order. On the golden cases the numpy and numba backends (two summation orders)
# differ by ≤ 7e-15 in f, loss and gradients and ≤ 3e-14 over 20 GD steps; 1e-11 / 1e-10 leaves > 300× margin,
# while any change to the model's formulas moves these numbers by ≥ 1e-7 (a float32 step) and usually ≥ 1e-3.
CHECK_TOL = {"value": 1e-11, "traj": 1e-10}
REQUIRED_KEYS = ("X", "y", "W_Q", "W_K", "W_V", "w_O", "lr", "train_w_O", "f", "loss", "dW_Q", "dW_K", "dW_V",
                 "dw_O", "traj_step", "traj_W_Q", "traj_W_K", "traj_W_V", "traj_w_O", "traj_loss")


def case_arrays(spec: CaseSpec, steps: int = STEPS, traj_steps=DEFAULT_TRAJ_STEPS) -> dict:
    """Inputs, reference outputs and GD trajectory of one case, as a dict of float64 arrays (see module doc)."""
    traj_steps = tuple(int(t) for t in traj_steps)
    if not traj_steps or min(traj_steps) < 0 or max(traj_steps) > steps or list(traj_steps) != sorted(set(traj_steps)):
        raise ValueError(f"traj_steps must be increasing integers in [0, {steps}], got {traj_steps}")
    case = build_case(spec)
    p, X, y = case.params, case.X, case.y
    loss, grads = loss_and_grads(p, X, y)
    snaps, losses = [], []
    for t in range(steps + 1):
        if t in traj_steps:
            snaps.append(p)
        losses.append(loss_and_grads(p, X, y)[0])
        if t < steps:
            p = reference_step(p, X, y, spec.lr, train_w_O=False)
    arrays = {
        "X": X, "y": y, **case.params._asdict(),
        "lr": np.float64(spec.lr), "train_w_O": np.bool_(False),
        "f": forward(case.params, X), "loss": np.float64(loss),
        **{f"d{k}": g for k, g in zip(Params._fields, grads)},
        "traj_step": np.array(traj_steps, dtype=np.int64),
        **{f"traj_{k}": np.stack([getattr(s, k) for s in snaps]) for k in Params._fields},
        "traj_loss": np.array(losses),
    }
    return {k: np.asarray(v) for k, v in arrays.items()}


def npz_bytes(arrays: dict) -> bytes:
    """An .npz (uncompressed zip of .npy members, in the given key order) with fixed zip metadata."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, a in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(a), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_golden(out, cases="small", steps: int = STEPS, traj_steps=DEFAULT_TRAJ_STEPS) -> dict:
    """Write ``<case>.npz`` for every case and then ``manifest.json`` into ``out`` (atomically). Returns the manifest.

    cases: "small" (default: the five fast cases, ~0.1 MB), "all", "authors" or a list of names / ``CaseSpec``.
    """
    out = Path(out)
    entries = []
    for spec in select_cases(cases):
        data = npz_bytes(case_arrays(spec, steps, traj_steps))
        name = f"{spec.name}.npz"
        atomic_write(out / name, lambda fh, data=data: fh.write(data))
        entries.append({"name": spec.name, "file": name, "sha256": hashlib.sha256(data).hexdigest(),
                        "bytes": len(data), "settings": spec.to_dict()})
    manifest = {"format": FORMAT, "refvit_version": __version__, "numpy_version": np.__version__,
                "dtype": "float64", "steps": steps, "traj_steps": [int(t) for t in traj_steps], "train_w_O": False,
                "cases": entries}
    save_json(out / "manifest.json", manifest)
    return manifest


def regenerate(manifest, out) -> dict:
    """Rewrite the golden set described by ``manifest`` (a dict or a path to manifest.json) into ``out``."""
    where = "the manifest"
    if not isinstance(manifest, dict):
        where, manifest = str(manifest), load_json(manifest)
    _check_manifest(where, manifest)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"unsupported golden format {manifest.get('format')!r}; this refvit writes {FORMAT}")
    try:
        specs = [CaseSpec(**c["settings"]) for c in manifest["cases"]]
    except TypeError as e:      # an unknown or missing setting of a case
        raise ValueError(f"{where}: a case's settings do not describe a case ({e})") from None
    return write_golden(out, specs, manifest["steps"], manifest["traj_steps"])


def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _load_manifest(golden_dir: Path) -> dict:
    path = golden_dir / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{path}: no such file; give the folder written by `refvit golden --out`")
    try:
        manifest = load_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON manifest ({e})") from e
    return _check_manifest(path, manifest)


def _check_manifest(where, manifest) -> dict:
    """``manifest`` if it has every entry ``check`` and ``regenerate`` read, else a one-line ValueError naming the
    file (``where``) and the entry."""
    if not isinstance(manifest, dict):
        raise ValueError(f"{where}: a golden manifest is a JSON object, got {type(manifest).__name__}")
    for key, kind in (("steps", int), ("traj_steps", list), ("cases", list)):
        if key not in manifest:
            raise ValueError(f"{where}: the manifest has no {key!r} entry; regenerate it with `refvit golden --out`")
        if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
            raise ValueError(f"{where}: the manifest's {key!r} should be a {kind.__name__}, got {manifest[key]!r:.40}")
    for i, entry in enumerate(manifest["cases"]):
        lacking = [k for k in ("name", "file", "sha256", "settings") if not isinstance(entry, dict) or k not in entry]
        if lacking:
            raise ValueError(f"{where}: case {i} of the manifest has no {lacking} entry; regenerate it with "
                             "`refvit golden --out`")
    return manifest


def _check_traj_steps(path, traj_step, steps: int, listed) -> list[int]:
    """The stored snapshot steps, or a ValueError saying what is wrong with them."""
    t = [int(v) for v in np.asarray(traj_step).reshape(-1)]
    if not t:
        raise ValueError(f"{path}: the golden set has no trajectory (traj_step is empty); write it again with "
                         f"--traj-steps")
    if min(t) < 0 or max(t) > steps or t != sorted(set(t)):
        raise ValueError(f"{path}: traj_step {t} must be increasing steps in [0, {steps}] (the manifest's steps)")
    if t != [int(v) for v in listed]:
        raise ValueError(f"{path}: traj_step {t} differs from the manifest's traj_steps {list(listed)}")
    return t


def check(golden_dir) -> list[dict]:
    """Compare the current code with a golden set; one row per (case, quantity) with its error and tolerance.

    Verifies each file's sha256 against the manifest, then recomputes f, loss, the gradients and the trajectory
    from the stored inputs, comparing every stored snapshot. A row has ``passed`` False when the error exceeds
    ``CHECK_TOL`` or when a stored value is NaN or inf (its error is then inf). A missing or damaged file, or a
    trajectory that is absent or has steps outside [0, steps], raises ValueError naming the file.
    """
    golden_dir = Path(golden_dir)
    manifest = _load_manifest(golden_dir)
    steps = int(manifest["steps"])
    rows = []
    for entry in manifest["cases"]:
        path = golden_dir / entry["file"]
        if not path.is_file():
            raise ValueError(f"{path}: no such file, although the manifest lists it")
        if sha256_file(path) != entry["sha256"]:
            raise ValueError(f"{path}: does not match the sha256 in its manifest; the file was changed or damaged")
        g = load_npz(path)
        missing = [k for k in REQUIRED_KEYS if k not in g]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        t_saved = _check_traj_steps(path, g["traj_step"], steps, manifest["traj_steps"])
        for k in Params._fields:
            if g[f"traj_{k}"].shape[0] != len(t_saved):
                raise ValueError(f"{path}: traj_{k} holds {g[f'traj_{k}'].shape[0]} snapshots, traj_step "
                                 f"{len(t_saved)}")
        p0 = Params(g["W_Q"], g["W_K"], g["W_V"], g["w_O"])
        X, y, lr = g["X"], g["y"], float(g["lr"])
        loss, grads = loss_and_grads(p0, X, y)
        errs = {"f": block_error(forward(p0, X), g["f"]), "loss": block_error(loss, g["loss"])}
        errs.update({f"d{k}": block_error(a, g[f"d{k}"]) for k, a in zip(Params._fields, grads)})
        traj = dict.fromkeys((f"traj_{k}" for k in Params._fields), 0.0)
        p, losses, snaps = p0, [], {}
        for t in range(steps + 1):
            snaps[t] = p
            losses.append(loss_and_grads(p, X, y)[0])
            if t < steps:
                p = reference_step(p, X, y, lr, bool(g["train_w_O"]))
        for i, t in enumerate(t_saved):                      # every stored snapshot, not only the last
            for k, a, a0 in zip(Params._fields, snaps[t], p0):
                traj[f"traj_{k}"] = max(traj[f"traj_{k}"], trajectory_error(a, g[f"traj_{k}"][i], a0))
        errs.update(traj)
        errs["traj_loss"] = block_error(np.array(losses), g["traj_loss"])
        for k, e in errs.items():
            stored = g[k] if k in g else None
            if stored is not None and not np.all(np.isfinite(stored)):
                e = math.inf                                 # a NaN or inf reference value fails, never passes
            tol = CHECK_TOL["traj" if k.startswith("traj") else "value"]
            rows.append({"case": entry["name"], "quantity": k, "error": float(e), "tol": tol,
                         "passed": bool(e <= tol)})
    return rows


def parse_traj_steps(text: str) -> tuple[int, ...]:
    """"0,1,20" -> (0, 1, 20), or a ValueError saying what is expected."""
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"--traj-steps must be comma-separated integers such as 0,1,20; got {text!r}") from None


def cmd_golden(args) -> int:
    if args.check:
        rows = check(args.check)
        bad = [r for r in rows if not r["passed"]]
        worst = max(rows, key=lambda r: r["error"])
        print(f"checked {len(rows)} quantities in {args.check}: largest error {worst['error']:.1e} "
              f"({worst['case']}/{worst['quantity']}); {len(bad)} above tolerance")
        for r in bad:
            print(f"  {r['case']:12s} {r['quantity']:10s} {r['error']:.2e} > {r['tol']:.0e}")
        return 1 if bad else 0
    if not args.out:
        raise ValueError("give --out DIR to write a golden set, or --check DIR to verify one")
    traj_steps = parse_traj_steps(args.traj_steps)
    manifest = write_golden(args.out, args.cases, args.steps, traj_steps)
    total = sum(c["bytes"] for c in manifest["cases"])
    print(f"wrote {len(manifest['cases'])} cases ({total / 1e6:.2f} MB) and manifest.json to {args.out}")
    return 0


def add_subcommand(sub) -> None:
    p = sub.add_parser("golden", help="write golden vectors (inputs, f, loss, gradients, GD trajectory) as .npz",
                       description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", help="folder to write <case>.npz and manifest.json into")
    p.add_argument("--cases", default="small", choices=["small", "all", "authors"],
                   help="'all' adds the edge cases and the authors' two settings at full width (hundreds of MB)")
    p.add_argument("--steps", type=int, default=STEPS, help="GD trajectory length")
    p.add_argument("--traj-steps", default=",".join(map(str, DEFAULT_TRAJ_STEPS)),
                   help="comma-separated steps whose parameters are saved")
    p.add_argument("--check", metavar="DIR", help="instead of writing: compare the current code with a golden set")
    p.set_defaults(func=cmd_golden)


__all__ = ["case_arrays", "write_golden", "regenerate", "check", "npz_bytes", "SMALL_CASES", "CHECK_TOL"]
