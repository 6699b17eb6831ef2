"""Every citation of docs/math.md in the repository names an equation or a section that exists.

Citation forms (docs/math.md is the project's own derivation; its equations are ``\\tag{S.k}``, its sections
``## S. Title`` and ``### S.s Title``):
    docs/math.md (S.k)              an equation; lists and ranges: docs/math.md (7.5), (7.14) or (3.6)–(3.8)
    docs/math.md §S, docs/math.md §S.s    a section or subsection; also §7.2–§7.4 and "§2, §3"
    (math S.k), (math S.k, S.j)     the short form in code comments on formula lines
    math §S, math §S.s              the short form of a section
No file may cite the external document the project used to cite, nor a file outside the repository.
"""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MATH = ROOT / "docs" / "math.md"

# "docs/math.md" followed by a chain of "(S.k)" and "§S[.s]" items joined by ",", "–" (ranges) or "and".
_ITEM = r"(?:\(\d+\.\d+\)|§\d+(?:\.\d+)?)"
_LONG = re.compile(r"docs/math\.md((?:\s*(?:,|–|-|and)?\s*" + _ITEM + r")+)")
# the short forms: "math 4.15", "math 4.15, 4.16", "math 3.6–3.8" and "math §7", "math §7.2–§7.4"
_SHORT_EQ = re.compile(r"\bmath (\d+\.\d+(?:\s*(?:,|–)\s*\d+\.\d+)*)")
_SHORT_SEC = re.compile(r"\bmath (§\d+(?:\.\d+)?(?:\s*(?:,|–)\s*§\d+(?:\.\d+)?)*)")
_EQ = re.compile(r"\((\d+\.\d+)\)")
_SEC = re.compile(r"§(\d+(?:\.\d+)?)")
_NUM = re.compile(r"\d+\.\d+")

# Built from parts so that this file does not contain them itself.
FORBIDDEN = ("PAPER" + " §", "PAPER" + ".md", "../" + "shared")
CONFIDENCE_TAGS = tuple(f"[{t}]" for t in ("INFERRED", "NOT FOUND", "RECALLED", "MEASURED", "CODE", "SRC", "DERIVED"))


def math_numbers(text: str | None = None) -> tuple[set[str], set[str]]:
    """(equation tags, section numbers) of docs/math.md: {"4.15", ...}, {"4", "4.3", ...}."""
    text = MATH.read_text(encoding="utf-8") if text is None else text
    tags = set(re.findall(r"\\tag\{(\d+\.\d+)\}", text))
    sections = set(re.findall(r"^## (\d+)\.", text, flags=re.M)) | set(re.findall(r"^### (\d+\.\d+)", text, flags=re.M))
    return tags, sections


def citations(text: str) -> list[tuple[str, str, int]]:
    """Every citation of docs/math.md in ``text``: (kind "eq" or "sec", number, line)."""
    out = []

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    for m in _LONG.finditer(text):
        chain, line = m.group(1), line_of(m.start())
        out += [("eq", n, line) for n in _EQ.findall(chain)]
        out += [("sec", n, line) for n in _SEC.findall(chain)]
    for m in _SHORT_SEC.finditer(text):
        out += [("sec", n, line_of(m.start())) for n in _SEC.findall(m.group(1))]
    for m in _SHORT_EQ.finditer(text):
        out += [("eq", n, line_of(m.start())) for n in _NUM.findall(m.group(1))]
    return out


def bad_citations(text: str, tags: set[str], sections: set[str]) -> list[str]:
    """Citations in ``text`` whose number docs/math.md does not have, as "line N: (S.k)" or "line N: §S"."""
    bad = []
    for kind, n, line in citations(text):
        if kind == "eq" and n not in tags:
            bad.append(f"line {line}: ({n})")
        if kind == "sec" and n not in sections:
            bad.append(f"line {line}: §{n}")
    return bad


