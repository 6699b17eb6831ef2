"""The §13 audit family (refvit.audit.checks_li): it passes on the current code, its rows name real equations of §13,
and a deliberate break of one line of the second setting's backward turns red exactly the rows built on that line.

The family is run alone here (a few seconds); the first setting's families cannot see a break of refvit.li2025,
because none of their modules imports it (checked below on the import graph).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import refvit.li2025.formulas as li_formulas
import refvit.li2025.model as li_model
from refvit.audit.checks_li import check_li

from .test_structure import graph

MATH = Path(__file__).resolve().parents[1] / "docs" / "math.md"
TAGS = set(re.findall(r"\\tag\{(13\.[0-9]+)\}", MATH.read_text(encoding="utf-8")))

# Rows built on the query/key path dQ, dK of the backward.
LOGIT_FAMILY = {"13.17", "13.18", "13.19", "13.20", "13.22", "13.23", "13.24", "13.25", "13.26", "13.30"}
# Rows built on the value path du of the backward.
VALUE_FAMILY = {"13.14", "13.15", "13.21", "13.24", "13.26", "13.30"}
# Rows built on the loss cotangent g of loss_grads_cache.
LOSS_FAMILY = {"13.13", "13.21", "13.22", "13.23", "13.24", "13.26"}
# Equations that state an optimizer's update rule only: the trainer implements them, audited in docs/math.md §6.
TRAINER_ONLY = {"13.27", "13.28", "13.29"}


def _failing() -> set:
    return {r.eq for r in check_li(None) if not r.ok}


def test_the_family_passes_and_covers_section_13():
    rows = check_li(None)
    bad = [(r.eq, r.statement, r.worst, r.tol) for r in rows if not r.ok]
    assert not bad, bad
    eqs = {r.eq for r in rows}
    assert eqs <= TAGS, eqs - TAGS
    assert TAGS - eqs <= TRAINER_ONLY, f"equations of §13 without a row: {sorted(TAGS - eqs - TRAINER_ONLY)}"
    for r in rows:
        assert np.isfinite(r.worst) and r.tol_reason and r.code and r.check


def test_first_setting_checks_do_not_import_the_second_setting():
    g = graph()
    for name in ("refvit.audit.checks_grad", "refvit.audit.checks_model", "refvit.audit.checks_span",
                 "refvit.audit.checks_structure", "refvit.audit.core"):
        assert not {m for m in g[name] if m.startswith("refvit.li2025")}, name


def _broken_attention_backward(kind):
    """``attention_backward`` with one mistake: "sign" (dZ negated), "transpose" (dK = λ dZ Q), "c_L" (du without
    c_L: invisible for c_L = 1, so the family's instances must include "mean")."""
    def attention_backward(df, cache, c, lam):
        Q, K, u, _, S = cache
        du = df[:, None] * (1.0 if kind == "c_L" else c) * S.sum(axis=1)
        dS = np.broadcast_to((df[:, None] * c * u)[:, None, :], S.shape)
        dZ = S * (dS - (S * dS).sum(axis=-1, keepdims=True))
        if kind == "sign":
            dZ = -dZ
        dK = lam * ((dZ if kind == "transpose" else dZ.transpose(0, 2, 1)) @ Q)
        return lam * (dZ @ K), dK, du
    return attention_backward


@pytest.mark.parametrize("kind,family,must", [
    ("sign", LOGIT_FAMILY, {"13.17", "13.18", "13.19", "13.20", "13.22", "13.23", "13.25"}),
    ("transpose", LOGIT_FAMILY, {"13.18", "13.19", "13.23"}),
    ("c_L", VALUE_FAMILY, {"13.14", "13.15", "13.21"}),
])
def test_a_break_of_the_attention_backward_turns_only_its_rows_red(monkeypatch, kind, family, must):
    monkeypatch.setattr(li_model, "attention_backward", _broken_attention_backward(kind))
    failing = _failing()
    assert failing <= family, f"break {kind!r} also failed {sorted(failing - family)}"
    assert must <= failing, f"break {kind!r} missed {sorted(must - failing)}"


def test_a_break_of_the_value_rows_is_seen_on_the_value_rows(monkeypatch):
    """dW_V without the 1/m_v of (13.15): the value rows, and nothing of the query/key path."""
    orig = li_model.backward

    def backward(df, cache, X, cfg):
        g = orig(df, cache, X, cfg)
        return g._replace(W_V=g.W_V * cfg.m_v)
    monkeypatch.setattr(li_model, "backward", backward)
    failing = _failing()
    assert failing <= VALUE_FAMILY | {"13.13"}, sorted(failing - VALUE_FAMILY)
    assert {"13.15", "13.21"} <= failing


def test_a_break_of_the_loss_cotangent_is_seen_on_the_loss_rows(monkeypatch):
    """g without its 1/n: the gradients of L_S are wrong, the backward of a given cotangent is not."""
    orig = li_model.backward
    monkeypatch.setattr(li_model, "loss_grads_cache", _loss_grads_cache_without_mean(orig))
    failing = _failing()
    assert failing <= LOSS_FAMILY, sorted(failing - LOSS_FAMILY)
    assert {"13.13", "13.21", "13.22", "13.23"} <= failing


def _loss_grads_cache_without_mean(backward):
    from refvit.primitives import Evaluation, logistic_loss_derivative, mean_loss

    def loss_grads_cache(params, X, y, cfg):
        f, cache = li_model.forward_cache(params, X, cfg)
        g = logistic_loss_derivative(y * f) * y                       # mistake: no / n
        return Evaluation(mean_loss(f, y), backward(g, cache, X, cfg), f, cache)
    return loss_grads_cache


def test_a_break_in_the_per_row_sums_is_seen_there_only(monkeypatch):
    orig = li_formulas.gradients

    def gradients(params, X, y, cfg):
        g = orig(params, X, y, cfg)
        return g._replace(W_K=g.W_K * cfg.logit_scale ** 2)            # a λ too many in (13.23)
    monkeypatch.setattr(li_formulas, "gradients", gradients)
    assert _failing() == {"13.23"}
