"""What ``crosscheck`` found: one ``BlockResult`` per (case, block), one ``CaseResult`` per case, one ``Report``."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from .cases import BLOCKS, tolerance
from .mutants import MISTAKES


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

    @property
    def passed(self) -> bool:
        return self.error is None and all(b.passed for b in self.blocks)


@dataclass
class Report:
    """What ``crosscheck`` found. ``passed``: every block of every case within tolerance, no exception.

    ``diagnosis``: catalogue mistakes (names of ``CATALOGUE``) that match your outputs on every case while the
    reference does not; ``rows()`` gives one dict per (case, block) for a DataFrame or JSON.
    """
    dtype: str
    train_w_O: bool
    cases: list
    diagnosis: list = field(default_factory=list)
    findings: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    def rows(self) -> list[dict]:
        return [dataclasses.asdict(b) for c in self.cases for b in c.blocks]

    def to_dict(self) -> dict:
        """Strict-JSON-ready: a non-finite number becomes the string "nan", "inf" or "-inf" (``finite_json``)."""
        return finite_json({"dtype": self.dtype, "train_w_O": self.train_w_O, "passed": self.passed,
                            "diagnosis": list(self.diagnosis), "findings": list(self.findings),
                            "cases": [dict(dataclasses.asdict(c), passed=c.passed) for c in self.cases]})

    def to_json(self) -> str:
        """The report as strict JSON (no NaN or Infinity tokens)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def format(self) -> str:
        blocks = [b for b in BLOCKS if any(r.block == b for c in self.cases for r in c.blocks)]
        w = max([len(c.name) for c in self.cases] + [8])
        lines = [f"refvit crosscheck: dtype {self.dtype}, w_O {'trained' if self.train_w_O else 'frozen'}, "
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
            for r in c.blocks:
                if r.note:
                    lines.append(f"{'':<{w}s}  {r.block}: {r.note}")
            for f in c.findings:
                lines.append(f"{'':<{w}s}  {f}")
        lines.append("PASS: every block within tolerance." if self.passed else "FAIL.")
        if not self.passed:
            if self.diagnosis:
                lines.append("Diagnosis: your outputs match these known mistakes in every case you failed:")
                lines += [f"  - {n}: {MISTAKES[n].description}" for n in self.diagnosis]
            else:
                lines.append("Diagnosis: no catalogued mistake matches every failing case "
                             "(a per-case 'matches:' line above may still point to one).")
            if self.findings:
                lines.append("Findings:")
                lines += [f"  - {f}" for f in self.findings]
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
