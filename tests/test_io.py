"""Tables and manifests as written and read back (refvit.io): every value returns with its type and bits, and a
damaged table is refused naming the file and what is wrong."""
import math
import re

import numpy as np
import pytest

from refvit.io import FileProblem, read_columns, read_csv, save_csv


def test_a_table_reads_back_with_every_value_and_type(tmp_path):
    rows = [{"n": 3, "x": 0.1, "flag": True, "name": "gd@0.5", "y": float("nan")},
            {"n": -7, "x": 1e-300, "flag": False, "name": "adam", "y": float("inf")},
            {"n": 0, "x": np.float64(2.0) / 3, "flag": True, "name": "a,b \"c\"", "y": -0.0},
            {"n": 10**18, "x": 2.0, "flag": False, "name": "", "y": -float("inf")}]
    cols = ["n", "x", "flag", "name", "y"]
    path = save_csv(tmp_path / "t.csv", rows, cols)
    back = read_csv(path, cols)
    t = read_columns(path)
    assert len(back) == len(rows)
    for got, want in zip(back, rows):
        assert [type(got[k]) for k in ("n", "x", "flag")] == [int, float, bool]
        assert got["n"] == want["n"] and got["flag"] is want["flag"] and got["name"] == want["name"]
        # floats are written with repr: the same bits come back (nan and the sign of zero included)
        for k in ("x", "y"):
            assert np.float64(got[k]).tobytes() == np.float64(want[k]).tobytes() or \
                (math.isnan(got[k]) and math.isnan(want[k])), k
    assert t["n"].dtype.kind == "i" and t["flag"].dtype == bool and t["x"].dtype == np.float64


@pytest.mark.parametrize("text, why", [
    ("", "empty file: no header row"),
    ("a,b\n1,2\n3\n", "line 3 has 1 cells but the header has 2"),
    ("a,b\n1,2,3\n", "line 2 has 3 cells but the header has 2"),
    ("a,c\n1,2\n", "lacks the column(s) ['b']"),
])
def test_a_damaged_table_is_refused_naming_the_file(tmp_path, text, why):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(FileProblem, match=r"t\.csv.*" + re.escape(why)):
        read_csv(tmp_path / "t.csv", ("a", "b"))


def test_a_table_with_a_header_only_has_no_columns_to_read(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n")
    assert read_csv(tmp_path / "t.csv") == []
    with pytest.raises(FileProblem, match="has a header but no rows"):
        read_columns(tmp_path / "t.csv")


def test_an_output_that_is_not_a_regular_file_is_refused_and_left_alone(tmp_path):
    """Writing means renaming a new file over the path: over a device (/dev/null) or a pipe that would replace it.
    A pipe made here stands for both (a device cannot be made without privileges, and must not be touched)."""
    import os
    import stat
    from refvit.io import atomic_write, check_output, save_json
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for write in (lambda: check_output(pipe), lambda: save_json(pipe, {"a": 1}),
                  lambda: atomic_write(pipe, lambda fh: fh.write(b"x")), lambda: save_csv(pipe, [], ["a"])):
        with pytest.raises(FileProblem, match="pipe: is not a regular file"):
            write()
    assert stat.S_ISFIFO(os.stat(pipe).st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
    with pytest.raises(FileProblem, match="is a folder"):
        save_json(tmp_path, {"a": 1})
    assert check_output(tmp_path / "new.json") == tmp_path / "new.json"     # absent or regular: fine
