"""The equation audit (refvit.audit): it passes on the current code, its rows name real equations of docs/math.md,
deliberate breaks of one formula turn red exactly the rows of that formula's family, and the JSON is strict."""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from refvit import audit
from refvit.jiang2024 import formulas, model

MATH = Path(__file__).resolve().parents[1] / "docs" / "math.md"
TAGS = set(re.findall(r"\\tag\{([0-9]+\.[0-9]+)\}", MATH.read_text(encoding="utf-8")))

# Rows that depend on the logit path dQ, dK (the W_Q / W_K gradients and what is built on them). The breaks below
# patch model.attention_backward, which the dense trainer calls; the span trainer computes its backward from the
# logits down (model.logits_backward, on the numpy path the audit runs), so every row that compares a span-trained
# model with a dense-trained one sees the break: 8.6, 8.8 (trajectories), 8.9 (test outputs after training).
LOGIT_FAMILY = {"4.7", "4.8", "4.9", "4.10", "4.11", "4.12", "4.13", "4.17", "4.18", "5.5", "5.7", "5.8", "5.10",
                "7.14", "8.5", "8.6", "8.7", "8.8", "8.9"}
# Rows that depend on the value path dv (the W_V / w_O gradients and the value coefficients).
VALUE_FAMILY = {"4.2", "4.3", "4.4", "4.14", "4.15", "4.16", "5.5", "5.7", "5.9", "7.5", "7.6", "7.7", "7.9",
                "7.11", "7.12", "8.5", "8.6", "8.8", "8.9"}


@pytest.fixture(scope="module")
def report():
    return audit.run(progress=False)


def test_audit_passes_on_current_code(report):
    assert report.rows
    bad = [(r.eq, r.statement, r.worst, r.tol) for r in report.rows if not r.ok]
    assert report.passed, bad
    for r in report.rows:
        assert math.isfinite(r.worst) and r.worst <= r.tol, (r.eq, r.statement, r.worst, r.tol)
        assert r.tol_reason and r.code and r.check and r.statement


def test_rows_name_existing_equations(report):
    assert TAGS, "no \\tag{...} found in docs/math.md"
    unknown = {r.eq for r in report.rows} - TAGS
    assert not unknown, unknown


def test_every_gradient_equation_has_a_row(report):
    section4 = {t for t in TAGS if t.startswith("4.")}
    assert section4 - {r.eq for r in report.rows} == set()


def test_required_checks_present(report):
    eqs = {r.eq for r in report.rows}
    for eq in ("1.9", "2.7", "3.1", "3.2", "3.5", "5.1", "5.4", "5.6", "5.7", "5.8", "5.10", "7.2", "7.5", "7.14",
               "8.6", "8.7"):
        assert eq in eqs, eq
    checks = " ".join(r.code + " " + r.check for r in report.rows)
    assert "_kernels" in checks and "formulas" in checks and "FD" in checks and "recover" in checks


def test_json_is_strict_and_round_trips(report, tmp_path):
    d = report.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    path = tmp_path / "audit.json"
    audit.write_json(report, path)
    back = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert back == json.loads(json.dumps(d))
    assert back["passed"] is True and len(back["rows"]) == len(report.rows)


def test_non_finite_errors_become_strings():
    row = audit.Row("2.7", "s", "c", "k", math.inf, 1e-12, "r", False)
    rep = audit.Report(rows=[row, audit.Row("2.6", "s", "c", "k", math.nan, 0.0, "r", False)], seconds=math.nan)
    d = rep.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["rows"][0]["worst"] == "inf" and d["rows"][1]["worst"] == "nan" and d["seconds"] == "nan"
    assert not rep.passed
    assert "FAIL" in rep.format()


def test_format_is_an_aligned_table(report):
    text = report.format()
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["eq", "statement"] and "worst error" in lines[0] and "tolerance" in lines[0]
    col = lines[0].index("worst error")
    assert all(len(line) >= col for line in lines[2:-1])
    assert len(lines) == len(report.rows) + 3


def test_cli_exit_codes(tmp_path, monkeypatch, capsys):
    parser = argparse.ArgumentParser()
    audit.add_subcommand(parser.add_subparsers(dest="command", required=True))
    fake = audit.Report(rows=[audit.Row("2.7", "s", "c", "k", 0.0, 0.0, "r", True)], seconds=0.1)
    monkeypatch.setattr(audit, "run", lambda progress=True: fake)
    args = parser.parse_args(["audit", "--json", str(tmp_path / "a.json"), "--no-progress"])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "a.json").read_text())["passed"] is True
    fake.rows.append(audit.Row("2.6", "s", "c", "k", 1.0, 0.0, "r", False))
    assert args.func(args) == 1
    assert "FAIL" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# Deliberate breaks, one at a time
# ---------------------------------------------------------------------------------------------------------------

