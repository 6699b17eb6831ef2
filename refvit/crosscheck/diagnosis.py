"""The diagnosis of each failing case: an overflow when your outputs are not finite (``overflow``), else the
catalogued mistakes whose predictions match your numbers, part by part (values: f, loss, gradients; your step
function's trajectory; your trainer's), the float32 test (size and scatter), and plain findings outside the
catalogue (zero and uniformly scaled blocks, updates, trainer state). ``explain`` ranks and words them."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .calls import _Outputs
from .cases import GRAD_BLOCKS, TRAINER_BLOCKS, TRAJ_BLOCKS, Case, tolerance
from .compare import _compare, _model_outputs, _RefTraj, _traj_errors, _within
from .metrics import grad_zero_level, match_error, uniform_factor
from .mutants import Mistake, Variant
from .overflow import overflow
from .signatures import accumulation, extra_layer, label_smoothing, nondeterministic
from .report import CaseResult
from .updates import Finding, first_update, state_kind, w_O_rule

F32_SCATTER_COS = 0.5    # see _float32_scatter: float32 rounding ≤ 0.25, systematic changes ≥ 0.8 (measured)
PREFILTER_STEPS = 2      # a mutant's trajectory is first compared over 2 steps (momentum shows at step 2)
VALUE_BLOCKS = ("f", "loss") + GRAD_BLOCKS
PARTS = {"values": VALUE_BLOCKS, "step": TRAJ_BLOCKS, "trainer": TRAINER_BLOCKS}


class _State(NamedTuple):
    """What the diagnosis needs of one case that ran to the end."""
    case: Case
    inputs: tuple       # (p0, X, y) as float64
    user: _Outputs
    ref: _Outputs
    ref_traj: _RefTraj | None
    steps: int
    scatter: list        # filled by the float32 test of the diagnosis
    setting: object = None   # the ``Setting`` (None: the first setting's, as written before settings existed)

    @property
    def blocks(self) -> dict:
        """This setting's block names: {"step": traj_*, "trainer": trainer_* of the parameter blocks}."""
        fields = type(self.inputs[0])._fields
        return {"step": tuple(f"traj_{k}" for k in fields), "trainer": tuple(f"trainer_{k}" for k in fields)}

    def bound(self, variant):
        """The mutant's model on this case."""
        return variant if self.setting is None else self.setting.bind(variant, self.case.spec)


def failing_parts(result: CaseResult) -> set:
    """The parts of a case that fail: "values" (f, loss, gradients), "step", "trainer"."""
    bad = {b.block for b in result.blocks if not b.passed}
    return {part for part, blocks in PARTS.items() if bad & set(blocks)}


def _variant_traj(variant: Variant, st: _State, train_w_O: bool, steps: int) -> _RefTraj:
    p0, X, y = st.inputs
    with np.errstate(all="ignore"):          # a mutant may overflow on purpose (naive loss or softmax)
        traj = [type(p0)(*(np.asarray(a, np.float64) for a in p))
                for p in variant.trajectory(p0, X, y, st.case.spec.lr, train_w_O, steps)]
    return _RefTraj(p0, traj, st.ref_traj.grads[:steps], st.case.spec.lr)


def _float32_like(st: _State, errs: dict):
    """Errors of the size of float32 rounding: f and every non-zero gradient block off by more than the float64
    tolerance but within float32's. Returns the deviations (yours − ref) and the values ref, each block scaled by
    its largest entry, for the scatter test of ``_float32_scatter``; None when the sizes do not fit."""
    blocks = ["f"] + ([f"d{k}" for k in st.user.grads._fields] if st.user.grads is not None else [])
    zero = grad_zero_level("float64", st.ref.grads) if st.ref.grads is not None else 0.0
    dev, val = [], []
    for b in blocks:
        yours = st.user.f if b == "f" else getattr(st.user.grads, b[1:])
        ref = st.ref.f if b == "f" else getattr(st.ref.grads, b[1:])
        scale = float(np.max(np.abs(ref)))
        if b != "f" and scale <= zero:
            continue                                   # a block that is zero (M = 1): nothing to round
        if not (tolerance("float64", b) < errs.get(b, 0.0) <= tolerance("float32", b)):
            return None
        dev.append(((yours - ref) / scale).ravel())
        val.append((ref / scale).ravel())
    return np.concatenate(dev), np.concatenate(val)


def _float32_scatter(pairs) -> float:
    """|cos| between all deviations and all values of the failing cases joined (``_float32_like``). Rounding
    errors are nearly orthogonal to the values; a systematic change (ε in the softmax, a factor) points along
    them. Measured over the "quick" and "small" cases: float32 arithmetic 0.06–0.8 per case but ≤ 0.25 joined
    (hundreds of entries); a softmax ε of 1e-6 ≥ 0.8 joined. F32_SCATTER_COS = 0.5 lies between."""
    d = np.concatenate([p[0] for p in pairs])
    v = np.concatenate([p[1] for p in pairs])
    return abs(float(d @ v)) / (float(np.linalg.norm(d) * np.linalg.norm(v)) or 1.0)


def parts_matched(mistake: Mistake, st: _State, dtype: str, train_w_O: bool, fails: dict, parts,
                  progress=None) -> set:
    """Which of ``parts`` this mutant predicts within the case's tolerance (in the mutant's dtype). Your values
    must match its values for any part to count; your step and your trainer are then judged separately (they are
    different code: a mistake may sit in one of them only)."""
    v = st.bound(mistake.variant)
    p0, X, y = st.inputs
    if mistake.name == "float32_accumulation":
        if st.user.dtypes and "float32" not in st.user.dtypes:
            return set()                 # float64 outputs with float32 errors: float32 in one place (below)
        pair = _float32_like(st, fails)
        if pair is not None:
            st.scatter.append(pair)
        return set(parts) if pair is not None else set()
    match_dtype = v.dtype if dtype == "float64" else dtype
    if v.step_only and v.dtype == "float64":
        other = st.ref                       # its f, loss and gradients are the reference's
    else:
        with np.errstate(all="ignore"):      # f first: most mutants differ there, and it costs a third
            f = np.asarray(v.forward(p0, X)[0], dtype=np.float64)
        if match_error(st.user.f, f) > tolerance(match_dtype, "f"):
            return set()
        other = _model_outputs(v, p0, X, y, st.user.grads is not None)
    if not _within(_compare(st.user, other, match_dtype, st.ref, match_error, mutant=True), match_dtype):
        return set()
    out = {"values"} & set(parts)
    mine = {"step": (st.user.traj, st.blocks["step"]), "trainer": (st.user.trainer, st.blocks["trainer"])}
    wanted = [p for p in ("step", "trainer") if p in parts and mine[p][0] is not None]
    if not wanted:
        return out
    # cheap first: the first PREFILTER_STEPS iterates (a wrong mutant differs there: momentum at step 2), so the
    # full trajectory is run only for a mutant that may match
    head = _variant_traj(v, st, train_w_O, min(PREFILTER_STEPS, st.steps))
    wanted = [p for p in wanted if _traj_matches(mine[p][0][:len(head.traj)], head, match_dtype, mine[p][1],
                                                 prefix=True)]
    if wanted:
        if progress:
            progress(f"{st.case.spec.name}: {mistake.name} over {st.steps} steps")
        theirs = _variant_traj(v, st, train_w_O, st.steps)
        out |= {p for p in wanted if _traj_matches(mine[p][0], theirs, match_dtype, mine[p][1])}
    return out


def _traj_matches(mine: list, theirs: _RefTraj, dtype: str, names, prefix: bool = False) -> bool:
    """Your iterates against a mutant's: the same length up to the first non-finite iterate (a mutant that
    overflows predicts where you overflow), equal non-finite entries there, within tolerance before. ``prefix``:
    ``theirs`` is only the start of the trajectory, so yours may go on."""
    finite = [all(np.all(np.isfinite(a)) for a in p) for p in theirs.traj]
    n = finite.index(False) + 1 if False in finite else len(finite)
    if len(mine) != n and not (prefix and len(mine) >= n and n == len(finite)):
        return False
    mine = mine[:n]
    head = _RefTraj(theirs.p0, theirs.traj[:n - 1], theirs.grads[:n - 1], theirs.lr)
    if n > 1 and not _within(_traj_errors(mine[:n - 1], head, dtype, names), dtype):
        return False
    if n == len(finite) and finite[-1]:
        return _within(_traj_errors(mine, theirs, dtype, names), dtype)
    return all(match_error(a, b) <= tolerance(dtype, names[0]) for a, b in zip(mine[-1], theirs.traj[n - 1]))


