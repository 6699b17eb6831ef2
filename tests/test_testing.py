"""refvit.testing: the checker as one assertion in a user's pytest suite, failing with the same report and
diagnosis as ``refvit crosscheck``."""
import numpy as np
import pytest

from refvit import crosscheck as cc
from refvit.jiang2024.model import forward, loss_and_grads
from refvit.testing import CrosscheckFailure, assert_matches_reference


def fwd(W_Q, W_K, W_V, w_O, X):
    return forward((W_Q, W_K, W_V, w_O), X)


def grad(W_Q, W_K, W_V, w_O, X, y):
    loss, g = loss_and_grads((W_Q, W_K, W_V, w_O), X, y)
    return (loss, *g)


def naive_grad(W_Q, W_K, W_V, w_O, X, y):
    """A literal log(1 + e^{−y f}) loss: correct at ordinary scales, inf at large_margin."""
    loss, *g = grad(W_Q, W_K, W_V, w_O, X, y)
    with np.errstate(over="ignore"):
        return (float(np.mean(np.log1p(np.exp(-y * fwd(W_Q, W_K, W_V, w_O, X))))), *g)


def test_a_correct_implementation_passes_and_returns_the_report():
    report = assert_matches_reference(fwd, grad, cases="small")
    assert report.passed and len(report.cases) == 5


def test_a_mistake_fails_with_the_checkers_diagnosis():
    def doubled(*a):
        return tuple(2 * x for x in grad(*a))
    with pytest.raises(AssertionError) as info:
        assert_matches_reference(fwd, doubled, cases="small")
    assert isinstance(info.value, CrosscheckFailure)
    report = info.value.report
    assert str(info.value) == report.format()                      # the same text as the command line prints
    expected = cc.crosscheck(fwd, doubled, cases="small", verbose=False)
    assert report.diagnosis == expected.diagnosis and report.explanations == expected.explanations
    assert "Diagnosis" in str(info.value)


def test_robustness_is_required_unless_waived():
    with pytest.raises(CrosscheckFailure, match="your loss is inf at y·f"):
        assert_matches_reference(fwd, naive_grad, cases=["o1_logits", "large_margin"])
    report = assert_matches_reference(fwd, naive_grad, cases=["o1_logits", "large_margin"], robust=False)
    assert report.correct and not report.robust and report.status == 3
    with pytest.raises(ValueError, match="robust must be True or False"):
        assert_matches_reference(fwd, grad, robust="yes")
