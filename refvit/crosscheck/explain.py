"""The diagnosis of a whole run, ranked: every explanation (a catalogued mistake, or a cause read from your numbers)
with the failing cases it explains, best first, so that one unrelated failure does not hide the others; the cases
left over "fail separately", with what is known of them; findings merged across cases, each with its cases."""
from __future__ import annotations

from .cases import TRAINER_BLOCKS
from .kinds import case_properties, only_on
from .diagnosis import F32_SCATTER_COS, _float32_scatter, diagnose_case, failing_parts, parts_matched
from .mutants import CATALOGUE, DESCRIPTIONS

SHAPE_TAGS = ("squeeze_size_1", "transposed_gradient")


def _cases_text(cases: list, failing: list) -> str:
    if len(cases) == len(failing):
        return f"all {len(cases)} failing cases" if len(cases) > 6 else ", ".join(cases)
    if len(failing) - len(cases) <= 2 and len(cases) > 3:
        return "all but " + ", ".join(c for c in failing if c not in cases)
    return ", ".join(cases)


def _loss_ok_elsewhere(runs, name: str) -> bool:
    """Your loss passed in every other case that ran (so a literal log(1 + e^{−z}) explains an infinite one)."""
    for r, _ in runs:
        for b in r.blocks:
            if r.name != name and b.block == "loss" and not b.passed:
                return False
    return True


def _agrees_on_passing(name: str, parts: set, runs, candidates, dtype, train_w_O, progress=None) -> bool:
    """A mutant must also predict the cases you passed, on the parts it explains elsewhere."""
    m = next((m for m in candidates if m.name == name), None)
    if m is None or name == "float32_accumulation":
        return True
    for r, s in runs:
        if r.passed and s is not None:
            want = {p for p in parts if p == "values" or (p == "step" and s.user.traj is not None)
                    or (p == "trainer" and s.user.trainer is not None)}
            if progress:
                progress(f"diagnosis: {name} on {r.name}, which passed")
            if parts_matched(m, s, dtype, train_w_O, {}, want) != want:
                return False
    return True


def rank(runs, dtype: str, train_w_O: bool, progress=None, setting=None) -> tuple[list, list, list]:
    """(diagnosis, explanations, findings) of a run: ``diagnosis`` the names explaining every failing case (that
    ran to its end), ``explanations`` one dict per explanation, best first ({"names", "cases", "parts", "of",
    "text"}; the cases no explanation covers come last as {"names": [], "cases": [case], "text"}), ``findings``
    merged across cases, each naming its cases. ``setting``: the ``Setting`` (None: the first setting's)."""
    catalogue, descriptions = (CATALOGUE, DESCRIPTIONS) if setting is None else \
        (setting.catalogue, setting.descriptions)
    candidates = [m for m in catalogue if m.applies(dtype, train_w_O)]
    failing = [(r, s) for r, s in runs if not r.passed and s is not None]
    units: dict = {}
    for i, (r, s) in enumerate(failing):
        if progress:
            progress(f"diagnosis [{i + 1}/{len(failing)}] {r.name}")
        for name, parts in diagnose_case(r, s, candidates, dtype, train_w_O, _loss_ok_elsewhere(runs, r.name),
                                         progress and (lambda t: progress(f"diagnosis: {t}"))).items():
            units.setdefault(name, set()).update((r.name, p) for p in parts)
    if "float32_accumulation" in units and _float32_scatter([p for _, s in failing for p in s.scatter]) >= \
            F32_SCATTER_COS:                        # float32-sized but systematic: not float32 arithmetic
        del units["float32_accumulation"]
        for r, _ in failing:
            if "float32_accumulation" in r.diagnosis:
                r.diagnosis.remove("float32_accumulation")
    if progress and units:
        progress("diagnosis: checking the candidates on the passing cases")
    for name in list(units):
        if not _agrees_on_passing(name, {p for _, p in units[name]}, runs, candidates, dtype, train_w_O, progress):
            del units[name]
            for r, _ in failing:
                if name in r.diagnosis:
                    r.diagnosis.remove(name)
    all_units = {(r.name, p) for r, _ in failing for p in failing_parts(r)}
    order = [r.name for r, _ in failing]
    groups: dict = {}                               # twins (the same units) are one explanation
    for name, u in units.items():
        groups.setdefault(frozenset(u), []).append(name)
    chosen, covered = [], set()
    while True:
        best = max(groups.items(), key=lambda kv: (len(kv[0] - covered), len(kv[0])), default=None)
        if best is None or not best[0] - covered:
            break
        chosen.append(best)
        covered |= best[0]
        del groups[best[0]]
    explanations = [_explanation(names, u, order, failing, descriptions) for u, names in chosen]
    diagnosis = [n for u, names in chosen if u == all_units and all_units for n in names]
    leftover: dict = {}                             # cases no explanation covers, grouped by what is known
    for r, s in failing:
        left = {p for p in failing_parts(r) if (r.name, p) not in covered}
        if left:
            e = _separately(r, left)
            leftover.setdefault(e["text"], []).append(e)
    for why, es in leftover.items():
        cases = [c for e in es for c in e["cases"]]
        who = f"{cases[0]} fails" if len(cases) == 1 else f"{_cases_text(cases, order)} fail"
        how = "separately" if chosen else "with no known mistake matching"
        explanations.append(dict(es[0], cases=cases, text=f"{who} {how}: {why}"))
    for r, _ in runs:
        for tag in SHAPE_TAGS:
            if r.error and f"[{tag}]" in r.error:
                if tag not in diagnosis:
                    diagnosis.append(tag)
                r.diagnosis.append(tag)
    props = {r.name: case_properties(s.inputs, None if setting is None else
                                     (lambda p, X, spec=s.case.spec: setting.logits(p, X, spec)))
             for r, s in runs if s is not None}
    passed = {r.name for r, _ in runs if r.passed}
    for e in explanations:                          # a mistake that shows on one kind of case only: say so
        said = only_on(e["cases"], props, passed) if len(props) > 2 and e["of"] is not None else None
        if said:
            e["text"] = f"{e['text']} [{said}]"
            e["only_on"] = said
    findings = _merged_findings(failing)
    overall = only_on(order, props, passed) if len(props) > 2 and order else None
    if overall:                                     # every failing case is of one kind
        findings.insert(0, f"the failures {overall.replace('shows', 'show', 1)}")
    return diagnosis, explanations, findings


def _explanation(names, u, order, failing, descriptions=DESCRIPTIONS) -> dict:
    cases = [c for c in order if any(c == uc for uc, _ in u)]
    parts = sorted({p for _, p in u})
    whole = [c for c in cases if {p for uc, p in u if uc == c} == failing_parts(next(r for r, _ in failing
                                                                                      if r.name == c))]
    label = " = ".join(names)
    where = f" ({_cases_text(cases, order)})" if len(cases) < len(order) or len(cases) <= 6 else ""
    if len(whole) == len(cases):
        what = f"explains {len(cases)} of {len(order)} failing case{'s' if len(order) > 1 else ''}"
        if parts == ["trainer"]:
            what += " (in your trainer only)"
    else:
        what = f"explains your {' and '.join(p if p != 'values' else 'f, loss and gradients' for p in parts)} " \
               f"in {len(cases)} of {len(order)} failing cases"
    runs = {r.name: r for r, _ in failing}
    said = list(dict.fromkeys(runs[c].overflow for c in cases if runs[c].overflow))
    if said:                                        # an overflow: the sentence of the case says what and where
        head = f"{cases[0]} fails separately ({label})" if len(cases) == 1 else f"{label} {what}{where}"
        return {"names": list(names), "cases": cases, "parts": parts, "of": len(order),
                "text": f"{head}: {said[0]}" + (f" (and {len(said) - 1} more like it)" if len(said) > 1 else "")}
    desc = "; ".join(descriptions[n] for n in names)
    return {"names": list(names), "cases": cases, "parts": parts, "of": len(order),
            "text": f"{label} {what}{where}: {desc}"}


def _separately(r, left: set) -> dict:
    if r.overflow:
        why = r.overflow
    elif r.findings:
        why = "; ".join(r.findings)
    else:
        blocks = [b.block for b in r.blocks if not b.passed]
        why = f"failing blocks {', '.join(blocks)}"
    if left == {"trainer"} and any(b.block in TRAINER_BLOCKS for b in r.blocks):
        why = "in the trainer: " + why
    return {"names": list(r.diagnosis), "cases": [r.name], "parts": sorted(left), "of": None, "text": why}


def _merged_findings(failing) -> list[str]:
    """Each finding once, with the cases it was made in (none named: made in every failing case)."""
    where: dict = {}
    for r, _ in failing:
        for f in r.findings:
            where.setdefault(f, []).append(r.name)
    order = [r.name for r, _ in failing]
    return [f if len(cases) == len(order) else f"{f} (in {_cases_text(cases, order)})" for f, cases in where.items()]
