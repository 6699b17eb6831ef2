"""`refvit math`: where docs/math.md is, and the section a message cites, for every section and equation it has."""
import pytest

from refvit import cli, mathdoc
from tests.test_citations import MATH, math_numbers


def test_the_path_is_the_repository_document(capsys):
    assert cli.main(["math"]) == 0
    assert capsys.readouterr().out.strip() == str(MATH.resolve()) == str(mathdoc.math_path())


def test_every_section_and_equation_can_be_printed():
    text = MATH.read_text(encoding="utf-8")
    tags, sections = math_numbers(text)
    for s in sections:
        part = mathdoc.section(text, s)
        assert part.startswith(f"### {s} " if "." in s else f"## {s}. "), s
        assert part == mathdoc.section(text, "§" + s)
    for t in tags:
        part = mathdoc.section(text, f"({t})")
        assert f"\\tag{{{t}}}" in part and part.startswith("##"), t
        assert part.count("\n### ") == 0                          # one subsection, not the rest of the document


def test_a_subsection_stops_at_the_next_heading_and_a_section_holds_its_subsections():
    text = MATH.read_text(encoding="utf-8")
    sub = mathdoc.section(text, "13.4")
    assert "### 13.5" not in sub and sub.startswith("### 13.4 ")
    whole = mathdoc.section(text, "13")
    assert "### 13.4 " in whole and "### 13.7 " in whole and "## 14." not in whole and not whole.rstrip().endswith("---")


@pytest.mark.parametrize("item, match", [("99", "no section 99"), ("(99.1)", "no equation"), ("x", "cite a section")])
def test_an_item_it_does_not_have_is_refused_in_one_line(item, match, capsys):
    with pytest.raises(ValueError, match=match):
        mathdoc.section(MATH.read_text(encoding="utf-8"), item)
    assert cli.main(["math", item]) == 2
    assert capsys.readouterr().err.startswith("refvit: error:")
