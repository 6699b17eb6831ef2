"""docs/math.md for an installed refvit: every message and docstring cites it by number ("docs/math.md (13.4)",
"§13.4"), so ``refvit math`` prints where it is and ``refvit math 13.4`` prints the cited section.

The file is found beside the package in a source checkout or an editable install, and in ``<prefix>/share/refvit``
where a wheel installs it (setup.cfg ``[options.data_files]``).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from .io import FileProblem


def math_path() -> Path:
    """The path of docs/math.md; ``FileProblem`` naming the places looked in when it is not there."""
    places = [Path(__file__).resolve().parents[1] / "docs" / "math.md",
              Path(sys.prefix) / "share" / "refvit" / "math.md"]
    for p in places:
        if p.is_file():
            return p
    raise FileProblem(places[0], f"docs/math.md is not installed here (looked in {', '.join(map(str, places))}); "
                                 "reinstall refvit, or read it in the source repository")


def section(text: str, item: str) -> str:
    """The part of math.md that ``item`` cites: "13" or "§13" the section, "13.4" or "§13.4" the subsection, "(13.4)"
    the subsection that holds equation (13.4). A ValueError names an item the document does not have."""
    item = item.strip()
    m = re.fullmatch(r"\((\d+\.\d+)\)", item)
    if m:
        at = text.find(f"\\tag{{{m.group(1)}}}")
        if at < 0:
            raise ValueError(f"docs/math.md has no equation ({m.group(1)})")
        sub, top = text.rfind("\n### ", 0, at), text.rfind("\n## ", 0, at)     # the nearest heading above it
        return _upto_next_heading(text, max(sub, top) + 1)           # up to the next heading of any level
    m = re.fullmatch(r"§?(\d+)(?:\.(\d+))?", item)
    if not m:
        raise ValueError(f"cite a section as 13 or 13.4 (or §13.4), an equation as (13.4); got {item!r}")
    head = f"### {m.group(1)}.{m.group(2)} " if m.group(2) else f"## {m.group(1)}. "
    start = text.find("\n" + head)
    if start < 0:
        raise ValueError(f"docs/math.md has no section {item.lstrip('§')}")
    return _upto_next_heading(text, start + 1, top=m.group(2) is None)


def _upto_next_heading(text: str, start: int, top: bool = False) -> str:
    """From ``start`` (a heading) to the next heading of the same level or above."""
    pattern = r"\n## " if top else r"\n##+ "
    nxt = re.search(pattern, text[start + 1:])
    part = text[start:start + 1 + nxt.start()] if nxt else text[start:]
    return part.rstrip().removesuffix("---").rstrip() + "\n"      # without the rule that opens the next section


def cmd_math(a) -> int:
    path = math_path()
    print(section(path.read_text(encoding="utf-8"), a.item) if a.item else path, end="" if a.item else "\n")
    return 0


def add_subcommand(sub) -> None:
    p = sub.add_parser("math", help="where docs/math.md is, or the section a message cites",
                       description="Print the path of docs/math.md, or with ITEM the section it cites: 13 or §13 a "
                                   "section, 13.4 a subsection, (13.4) the subsection holding equation (13.4).")
    p.add_argument("item", nargs="?", default=None, help="a section (13, 13.4, §13.4) or an equation ((13.4))")
    p.set_defaults(func=cmd_math)
