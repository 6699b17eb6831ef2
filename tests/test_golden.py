"""Golden vectors: the committed set under tests/golden/ still matches the current code, regeneration from its
manifest gives the committed bytes whatever the date, and `golden --check` catches a single altered value."""
import hashlib
import json
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from refvit import cli, golden
from refvit.crosscheck import SMALL_CASES, CaseSpec, build_case
from refvit.io import load_json, load_npz

GOLDEN = Path(__file__).parent / "golden"
KEYS = ["X", "y", "W_Q", "W_K", "W_V", "w_O", "lr", "train_w_O", "f", "loss", "dW_Q", "dW_K", "dW_V", "dw_O",
        "traj_step", "traj_W_Q", "traj_W_K", "traj_W_V", "traj_w_O", "traj_loss"]


def test_committed_set_is_the_small_battery_and_intact():
    manifest = load_json(GOLDEN / "manifest.json")
    assert manifest["format"] == golden.FORMAT and manifest["dtype"] == "float64"
    assert [CaseSpec(**c["settings"]) for c in manifest["cases"]] == list(SMALL_CASES), \
        "SMALL_CASES changed: regenerate with `refvit golden --out tests/golden` and commit"
    assert sum(c["bytes"] for c in manifest["cases"]) < 300_000          # keep the repository small
    for entry in manifest["cases"]:
        data = (GOLDEN / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
        g = load_npz(GOLDEN / entry["file"])
        assert list(g) == KEYS
        # Inputs are RNG draws and exact scalings only (no sums), so they regenerate bit for bit on any machine
        # with NumPy's stable Generator streams: exact equality is the right assertion here, unlike for outputs.
        case = build_case(CaseSpec(**entry["settings"]))
        for k, a in (("X", case.X), ("y", case.y), *case.params._asdict().items()):
            np.testing.assert_array_equal(g[k], a, err_msg=f"{entry['name']}/{k}")
        assert g["traj_W_Q"].shape[0] == len(manifest["traj_steps"]) and g["traj_loss"].shape == (21,)


def test_current_code_reproduces_the_committed_numbers():
    # golden.CHECK_TOL (1e-11 values, 1e-10 trajectories; relative): another machine may sum in another order,
    # so bit equality with the committed file is not the assertion. Measured difference between two summation
    # orders (numpy vs numba backends) on these cases ≤ 7e-15 / 3e-14; a change of the model's formulas moves
    # the numbers by far more (see test_check_detects_a_change_of_1e_9).
    rows = golden.check(GOLDEN)
    assert len(rows) == len(SMALL_CASES) * 11
    bad = [r for r in rows if not r["passed"]]
    assert not bad, bad


def _rewrite(folder: Path, name: str, change) -> None:
    """Change one array of a golden file and refresh its manifest hash, as a regenerated file would be."""
    g = load_npz(folder / f"{name}.npz")
    change(g)
    data = golden.npz_bytes(g)
    (folder / f"{name}.npz").write_bytes(data)
    manifest = load_json(folder / "manifest.json")
    for c in manifest["cases"]:
        if c["name"] == name:
            c["sha256"], c["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_check_detects_a_change_of_1e_9(tmp_path):
    shutil.copytree(GOLDEN, tmp_path / "g")
    _rewrite(tmp_path / "g", "o1_logits", lambda g: g.update(dW_K=g["dW_K"] * (1 + 1e-9)))
    _rewrite(tmp_path / "g", "saturated", lambda g: g["traj_W_V"][-1].__imul__(1 + 1e-8))
    bad = {(r["case"], r["quantity"]) for r in golden.check(tmp_path / "g") if not r["passed"]}
    assert bad == {("o1_logits", "dW_K"), ("saturated", "traj_W_V")}
    (tmp_path / "g" / "M1.npz").write_bytes(b"damaged")
    with pytest.raises(ValueError, match="sha256"):
        golden.check(tmp_path / "g")


def _at_clock(monkeypatch, when: str) -> None:
    """Set the wall clock that zipfile (and np.savez through it) would stamp into the archive members."""
    secs = time.mktime(time.strptime(when, "%Y-%m-%d %H:%M:%S"))
    monkeypatch.setattr(time, "time", lambda: secs)


def _layout(path) -> list:
    """A golden file's zip layout: each member's name, date, compression and attributes, and the .npy header
    (dtype, shape, order) of its array: everything in the file but the array values."""
    out = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                header = read[version](fh)
            out.append((info.filename, info.date_time, info.compress_type, info.external_attr, version, header))
    return out


@pytest.mark.parametrize("when", ["2031-07-14 09:26:53", "2044-12-31 23:59:58"])
def test_regeneration_at_another_date_gives_the_committed_files(tmp_path, monkeypatch, when):
    # The defect guarded: a writer whose bytes depend on when it runs (a zip member stamped with the current date,
    # as zipfile's writestr does for a plain member name) or that changes its zip layout makes a regeneration
    # differ from the committed files. Written at another date, each file must have the committed layout, byte for
    # byte, and the committed values. The values are compared with the golden check's tolerance, not bitwise: the
    # same numpy on another processor (another BLAS kernel) may round the last bit of a product differently, and
    # that is not a change of the file format. Where the arithmetic is the committed one the bytes are identical.
    manifest = load_json(GOLDEN / "manifest.json")
    _at_clock(monkeypatch, when)
    golden.regenerate(GOLDEN / "manifest.json", tmp_path)
    for entry in manifest["cases"]:
        new, old = tmp_path / entry["file"], GOLDEN / entry["file"]
        assert _layout(new) == _layout(old), entry["file"]
        a, b = load_npz(new), load_npz(old)
        for k in b:
            # golden.CHECK_TOL: the documented tolerance of `refvit golden --check`, relative to the block's largest
            # entry (1e-11 for values, 1e-10 for trajectories: a few hundred ulps of rounding at most)
            tol = golden.CHECK_TOL["traj" if k.startswith("traj") else "value"]
            scale = np.max(np.abs(b[k]), initial=0.0) if np.issubdtype(b[k].dtype, np.number) else 0.0
            if np.issubdtype(b[k].dtype, np.number):
                assert np.max(np.abs(a[k] - b[k]), initial=0.0) <= tol * max(scale, 1e-300), (entry["file"], k)
            else:
                assert np.array_equal(a[k], b[k]), (entry["file"], k)
    regenerated = load_json(tmp_path / "manifest.json")
    strip = (lambda m: {**m, "cases": [{k: v for k, v in c.items() if k != "sha256"} for c in m["cases"]]})
    assert strip(regenerated) == strip(manifest)      # the sha256 of a file follows its values


def test_written_bytes_do_not_depend_on_the_clock(tmp_path, monkeypatch):
    # The same defect in any environment (no comparison with the committed files): two writes years apart give
    # the same bytes, and every zip member carries the fixed date.
    spec = SMALL_CASES[3]                                         # M1, the smallest file
    _at_clock(monkeypatch, "2030-01-02 03:04:06")
    first = golden.write_golden(tmp_path / "a", [spec])
    _at_clock(monkeypatch, "2049-11-12 13:14:16")
    second = golden.write_golden(tmp_path / "b", [spec])
    assert first == second
    data = (tmp_path / "a" / "M1.npz").read_bytes()
    assert data == (tmp_path / "b" / "M1.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a" / "M1.npz") as zf:
        assert {i.date_time for i in zf.infolist()} == {golden.ZIP_DATE}


def test_cli_check_catches_one_altered_reference_value(tmp_path, capsys):
    # One entry of one committed reference block moved by 1e-10 of the block's largest entry (~5e5 ulps; 10× the
    # documented value tolerance 1e-11 of golden.CHECK_TOL) must fail `refvit golden --check` on that quantity
    # alone; moved by 4 ulps (what another summation order may do) it must pass: neither blind nor flaky.
    g = load_npz(GOLDEN / "dh_ne_dv.npz")
    scale = np.max(np.abs(g["dW_V"]))
    for shift, expect in ((1e-10 * scale, 1), (4 * np.spacing(scale), 0)):
        folder = tmp_path / f"shift_{shift:.0e}"
        shutil.copytree(GOLDEN, folder)
        _rewrite(folder, "dh_ne_dv", lambda g: g["dW_V"].__setitem__((2, 7), g["dW_V"][2, 7] + shift))
        assert np.sum(load_npz(folder / "dh_ne_dv.npz")["dW_V"] != g["dW_V"]) == 1     # one value, changed
        assert cli.main(["golden", "--check", str(folder)]) == expect
        out = capsys.readouterr().out
        if expect:
            assert "1 above tolerance" in out and "dh_ne_dv" in out and "dW_V" in out, out
        else:
            assert "0 above tolerance" in out, out


def test_cli_writes_and_checks(tmp_path, capsys):
    assert cli.main(["golden", "--out", str(tmp_path), "--traj-steps", "0,20"]) == 0
    manifest = load_json(tmp_path / "manifest.json")
    assert manifest["traj_steps"] == [0, 20] and len(manifest["cases"]) == len(SMALL_CASES)
    with np.load(tmp_path / "M1.npz", allow_pickle=False) as z:       # plain numpy reads it
        assert z["traj_W_V"].shape == (2, 16, 5) and z["dW_Q"].shape == (16, 6)
    assert cli.main(["golden", "--check", str(tmp_path)]) == 0
    assert "0 above tolerance" in capsys.readouterr().out
    assert cli.main(["golden"]) == 2
    assert cli.main(["golden", "--out", str(tmp_path), "--traj-steps", "0,30"]) == 2


# --- a damaged or incomplete golden set must fail, never pass ---------------------------------------------------

@pytest.mark.parametrize("key, index", [("traj_W_V", (-1, 0, 0)), ("traj_W_K", (2, 1, 1)), ("f", (0,)),
                                        ("dW_Q", (0, 0))])
def test_check_fails_on_a_non_finite_reference_value(tmp_path, key, index):
    # A NaN in a stored snapshot made max(0.0, nan) = 0.0 and passed; every NaN or inf must fail its quantity.
    for bad in (np.nan, np.inf):
        folder = tmp_path / f"{key}_{bad}"
        shutil.copytree(GOLDEN, folder)
        _rewrite(folder, "saturated", lambda g: g[key].__setitem__(index, bad))
        failed = {(r["case"], r["quantity"]) for r in golden.check(folder) if not r["passed"]}
        assert ("saturated", key) in failed, (key, bad, failed)


def test_check_compares_a_middle_snapshot(tmp_path):
    # Snapshot at step 2 (not the last) moved by 1e-8 relative: 100× the trajectory tolerance 1e-10.
    shutil.copytree(GOLDEN, tmp_path / "g")
    _rewrite(tmp_path / "g", "o1_logits", lambda g: g["traj_W_V"][2].__imul__(1 + 1e-8))
    bad = {(r["case"], r["quantity"]) for r in golden.check(tmp_path / "g") if not r["passed"]}
    assert bad == {("o1_logits", "traj_W_V")}


def _cut_trajectory(g, keep):
    g["traj_step"] = g["traj_step"][keep]
    for k in ("W_Q", "W_K", "W_V", "w_O"):
        g[f"traj_{k}"] = g[f"traj_{k}"][keep]


@pytest.mark.parametrize("change, message", [
    (lambda g: g["traj_step"].__setitem__(-1, 30), "must be increasing steps in \\[0, 20\\]"),       # out of range
    (lambda g: g["traj_step"].__setitem__(-1, -1), "must be increasing steps"),                       # negative
    (lambda g: _cut_trajectory(g, slice(0, -1)), "differs from the manifest"),                       # one missing
    (lambda g: _cut_trajectory(g, slice(0, 0)), "has no trajectory"),                                # none at all
])
def test_check_refuses_missing_or_out_of_range_trajectory_steps(tmp_path, capsys, change, message):
    shutil.copytree(GOLDEN, tmp_path / "g")
    _rewrite(tmp_path / "g", "M1", change)
    with pytest.raises(ValueError, match=message):
        golden.check(tmp_path / "g")
    assert cli.main(["golden", "--check", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("refvit: error: ") and "M1.npz" in err[0], err


def test_check_of_a_missing_golden_set_or_file_is_one_line(tmp_path, capsys):
    assert cli.main(["golden", "--check", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"refvit: error: {tmp_path / 'nowhere' / 'manifest.json'}: no such file; give the folder "
                   f"written by `refvit golden --out`"], err
    shutil.copytree(GOLDEN, tmp_path / "g")
    (tmp_path / "g" / "M1.npz").unlink()
    assert cli.main(["golden", "--check", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "M1.npz: no such file" in err[0], err


def test_bad_traj_steps_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["golden", "--out", str(tmp_path), "--traj-steps", "a,b"]) == 2
    err = capsys.readouterr().err
    assert "--traj-steps must be comma-separated integers" in err and "'a,b'" in err, err
    assert not (tmp_path / "manifest.json").exists()


def _repeat_a_snapshot(g):
    """traj_step 0, 1, 2, 5, 10, 20 -> 0, 1, 1, 5, 10, 20 with the step-1 snapshot stored twice: consistent arrays
    whose steps repeat."""
    keep = [0, 1, 1, 3, 4, 5]
    _cut_trajectory(g, keep)


def test_check_refuses_a_golden_set_whose_snapshot_steps_repeat(tmp_path):
    shutil.copytree(GOLDEN, tmp_path / "g")
    for case in SMALL_CASES:                                  # the manifest's traj_steps hold for every file
        _rewrite(tmp_path / "g", case.name, _repeat_a_snapshot)
    manifest = load_json(tmp_path / "g" / "manifest.json")
    assert manifest["traj_steps"] == [0, 1, 2, 5, 10, 20]
    manifest["traj_steps"] = [0, 1, 1, 5, 10, 20]            # the manifest agrees with the file: only the repeat is wrong
    (tmp_path / "g" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"tiny_init\.npz: traj_step \[0, 1, 1, 5, 10, 20\] must be increasing"):
        golden.check(tmp_path / "g")
    with pytest.raises(ValueError, match="traj_steps must be increasing"):   # nor can such a set be written again
        golden.regenerate(manifest, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    for steps in ((0, 1, 1, 20), (2, 1), (0, 21)):
        with pytest.raises(ValueError, match="traj_steps must be increasing"):
            golden.case_arrays(SMALL_CASES[0], 20, steps)