def _broken_attention_backward(kind: str):
    """``model.attention_backward`` with one mistake: "sign" (dZ negated), "1/M" (dv without 1/M), "transpose"
    (dK = dZ Q instead of dZᵀ Q)."""
    def attention_backward(df, S, v, Q, K):
        M = Q.shape[1]
        dv = df[:, None] * S.sum(axis=1) / (1 if kind == "1/M" else M)
        dS = np.broadcast_to((df[:, None] * v / M)[:, None, :], S.shape)
        dZ = S * (dS - (S * dS).sum(axis=-1, keepdims=True))
        if kind == "sign":
            dZ = -dZ
        dQ = dZ @ K
        dK = (dZ if kind == "transpose" else dZ.transpose(0, 2, 1)) @ Q
        return dQ, dK, dv
    return attention_backward


def _failing(monkeypatch, target, name, fn) -> set:
    monkeypatch.setattr(target, name, fn)
    rep = audit.run(progress=False)
    return {r.eq for r in rep.failed()}


@pytest.mark.parametrize("kind,family,must", [
    ("sign", LOGIT_FAMILY, {"4.7", "4.10", "4.11", "4.13", "4.17", "4.18"}),
    ("1/M", VALUE_FAMILY, {"4.2", "4.3", "4.4", "4.14", "4.15", "4.16"}),
    ("transpose", LOGIT_FAMILY, {"4.10", "4.11", "4.13", "4.18"}),
])
def test_break_turns_only_its_family_red(monkeypatch, kind, family, must):
    failing = _failing(monkeypatch, model, "attention_backward", _broken_attention_backward(kind))
    assert failing, f"break {kind!r} went unnoticed"
    assert failing <= family, f"break {kind!r} also failed {sorted(failing - family)}"
    assert must <= failing, f"break {kind!r} missed {sorted(must - failing)}"


def test_transpose_break_spares_the_query_gradient(monkeypatch):
    monkeypatch.setattr(model, "attention_backward", _broken_attention_backward("transpose"))
    rep = audit.run(progress=False)
    bad = {(r.eq, r.statement) for r in rep.failed()}
    assert ("4.11", "dW_K = Σ_i X_iᵀ dK_i") in bad
    assert ("4.11", "dW_Q = Σ_i X_iᵀ dQ_i") not in bad and ("4.17", "∇W_Q as per-token sums") not in bad


def test_break_in_paper_form_sums_is_seen_there_only(monkeypatch):
    orig = formulas.gradients

    def gradients(params, X, y):
        g = orig(params, X, y)
        return g._replace(W_Q=g.W_Q * X.shape[1])      # a missing 1/M in (4.17) only
    failing = _failing(monkeypatch, formulas, "gradients", gradients)
    assert failing == {"4.17"}


# --- the audit's own machinery, fed what it must refuse ---------------------------------------------------------

ROW = ("2.7", "statement", "code", "check")


@pytest.mark.parametrize("errors, tol, extra_ok, ok", [
    ([], 1e-11, True, False),                        # no instance ran: nothing was checked, so the claim fails
    ([0.0, math.nan], 1e-11, True, False),           # a NaN error is an error of inf
    ([0.0, math.inf], 1e-11, True, False),
    ([0.0, 1e-11], 1e-11, True, True),               # at the tolerance: holds
    ([1e-11 * (1 + 1e-9), 0.0], 1e-11, True, False),   # just above it, in any instance: fails
    ([0.0], 0.0, True, True),                        # an exact identity holds only at exactly 0
    ([5e-324], 0.0, True, False),
    ([0.0], 1e-11, False, False),                    # a side condition that fails fails the row
])
def test_a_row_holds_only_when_every_instance_is_within_its_tolerance(errors, tol, extra_ok, ok):
    from refvit.audit.core import _row
    row = _row(*ROW, errors, tol, "reason", extra_ok)
    assert row.ok is ok
    finite = [e for e in errors if math.isfinite(e)]
    assert row.worst == (max(finite) if finite and len(finite) == len(errors) else math.inf)
    report = audit.Report(rows=[_row(*ROW, [0.0], 1e-11, "reason"), row])
    assert report.passed is ok and report.failed() == ([] if ok else [row])


def test_the_error_of_two_outputs_is_inf_when_they_cannot_be_compared():
    from refvit.audit.core import err
    a = np.array([1.0, 2.0])
    assert err(a, a.copy()) == 0.0
    # max|a − b| / max(max|a|, max|b|) = 2e-6 / (2(1 + 1e-6)); 1e-8: the difference 2(1 + 1e-6) − 2 keeps ~1e-10
    # relative rounding, while the other scale (max|a| instead of the larger one) would be off by 1e-6
    assert err(a, a * (1 + 1e-6)) == pytest.approx(1e-6 / (1 + 1e-6), rel=1e-8)
    assert err(a, np.array([1.0, 2.0, 3.0])) == math.inf            # shapes differ
    for bad in (math.nan, math.inf, -math.inf):
        assert err(a, np.array([1.0, bad])) == math.inf and err(np.array([bad, 1.0]), a) == math.inf
