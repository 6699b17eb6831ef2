"""Golden vectors: the cases of ``refvit.crosscheck`` with the reference's numbers, as files any language can read.

``refvit golden --out DIR`` writes one ``<case>.npz`` per case and ``manifest.json`` (``--setting li2025``: the
second setting's cases, described after the first's):

* each .npz holds the inputs (X (N, M, d), y (N,), W_Q, W_K (d, d_h), W_V (d, d_v), w_O (d_v,), lr, train_w_O),
  the reference outputs at those inputs (f (N,), loss (), dW_Q, dW_K, dW_V, dw_O) and a GD trajectory with w_O
  frozen (docs/math.md §3): traj_step (K,) the saved steps, traj_W_Q (K, d, d_h), traj_W_K, traj_W_V (K, d, d_v),
  traj_w_O (K, d_v) the parameters *after* those many steps (step 0 = the start), and traj_loss (steps + 1,) the
  loss at every iterate. All float64 (y too), readable with ``np.load(..., allow_pickle=False)``.
* the manifest records the refvit and numpy versions, every case's settings (``CaseSpec``), the trajectory steps,
  and the sha256 and size of each file. It has no timestamp.
* the second setting (``--setting li2025``; the manifest then says ``"setting": "li2025"``): W_Q, W_K (m_k, d) and
  W_V (2, m_v, d) instead of the four blocks, X (N, 2, d), and the case's switches instead of train_w_O: lr, c_L
  ("sum" or "mean"), optimizer ("gd", "signgd" or "adam") and trained (the trained blocks' names), as unicode
  arrays; the trajectory is the case's optimizer on its trained blocks (docs/math.md (13.27)–(13.29)).

Files are byte-for-byte reproducible: the .npz members carry a fixed zip date and mode, not the time of writing,
so regenerating from a manifest's settings with the same software gives the same sha256 (the test suite
checks this). Across machines the numbers may differ in the last bits (BLAS summation order), so compare them with
a tolerance (``check``), not by hash.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from . import __version__, options
from .crosscheck import SMALL_CASES, STEPS, block_error, trajectory_error
from .crosscheck.cli import checked_setting
from .crosscheck.setting import groups_help
from .crosscheck.settings import JIANG, SETTINGS, get_setting
from .io import atomic_write, load_json, load_npz, save_json

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
LI_OPTIONS = ("lr", "c_L", "optimizer", "trained")


def required_keys(setting=JIANG) -> tuple:
    """The arrays of one golden file of ``setting``, in the order they are written."""
    setting = get_setting(setting)
    if setting is JIANG:
        return REQUIRED_KEYS
    f = setting.fields
    return ("X", "y", *f, *LI_OPTIONS, "f", "loss", *(f"d{k}" for k in f), "traj_step",
            *(f"traj_{k}" for k in f), "traj_loss")


def _stored_spec(path, setting, spec, g):
    """``spec`` with the switches the file stores (lr; in the second setting also c_L, optimizer, trained): the
    file, not the manifest, says what its numbers were computed with."""
    try:
        if setting is JIANG:
            return dataclasses.replace(spec, lr=float(g["lr"]))
        return dataclasses.replace(spec, lr=float(g["lr"]), c_L=str(g["c_L"]), optimizer=str(g["optimizer"]),
                                   trained=tuple(str(b) for b in np.ravel(g["trained"])))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: the stored switches do not describe a case ({e})") from None


def _options(spec, setting) -> dict:
    """The switches stored beside the inputs: the first setting's lr and train_w_O (False: w_O frozen); the
    second's lr, c_L, optimizer and trained."""
    if setting is JIANG:
        return {"lr": np.float64(spec.lr), "train_w_O": np.bool_(False)}
    return {k: np.asarray(getattr(spec, k)) for k in LI_OPTIONS}      # strings as unicode arrays, never objects


