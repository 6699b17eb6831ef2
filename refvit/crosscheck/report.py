"""What ``crosscheck`` found: one ``BlockResult`` per (case, block), one ``CaseResult`` per case, one ``Report``."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from .cases import BLOCKS, CASE_KINDS, tolerance

# Exit statuses of ``refvit crosscheck`` (``Report.status``); 2 is a usage error, raised before any check.
EXIT_PASS, EXIT_INCORRECT, EXIT_NOT_ROBUST = 0, 1, 3


@dataclass
class BlockResult:
    """One block of one case: the error against the reference, its tolerance and the verdict."""
    case: str
    block: str
    error: float        # max relative error against the reference (inf: NaN, inf or wrong shape)
    tol: float
    passed: bool
    note: str | None = None   # what your block held when it was not finite: "shape (6,), dtype float64, 2 NaN …"


@dataclass
class CaseResult:
    """One case: its settings, a ``BlockResult`` per block checked, or the exception your function raised."""
    name: str
    description: str
    settings: dict
    blocks: list = field(default_factory=list)      # BlockResult
    error: str | None = None                         # an exception raised by your function, if any
    diagnosis: list = field(default_factory=list)   # names of catalogue mistakes matching this case
    findings: list = field(default_factory=list)    # plain statements (uniform factors, drifting updates, …)
    kind: str = "correctness"                        # "correctness" or "robustness" (``CASE_KINDS``)
    overflow: str | None = None                      # what overflowed and where, when your outputs are not finite

    @property
    def passed(self) -> bool:
        return self.error is None and all(b.passed for b in self.blocks)


@dataclass
class Report:
    """What ``crosscheck`` found. ``passed``: every block of every case within tolerance, no exception;
    ``correct``: so on the correctness cases (ordinary scales); ``robust``: so on the robustness cases (extreme
    margins and logits); ``status``: the exit status of ``refvit crosscheck`` (0 pass, 1 incorrect, 3 correct
    but not robust).

    ``diagnosis``: the names (catalogued mistakes, or causes read from your numbers) that explain every failing
    case; ``explanations``: every explanation found, best first, each with the cases it explains (a dict with
    "names", "cases", "parts", "of" and "text"); ``findings``: statements outside the catalogue, each with its
    cases; ``rows()`` gives one dict per (case, block) for a DataFrame or JSON.
    """
    dtype: str
    train_w_O: bool
    cases: list
    diagnosis: list = field(default_factory=list)
    findings: list = field(default_factory=list)
    explanations: list = field(default_factory=list)
    setting: str = "jiang2024"      # "jiang2024" (the first setting) or "li2025" (the second)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    @property
    def correct(self) -> bool:
        return all(c.passed for c in self.cases if c.kind == "correctness")

    @property
    def robust(self) -> bool:
        return all(c.passed for c in self.cases if c.kind == "robustness")

    @property
    def status(self) -> int:
        """0 every case passes; 1 a correctness case fails (or raised); 3 only robustness cases fail."""
        return EXIT_PASS if self.passed else EXIT_INCORRECT if not self.correct else EXIT_NOT_ROBUST

    def verdicts(self) -> list[str]:
        """One line per kind of case that ran: its cases and whether they pass."""
        out = []
        for kind, what in CASE_KINDS.items():
            cs = [c for c in self.cases if c.kind == kind]
            if cs:
                bad = [c.name for c in cs if not c.passed]
                verdict = "PASS" if not bad else f"FAIL ({', '.join(bad)})"
                out.append(f"{kind.capitalize()} ({what}; {len(cs)} case{'s' if len(cs) > 1 else ''}): {verdict}")
        return out

    def rows(self) -> list[dict]:
        return [dataclasses.asdict(b) for c in self.cases for b in c.blocks]

    def to_dict(self) -> dict:
        """Strict-JSON-ready: a non-finite number becomes the string "nan", "inf" or "-inf" (``finite_json``)."""
        second = {} if self.setting == "jiang2024" else {"setting": self.setting}
        return finite_json({**second, "dtype": self.dtype, "train_w_O": self.train_w_O, "passed": self.passed,
                            "correct": self.correct, "robust": self.robust, "status": self.status,
                            "diagnosis": list(self.diagnosis), "findings": list(self.findings),
                            "explanations": [dict(e) for e in self.explanations],
                            "cases": [dict(dataclasses.asdict(c), passed=c.passed) for c in self.cases]})

    def to_json(self) -> str:
        """The report as strict JSON (no NaN or Infinity tokens)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def format(self) -> str:
        blocks = [b for b in BLOCKS if any(r.block == b for c in self.cases for r in c.blocks)]
        w = max([len(c.name) for c in self.cases] + [8])
        what = f"w_O {'trained' if self.train_w_O else 'frozen'}" if self.setting == "jiang2024" else \
            f"setting {self.setting}"
        lines = [f"refvit crosscheck: dtype {self.dtype}, {what}, "
                 f"{len(self.cases)} cases; max relative error per block (! = above tolerance)",
                 " " * w + "".join(f"{b.replace('trainer_', 'tr_'):>10s}" for b in blocks),
                 f"{'tol':<{w}s}" + "".join(f"{tolerance(self.dtype, b):>10.0e}" for b in blocks)]
        for c in self.cases:
            by = {r.block: r for r in c.blocks}
            cells = []
            for b in blocks:
                r = by.get(b)
                cells.append(f"{'-':>10s}" if r is None else f"{r.error:>9.1e}{' ' if r.passed else '!'}")
            lines.append(f"{c.name:<{w}s}" + "".join(cells) + ("  ok" if c.passed else "  FAIL"))
            if c.error:
                lines.append(f"{'':<{w}s}  error: {c.error}")
            if c.diagnosis:
                lines.append(f"{'':<{w}s}  matches: {', '.join(c.diagnosis)}")
            notes = [f"{r.block}: {r.note}" for r in c.blocks if r.note]
            if len(notes) > 2:                         # one line for many non-finite blocks
                notes = notes[:1] + [f"… and {len(notes) - 1} more blocks not finite"]
            lines += [f"{'':<{w}s}  {n}" for n in notes]
        lines += self.verdicts()
        lines.append("PASS: every block within tolerance." if self.passed else
                     "FAIL: correct at ordinary scales, not robust at extreme ones." if self.correct else "FAIL.")
        if not self.passed:
            if self.explanations:
                lines.append("Diagnosis, best explanation first (with the failing cases each explains):")
                lines += [f"  - {e['text']}" for e in self.explanations]
            else:
                lines.append("Diagnosis: no known mistake explains a failing case.")
            said = " ".join(e["text"] for e in self.explanations)
            rest = [f for f in self.findings if f.split(" (in ")[0] not in said]   # each statement once
            if rest:
                lines.append("Findings (in every failing case, unless the cases are named):")
                lines += [f"  - {f}" for f in rest]
        return "\n".join(lines)



def finite_json(obj):
    """``obj`` with every non-finite float replaced by "nan", "inf" or "-inf" (recursively)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else "inf" if obj > 0 else "-inf"
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj
