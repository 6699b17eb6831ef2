"""Paper-form gradients (docs/math.md (4.15)–(4.18), refvit.jiang2024.formulas) against the chain-rule backward (refvit.jiang2024.model).

Tolerance 1e-12 relative: the two are the same real numbers summed in different orders; float64 rounding of
sums over a few hundred O(1) terms stays below ~1e-14 relative, and any algebraic slip is O(1e-2) or larger.
"""
import numpy as np
import pytest
from hypothesis import given

import refvit.jiang2024.model as model
from refvit import Params, loss_and_grads
from refvit.jiang2024 import formulas
from refvit.gradcheck import rel_error

from .strategies import problems, summand_scale
from .problems import REGIMES

TOL = 1e-12


def _compare(params, X, y):
    _, chain = loss_and_grads(params, X, y, backend="numpy")
    paper = formulas.gradients(params, X, y)
    for name, a, b in zip(Params._fields, chain, paper):
        err = rel_error(a, b)
        assert err <= TOL, f"{name}: chain rule vs paper form rel error {err:.2e}"


def test_paper_form_equals_chain_rule_in_each_regime():
    for make in REGIMES.values():
        _compare(*make())


@given(problems)
def test_paper_form_equals_chain_rule_on_random_problems(problem):
    params, X, y = problem
    _, chain = loss_and_grads(params, X, y, backend="numpy")
    paper = formulas.gradients(params, X, y)
    for name, a, b, sc in zip(Params._fields, chain, paper, summand_scale(params, X)):
        # 1e-13 per unit of summand magnitude: ε ≈ 2.2e-16 times a few hundred terms at most.
        assert np.abs(a - b).max() <= 1e-13 * sc, f"{name}: {np.abs(a - b).max():.2e} vs scale {sc:.2e}"


def test_the_comparison_catches_a_wrong_gradient_scale(monkeypatch):
    """The comparison can fail: a backward that drops the 1/M of ∂f/∂S (so ∇W_Q, ∇W_K come out M times too
    large) is rejected by the same ``_compare`` the tests above rely on."""
    def backward_without_mean(df, S, v, Q, K):
        dv = df[:, None] * S.sum(axis=1) / Q.shape[1]
        dS = np.broadcast_to((df[:, None] * v)[:, None, :], S.shape)          # mistake: no / M
        dZ = S * (dS - (S * dS).sum(axis=-1, keepdims=True))
        return dZ @ K, dZ.transpose(0, 2, 1) @ Q, dv

    monkeypatch.setattr(model, "attention_backward", backward_without_mean)
    with pytest.raises(AssertionError, match="W_Q: chain rule vs paper form"):
        _compare(*REGIMES["O1_logits"]())
