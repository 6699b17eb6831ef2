"""Paper-form gradients (PAPER §4 sums, refvit.formulas) against the chain-rule backward (refvit.model).

Tolerance 1e-12 relative: the two are the same real numbers summed in different orders; float64 rounding of
sums over a few hundred O(1) terms stays below ~1e-14 relative, and any algebraic slip is O(1e-2) or larger.
"""
import numpy as np
from hypothesis import given

from refvit import Params, formulas, loss_and_grads
from refvit.gradcheck import rel_error

from .strategies import problems, summand_scale
from .test_gradcheck import REGIMES

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


def test_paper_form_detects_a_missing_average():
    """The comparison can fail: the chain rule with a dropped 1/M on the QK path differs from the paper form."""
    params, X, y = REGIMES["O1_logits"]()
    _, chain = loss_and_grads(params, X, y)
    paper = formulas.gradients(params, X, y)
    M = X.shape[1]
    assert rel_error(chain.W_Q * M, paper.W_Q) > 0.5