def value_findings(st: _State, result: CaseResult, dtype: str) -> list[Finding]:
    """Blocks of f, the loss and the gradients that are zero where the reference's are not, or a uniform
    multiple of the reference's (one finding per factor, naming its blocks)."""
    by = {b.block: b for b in result.blocks}
    zero, factors = [], {}
    for b in VALUE_BLOCKS:
        r = by.get(b)
        if r is None or r.passed:
            continue
        yours = st.user.f if b == "f" else st.user.loss if b == "loss" else getattr(st.user.grads, b[1:])
        ref = st.ref.f if b == "f" else st.ref.loss if b == "loss" else getattr(st.ref.grads, b[1:])
        a, big = np.asarray(yours, dtype=np.float64), float(np.max(np.abs(ref)))
        if not np.all(np.isfinite(a)):
            continue
        if float(np.max(np.abs(a))) <= tolerance(dtype, b) * big:   # zero up to rounding: say zero
            zero.append(b)
            continue
        c = uniform_factor(yours, ref, tolerance(dtype, b)) if np.size(yours) >= 2 else None
        if c is not None and abs(c - 1) >= 1e-3:          # a factor worth the name (1 − 1/c ≥ 1e-3)
            factors.setdefault(f"{c:.6g}", []).append(b)
    out = []
    if zero:
        out.append(Finding(None, f"your {_join(zero)} {'is' if len(zero) == 1 else 'are'} zero (every entry 0 up "
                           f"to rounding) where the reference's {'is' if len(zero) == 1 else 'are'} not"))
    for c, blocks in factors.items():
        out.append(Finding(None, f"your {_join(blocks)} {'is' if len(blocks) == 1 else 'are'} {c} × the "
                           f"reference"))
    return out


