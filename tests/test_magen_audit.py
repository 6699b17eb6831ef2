"""The §16 audit family (refvit.audit.checks_magen): it passes on the current code, its rows name real equations of
§16 and cover every one, and a deliberate break of one line of the third setting's backward turns red exactly the
rows built on that line.

The family is run alone here (about a second); the other settings' families cannot see a break of
refvit.magen2025, because none of their modules imports it (checked below on the import graph).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import refvit.magen2025.formulas as mg_formulas
import refvit.magen2025.model as mg_model
from refvit import audit
from refvit.audit.checks_magen import check_magen

from .test_structure import graph

MATH = Path(__file__).resolve().parents[1] / "docs" / "math.md"
TAGS = set(re.findall(r"\\tag\{(16\.[0-9]+)\}", MATH.read_text(encoding="utf-8")))

# Rows built on the score path dZ → dp of the backward (and the query-form chain on top of it).
SCORE_FAMILY = {"16.15", "16.16", "16.17", "16.19", "16.20", "16.23", "16.24"}
# Rows built on the value path du → dv.
VALUE_FAMILY = {"16.13", "16.14", "16.18", "16.20", "16.21", "16.24"}
# Rows built on the query-form chain (16.17) only.
QUERY_FAMILY = {"16.17", "16.20"}


def _failing() -> set:
    return {r.eq for r in check_magen(None) if not r.ok}


def test_the_family_passes_and_covers_section_16():
    rows = check_magen(None)
    bad = [(r.eq, r.statement, r.worst, r.tol) for r in rows if not r.ok]
    assert not bad, bad
    eqs = {r.eq for r in rows}
    assert eqs == TAGS, f"rows without an equation: {sorted(eqs - TAGS)}; equations without a row: {sorted(TAGS - eqs)}"
    for r in rows:
        assert np.isfinite(r.worst) and r.tol_reason and r.code and r.check


def test_the_family_is_registered_and_independent_of_the_other_settings():
    assert check_magen in [fn for _, fn in audit.FAMILIES]
    g = graph()
    for name in ("refvit.audit.checks_grad", "refvit.audit.checks_model", "refvit.audit.checks_span",
                 "refvit.audit.checks_structure", "refvit.audit.core", "refvit.audit.checks_li",
                 "refvit.audit.li_core"):
        assert not {m for m in g[name] if m.startswith("refvit.magen2025")}, name
    for name in [m for m in g if m.startswith("refvit.magen2025")]:
        assert not {m for m in g[name] if m.startswith(("refvit.li2025", "refvit.jiang2024", "refvit.audit"))}, name


def _broken_attention_backward(kind):
    """``attention_backward`` with one mistake: "sign" (dZ negated), "no off-diagonal" (dZ = s ⊙ ds), "du"
    (du from the other token's attention)."""
    def attention_backward(df, cache, X):
        S, u = cache.S, cache.u
        du = df[:, None] * (S[:, ::-1] if kind == "du" else S)
        dS = df[:, None] * u
        dZ = S * dS if kind == "no off-diagonal" else S * (dS - (S * dS).sum(axis=-1, keepdims=True))
        if kind == "sign":
            dZ = -dZ
        return np.einsum("nm,nmd->d", dZ, X), np.einsum("nm,nmd->d", du, X)
    return attention_backward


@pytest.mark.parametrize("kind,family,must", [
    ("sign", SCORE_FAMILY, {"16.15", "16.16", "16.17", "16.19", "16.20", "16.23", "16.24"}),
    ("no off-diagonal", SCORE_FAMILY, {"16.15", "16.16", "16.19", "16.23"}),
    ("du", VALUE_FAMILY, {"16.13", "16.14", "16.18"}),
])
def test_a_break_of_the_attention_backward_turns_only_its_rows_red(monkeypatch, kind, family, must):
    monkeypatch.setattr(mg_model, "attention_backward", _broken_attention_backward(kind))
    failing = _failing()
    assert failing <= family, f"break {kind!r} also failed {sorted(failing - family)}"
    assert must <= failing, f"break {kind!r} missed {sorted(must - failing)}"


def test_a_break_of_the_query_chain_is_seen_on_its_rows_only(monkeypatch):
    """dq = W_Kᵀ da instead of W_Qᵀ da in (16.17): the query-form rows, and nothing of the prompt form."""
    orig = mg_model.backward

    def backward(df, cache, X, params):
        g = orig(df, cache, X, params)
        if isinstance(params, mg_model.MagenQKParams):
            g = g._replace(q=params.W_K.T @ (params.W_K @ mg_model.attention_backward(df, cache, X)[0]))
        return g
    monkeypatch.setattr(mg_model, "backward", backward)
    failing = _failing()
    assert failing <= QUERY_FAMILY, sorted(failing - QUERY_FAMILY)
    assert {"16.17", "16.20"} <= failing


def test_a_break_of_the_loss_cotangent_is_seen_on_the_loss_rows(monkeypatch):
    """g without its 1/n: the gradients of L_S are wrong, the backward of a given cotangent is not."""
    from refvit.primitives import Evaluation, logistic_loss_derivative, mean_loss

    def loss_grads_cache(params, X, y):
        f, cache = mg_model.forward_cache(params, X)
        g = logistic_loss_derivative(y * f) * y                          # mistake: no / n
        return Evaluation(mean_loss(f, y), mg_model.backward(g, cache, X, params), f, cache)
    monkeypatch.setattr(mg_model, "loss_grads_cache", loss_grads_cache)
    failing = _failing()
    assert failing <= {"16.12", "16.18", "16.19", "16.20", "16.21", "16.23", "16.24"}, failing
    assert {"16.12", "16.18", "16.19", "16.20"} <= failing


def test_a_break_in_the_per_sample_sums_is_seen_there_only(monkeypatch):
    orig = mg_formulas.gradients

    def gradients(params, X, y, cfg):
        g = orig(params, X, y, cfg)
        return g._replace(v=g.v * X.shape[1])                             # a factor M too many in (16.18)
    monkeypatch.setattr(mg_formulas, "gradients", gradients)
    assert _failing() == {"16.18"}