def _iterates(p0, X, y, spec, setting, train_w_O: bool, steps: int) -> list:
    """θ_0 … θ_steps of the reference's training on one case."""
    return [p0] + setting.trajectory(p0, X, y, spec, train_w_O, steps)[0]


def case_arrays(spec, steps: int = STEPS, traj_steps=DEFAULT_TRAJ_STEPS, setting=JIANG) -> dict:
    """Inputs, reference outputs and trajectory of one case of ``setting``, as a dict of arrays (module doc)."""
    setting = get_setting(setting)
    traj_steps = tuple(int(t) for t in traj_steps)
    if not traj_steps or min(traj_steps) < 0 or max(traj_steps) > steps or list(traj_steps) != sorted(set(traj_steps)):
        raise ValueError(f"traj_steps must be increasing integers in [0, {steps}], got {traj_steps}")
    case = setting.build_case(spec)
    X, y = case.X, case.y
    loss, grads = setting.loss_and_grads(case.params, X, y, spec)
    iterates = _iterates(case.params, X, y, spec, setting, False, steps)
    snaps = [iterates[t] for t in traj_steps]
    arrays = {
        "X": X, "y": y, **case.params._asdict(), **_options(spec, setting),
        "f": setting.forward(case.params, X, spec), "loss": np.float64(loss),
        **{f"d{k}": g for k, g in zip(setting.fields, grads)},
        "traj_step": np.array(traj_steps, dtype=np.int64),
        **{f"traj_{k}": np.stack([getattr(s, k) for s in snaps]) for k in setting.fields},
        "traj_loss": np.array([setting.loss_and_grads(p, X, y, spec)[0] for p in iterates]),
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


def write_golden(out, cases="small", steps: int = STEPS, traj_steps=DEFAULT_TRAJ_STEPS, setting=JIANG) -> dict:
    """Write ``<case>.npz`` for every case and then ``manifest.json`` into ``out`` (atomically). Returns the manifest.

    cases: a group of ``refvit.crosscheck.setting.GROUP_MEANINGS`` ("small", the default: the fast cases,
    ~0.1 MB) or a list of case names, groups or case specs, as for ``refvit crosscheck``. setting: "jiang2024"
    (default) or "li2025".
    """
    setting = get_setting(setting)
    out = Path(out)
    entries = []
    for spec in setting.select(cases):
        data = npz_bytes(case_arrays(spec, steps, traj_steps, setting))
        name = f"{spec.name}.npz"
        atomic_write(out / name, lambda fh, data=data: fh.write(data))
        entries.append({"name": spec.name, "file": name, "sha256": hashlib.sha256(data).hexdigest(),
                        "bytes": len(data), "settings": spec.to_dict()})
    manifest = {"format": FORMAT, "refvit_version": __version__, "numpy_version": np.__version__,
                "dtype": "float64", "steps": steps, "traj_steps": [int(t) for t in traj_steps], "train_w_O": False,
                "cases": entries}
    if setting is not JIANG:                       # the first setting's manifests stay as they were
        manifest = {"format": FORMAT, "setting": setting.name, **{k: v for k, v in manifest.items()
                                                                   if k not in ("format", "train_w_O")}}
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
    setting = _manifest_setting(where, manifest)
    specs = [_spec(where, setting, c) for c in manifest["cases"]]
    return write_golden(out, specs, manifest["steps"], manifest["traj_steps"], setting)


def _manifest_setting(where, manifest):
    """The ``Setting`` a manifest was written for (no "setting" entry: the first)."""
    name = manifest.get("setting", JIANG.name)
    if name not in SETTINGS:
        raise ValueError(f"{where}: unknown setting {name!r} in the manifest; known: {sorted(SETTINGS)}")
    return SETTINGS[name]


def _spec(where, setting, entry):
    """The case spec of one manifest entry, or a one-line ValueError naming the file."""
    try:
        return setting.case_type(**entry["settings"])
    except (TypeError, ValueError) as e:      # an unknown, missing or invalid setting of a case
        raise ValueError(f"{where}: a case's settings do not describe a case ({e})") from None


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
    setting = _manifest_setting(golden_dir / "manifest.json", manifest)
    steps = int(manifest["steps"])
    rows = []
    for entry in manifest["cases"]:
        path = golden_dir / entry["file"]
        if not path.is_file():
            raise ValueError(f"{path}: no such file, although the manifest lists it")
        if sha256_file(path) != entry["sha256"]:
            raise ValueError(f"{path}: does not match the sha256 in its manifest; the file was changed or damaged")
        g = load_npz(path)
        missing = [k for k in required_keys(setting) if k not in g]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        t_saved = _check_traj_steps(path, g["traj_step"], steps, manifest["traj_steps"])
        for k in setting.fields:
            if g[f"traj_{k}"].shape[0] != len(t_saved):
                raise ValueError(f"{path}: traj_{k} holds {g[f'traj_{k}'].shape[0]} snapshots, traj_step "
                                 f"{len(t_saved)}")
        spec = _stored_spec(path, setting, _spec(path, setting, entry), g)
        p0 = setting.params(*(g[k] for k in setting.fields))
        X, y = g["X"], g["y"]
        loss, grads = setting.loss_and_grads(p0, X, y, spec)
        errs = {"f": block_error(setting.forward(p0, X, spec), g["f"]), "loss": block_error(loss, g["loss"])}
        errs.update({f"d{k}": block_error(a, g[f"d{k}"]) for k, a in zip(setting.fields, grads)})
        traj = dict.fromkeys((f"traj_{k}" for k in setting.fields), 0.0)
        snaps = _iterates(p0, X, y, spec, setting, bool(g["train_w_O"]) if "train_w_O" in g else False, steps)
        losses = [setting.loss_and_grads(p, X, y, spec)[0] for p in snaps]
        for i, t in enumerate(t_saved):                      # every stored snapshot, not only the last
            for k, a, a0 in zip(setting.fields, snaps[t], p0):
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
        if args.setting is not None:
            manifest = _load_manifest(Path(args.check))
            written = _manifest_setting(Path(args.check) / "manifest.json", manifest).name
            if written != args.setting:
                raise ValueError(f"--setting {args.setting}: {Path(args.check) / 'manifest.json'} was written for "
                                 f"{written}; leave --setting out with --check (the manifest says which)")
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
    manifest = write_golden(args.out, list(args.cases), args.steps or STEPS, traj_steps,
                            checked_setting(args.setting or JIANG.name))
    total = sum(c["bytes"] for c in manifest["cases"])
    print(f"wrote {len(manifest['cases'])} cases ({total / 1e6:.2f} MB) and manifest.json to {args.out}")
    return 0


def add_subcommand(sub) -> None:
    p = sub.add_parser("golden", help="write golden vectors (inputs, f, loss, gradients, GD trajectory) as .npz",
                       description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", help="folder to write <case>.npz and manifest.json into")
    p.add_argument("--setting", choices=sorted(SETTINGS), default=None,
                   help="whose cases: jiang2024 (the first setting, when left out) or li2025 (the second); with "
                        "--check the manifest says which")
    p.add_argument("--cases", nargs="+", default=["small"], metavar="NAME",
                   help=f"case names or groups, as for `refvit crosscheck` ({groups_help()}); 'all' of the first "
                        f"setting writes hundreds of MB")
    p.add_argument("--steps", type=options.positive_int, default=None,
                   help=f"trajectory length (default: {STEPS} steps of each case's optimizer)")
    p.add_argument("--traj-steps", default=",".join(map(str, DEFAULT_TRAJ_STEPS)),
                   help="comma-separated steps whose parameters are saved")
    p.add_argument("--check", metavar="DIR", help="instead of writing: compare the current code with a golden set")
    p.set_defaults(func=cmd_golden)


__all__ = ["case_arrays", "write_golden", "regenerate", "check", "npz_bytes", "SMALL_CASES", "CHECK_TOL"]