def repo_text_files() -> dict[str, str]:
    """Tracked text files (``git ls-files``) plus README.md and docs/*.md, without docs/math.md itself."""
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot list the tracked files")
    names = set(listed.split("\n")) - {""}
    names |= {str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")} | {"README.md"}
    names.discard("docs/math.md")
    files = {}
    for name in sorted(names):
        path = ROOT / name
        if not path.is_file():
            continue                  # deleted in the working tree but still listed
        data = path.read_bytes()
        if b"\0" in data:
            continue                  # binary (npz, png)
        try:
            files[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return files


@pytest.fixture(scope="module")
def numbers():
    return math_numbers()


@pytest.fixture(scope="module")
def files():
    return repo_text_files()


def test_math_md_has_numbered_equations_and_sections(numbers):
    tags, sections = numbers
    assert {"2.7", "4.1", "4.15", "8.5", "11.2"} <= tags
    assert {"1", "4", "4.3", "9.2", "11"} <= sections


def test_every_citation_names_an_existing_equation_or_section(numbers, files):
    tags, sections = numbers
    problems = {name: bad for name, text in files.items() if (bad := bad_citations(text, tags, sections))}
    assert not problems, f"citations of numbers docs/math.md does not have: {problems}"
    n_cited = sum(len(citations(text)) for text in files.values())
    assert n_cited > 200, f"only {n_cited} citations found: has the scanner stopped recognizing them?"


def test_no_citation_of_the_old_document_or_of_files_outside_the_repository(files):
    hits = {name: [s for s in FORBIDDEN if s in text] for name, text in files.items()}
    hits = {name: found for name, found in hits.items() if found}
    assert not hits, f"cite docs/math.md instead: {hits}"


def test_no_confidence_tags_left(files):
    hits = {name: [t for t in CONFIDENCE_TAGS if t in text] for name, text in files.items()}
    hits = {name: found for name, found in hits.items() if found}
    assert not hits, f"say in words what the paper does not give, and cite docs/math.md §9: {hits}"


def test_the_checker_reports_numbers_that_do_not_exist():
    tags, sections = math_numbers("## 1. Data\n### 1.2 Labels\n$$ x \\tag{1.1} $$\n$$ y \\tag{1.2} $$\n")
    assert tags == {"1.1", "1.2"} and sections == {"1", "1.2"}
    # written in upper case and lowered here, so that the repository scan does not read them as citations
    good = "f (DOCS/MATH.MD (1.1), (1.2)); see DOCS/MATH.MD §1.2 and MATH §1   # (MATH 1.1, 1.2)".lower()
    assert len(citations(good)) == 6 and bad_citations(good, tags, sections) == []
    bad = ("x = y  # (MATH 1.1, 4.99)\n"
           "DOCS/MATH.MD (1.1)–(1.9) and DOCS/MATH.MD §1.7\n"
           "MATH §3, §1\n").lower()
    assert sorted(bad_citations(bad, tags, sections)) == ["line 1: (4.99)", "line 2: (1.9)", "line 2: §1.7",
                                                           "line 3: §3"]
    assert any(s in "see " + "PAPER" + " §4.2" for s in FORBIDDEN)


def _function_source(path: str, name: str) -> str:
    source = (ROOT / path).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(source, node)
    raise AssertionError(f"{path} has no function {name}")


@pytest.mark.parametrize("path, name", [
    ("refvit/jiang2024/model.py", "backward"),
    ("refvit/jiang2024/model.py", "attention_backward"),
    ("refvit/jiang2024/formulas.py", "gradients"),
    ("refvit/jiang2024/_kernels.py", "_attention_backward"),
])
def test_every_gradient_function_cites_its_equations(numbers, path, name):
    tags, sections = numbers
    body = _function_source(path, name)
    found = citations(body)
    assert found, f"{path}:{name} cites no equation of docs/math.md"
    assert any(kind == "eq" for kind, _, _ in found), f"{path}:{name} cites only sections, no equation"
    assert not bad_citations(body, tags, sections)