def _join(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def update_findings(st: _State, result: CaseResult, dtype: str, train_w_O: bool) -> list[tuple[str, Finding]]:
    """Your step function's and your trainer's updates, each on its own (``updates``): (part, finding) pairs."""
    out = []
    by = {b.block: b for b in result.blocks}
    p0, X, y = st.inputs
    values_ok = all(by[b].passed for b in VALUE_BLOCKS if b in by)
    state = None
    if "trainer_restart" in by:
        persistent = all(by[b].passed for b in TRAINER_BLOCKS[:4])
        fresh = by["trainer_restart"].passed
        if fresh and not persistent and values_ok and all(np.all(np.isfinite(a)) for p in st.user.trainer for a in p):
            state = state_kind("trainer", st.user.trainer, p0, X, y, st.case.spec.lr, train_w_O, dtype)
        elif persistent and not fresh:
            state = Finding(None, "a newly created trainer's first step differs from later ones (warm-up, a step "
                            "counter)")
    for kind, blocks, mine in (("step", TRAJ_BLOCKS, st.user.traj), ("trainer", TRAINER_BLOCKS[:4],
                                                                      st.user.trainer)):
        bad = [b for b in blocks if b in by and not by[b].passed]
        if not bad or not mine or not all(np.all(np.isfinite(a)) for a in mine[0]):
            continue
        rule = w_O_rule(kind, mine, p0, train_w_O)
        if rule is not None:
            out.append((kind, rule))
        first = first_update(kind, mine, st.ref_traj.traj[0], p0, dtype) if values_ok else []
        out += [(kind, f) for f in first]
        worst = max(by[b].error for b in bad)
        quiet = kind == "trainer" and state is not None          # the state finding says more
        if values_ok and rule is None and not quiet and dtype == "float64" and worst < 0.1:
            names = _join(b.split("_", 1)[1] for b in bad)
            out.append((kind, Finding(None, f"systematic small deviation in the update (step size, decay, "
                                      f"clipping, ε …): f and the gradients are exact, the {kind} trajectory of "
                                      f"{names} drifts (by < 10 % of its displacement)")))
    if state is not None:
        out.append(("trainer", state))
    if "trainer_step_k" in by and not by["trainer_step_k"].passed and all(by[b].passed for b in TRAINER_BLOCKS[:4]):
        out.append(("trainer", Finding(None, f"trainer.step({st.steps}) is not {st.steps} calls of "
                                       f"trainer.step(1)")))
    return out


def signature(st: _State, result: CaseResult, dtype: str):
    """The first common mistake outside the catalogue whose signature your numbers show (``signatures``)."""
    p0, X, y = st.inputs
    by = {b.block: b for b in result.blocks}
    return (nondeterministic(st.user.f, st.user.f_again)
            or (extra_layer(st.user.f, p0, X, dtype) if not by["f"].passed else None)
            or accumulation(st.user, st.ref, len(y), dtype)
            or label_smoothing(st.user, st.ref, p0, X, y, dtype))


def _float32_sized(fails: dict) -> bool:
    """Every failing block of f, the loss and the gradients is off by float32 rounding's size: above the float64
    tolerance, within float32's (some blocks may be exact: where the float32 step does not reach)."""
    off = {b: e for b, e in fails.items() if b in VALUE_BLOCKS and e > tolerance("float64", b)}
    return bool(off) and all(e <= tolerance("float32", b) for b, e in off.items())


def st_float64_outputs(st: _State) -> bool:
    """Your forward and grad returned float64 arrays (so whole-float32 arithmetic is not what happened)."""
    return bool(st.user.dtypes) and st.user.dtypes <= {"float64"}


def mixed_precision(st: _State, result: CaseResult) -> Finding:
    """float32-sized errors in float64 outputs: one float32 step inside float64 code; where, from the blocks."""
    f_off = any(b.block == "f" and not b.passed for b in result.blocks)
    where = ("f carries them, so the float32 step is in the forward (logits, softmax or values)" if f_off else
             "f is exact, so the float32 step is in the loss or the backward")
    return Finding("mixed_precision", f"float32 in one place of float64 code: your outputs are float64 but carry "
                   f"errors of float32 size (between the float64 and float32 tolerances); {where}: look for one "
                   f"cast (.float(), .to(torch.float32), softmax(..., dtype=torch.float32), an autocast region, a "
                   f"float32 buffer or constant, np.float32)")


def diagnose_case(r: CaseResult, s: _State, candidates, dtype: str, train_w_O: bool, loss_ok_elsewhere: bool,
                  progress=None):
    """Fill ``r.diagnosis`` (names explaining every failing part), ``r.findings`` and ``r.overflow``; return
    {name: set of parts it explains} for the ranking."""
    parts = failing_parts(r)
    ov = overflow(s.user, s.ref, s.inputs, dtype, loss_ok_elsewhere,
                  *(() if s.setting is None else (lambda p, X: s.setting.logits(p, X, s.case.spec),
                                                  s.setting.logit_text)))
    if ov is not None:
        r.overflow = ov.text
        r.diagnosis = [ov.name]
        return {ov.name: parts}
    fails = {b.block: b.error for b in r.blocks}
    explained = {}
    for m in candidates:
        got = parts_matched(m, s, dtype, train_w_O, fails, parts, progress)
        if got:
            explained[m.name] = got
    first = s.setting is None or s.setting.first_setting_checks     # written for the first setting's model
    findings = [("values", f) for f in value_findings(s, r, dtype)] + \
        (update_findings(s, r, dtype, train_w_O) if first else [])
    for part, f in findings:
        if f.name is not None and part in parts:
            explained[f.name] = explained.get(f.name, set()) | {part}
    if not explained and first:
        sig = signature(s, r, dtype)
        if sig is not None:                         # it says more than the factors of the blocks
            findings = [("values", Finding(sig.name, sig.text))] + [f for f in findings if f[0] != "values"]
            explained[sig.name] = set(parts)
    if not explained and dtype == "float64" and st_float64_outputs(s) and _float32_sized(fails):
        findings.insert(0, ("values", mixed_precision(s, r)))
        explained["mixed_precision"] = set(parts)
    r.findings = [f.text for _, f in findings]
    r.diagnosis = [n for n, got in explained.items() if got == parts]
    return {n: got for n, got in explained.items() if got}
