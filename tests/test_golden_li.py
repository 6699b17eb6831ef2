"""Golden vectors of the second setting (``refvit golden --setting li2025``): the committed set under
tests/golden_li2025/ matches the current code, its inputs regenerate exactly, regeneration gives the committed
bytes, and the check catches one altered value or switch."""
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from refvit import cli, golden
from refvit.crosscheck.li_cases import LI_CASE_GROUPS, LiCaseSpec, build_li_case
from refvit.io import load_json, load_npz
from .test_golden import _rewrite

GOLDEN = Path(__file__).parent / "golden_li2025"
SMALL = LI_CASE_GROUPS["small"]
KEYS = ["X", "y", "W_Q", "W_K", "W_V", "lr", "c_L", "optimizer", "trained", "f", "loss", "dW_Q", "dW_K", "dW_V",
        "traj_step", "traj_W_Q", "traj_W_K", "traj_W_V", "traj_loss"]


def test_committed_set_is_the_small_battery_and_intact():
    manifest = load_json(GOLDEN / "manifest.json")
    assert manifest["setting"] == "li2025" and manifest["format"] == golden.FORMAT
    assert [LiCaseSpec(**c["settings"]) for c in manifest["cases"]] == list(SMALL), \
        "the small cases changed: regenerate with `refvit golden --setting li2025 --out tests/golden_li2025`"
    assert sum(c["bytes"] for c in manifest["cases"]) < 300_000          # keep the repository small
    for entry in manifest["cases"]:
        data = (GOLDEN / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        g = load_npz(GOLDEN / entry["file"])
        assert list(g) == KEYS == list(golden.required_keys("li2025"))
        # inputs are RNG draws and exact scalings only: equal bit for bit (the outputs are checked with CHECK_TOL)
        case = build_li_case(LiCaseSpec(**entry["settings"]))
        for k, a in (("X", case.X), ("y", case.y), *case.params._asdict().items()):
            np.testing.assert_array_equal(g[k], a, err_msg=f"{entry['name']}/{k}")
        assert str(g["optimizer"]) == case.spec.optimizer and tuple(g["trained"]) == case.spec.trained


def test_current_code_reproduces_the_committed_numbers_and_bytes(tmp_path):
    rows = golden.check(GOLDEN)
    assert len(rows) == len(SMALL) * 9 and all(r["passed"] for r in rows), [r for r in rows if not r["passed"]]
    golden.regenerate(GOLDEN / "manifest.json", tmp_path)
    for entry in load_json(GOLDEN / "manifest.json")["cases"]:
        # same software, same arithmetic: the same bytes (another BLAS may differ in the last bit; then compare
        # with `golden --check`, as the test above does)
        assert (tmp_path / entry["file"]).read_bytes() == (GOLDEN / entry["file"]).read_bytes(), entry["file"]


def test_check_detects_an_altered_value_and_an_altered_switch(tmp_path):
    # dW_V × (1 + 1e-9): 100× the value tolerance 1e-11; a SignGD case relabelled GD: its trajectory differs
    shutil.copytree(GOLDEN, tmp_path / "g")
    _rewrite(tmp_path / "g", "gd_o1", lambda g: g.update(dW_V=g["dW_V"] * (1 + 1e-9)))
    _rewrite(tmp_path / "g", "signgd_sparse", lambda g: g.update(optimizer=np.array("gd")))
    bad = {(r["case"], r["quantity"]) for r in golden.check(tmp_path / "g") if not r["passed"]}
    assert ("gd_o1", "dW_V") in bad and {c for c, _ in bad} == {"gd_o1", "signgd_sparse"}
    assert {q for c, q in bad if c == "signgd_sparse"} >= {"traj_W_Q", "traj_W_K"}
    _rewrite(tmp_path / "g", "adam_mean", lambda g: g.update(c_L=np.array("half")))
    with pytest.raises(ValueError, match="adam_mean.npz: the stored switches"):
        golden.check(tmp_path / "g")


def test_cli_writes_and_checks_the_second_setting(tmp_path, capsys):
    out = tmp_path / "li"
    assert cli.main(["golden", "--setting", "li2025", "--out", str(out), "--cases", "N1", "one_class"]) == 0
    assert [c["name"] for c in load_json(out / "manifest.json")["cases"]] == ["N1", "one_class"]
    assert cli.main(["golden", "--check", str(out)]) == 0
    assert "0 above tolerance" in capsys.readouterr().out
    assert cli.main(["golden", "--check", str(out), "--setting", "jiang2024"]) == 2
    assert "was written for li2025" in capsys.readouterr().err
    assert cli.main(["golden", "--setting", "li2025", "--out", str(tmp_path / "x"), "--cases", "authors"]) == 2
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_golden_takes_the_case_names_and_groups_of_crosscheck(tmp_path):
    # before, golden offered only small/all/authors and no case names: now the groups of crosscheck, one definition
    assert cli.main(["golden", "--out", str(tmp_path), "--cases", "N1", "square", "--traj-steps", "0,1"]) == 0
    assert [c["name"] for c in load_json(tmp_path / "manifest.json")["cases"]] == ["N1", "square"]
    assert cli.main(["golden", "--out", str(tmp_path / "e"), "--cases", "edge", "--traj-steps", "0,1"]) == 0
    from refvit.crosscheck import EDGE_CASES
    assert [c["name"] for c in load_json(tmp_path / "e" / "manifest.json")["cases"]] == [c.name for c in EDGE_CASES]
