"""The checker inside your own test suite: one call in a pytest test that fails with the diagnosis of
``refvit crosscheck``.

    from refvit.testing import assert_matches_reference

    def test_my_vit_matches_refvit():
        assert_matches_reference(my_vit.forward, my_vit.grad, my_vit.step)

    def test_my_two_token_model_matches_refvit():             # the second setting (Li et al.)
        assert_matches_reference(my.forward, my.grad, my.step, trainer=my.make_trainer, setting="li2025")

The contracts of forward, grad, step and trainer are those of ``refvit.crosscheck`` (docs/crosscheck.md).
"""
from __future__ import annotations

from typing import Callable

from .crosscheck import DEFAULT_TIMEOUT, STEPS, Report, crosscheck


class CrosscheckFailure(AssertionError):
    """Your implementation differs from the reference; the message is the checker's report with its diagnosis,
    and ``report`` the ``refvit.crosscheck.Report`` itself."""

    def __init__(self, report: Report):
        super().__init__(report.format())
        self.report = report


def assert_matches_reference(forward_fn: Callable, grad_fn: Callable | None = None,
                             gd_step_fn: Callable | None = None, *, dtype: str = "float64",
                             trainer: Callable | None = None, train_w_O: bool = False, cases="quick",
                             robust: bool = True, steps: int = STEPS, timeout: float = DEFAULT_TIMEOUT,
                             setting: str = "jiang2024") -> Report:
    """Run ``refvit.crosscheck`` quietly and raise ``CrosscheckFailure`` (an AssertionError, so pytest reports it
    as a failed test) carrying the report and its diagnosis, unless your implementation passes.

    Parameters are those of ``refvit.crosscheck.crosscheck``, with ``cases`` "quick" by default (every case but
    the authors' two full-width settings, which take seconds each) and ``robust``: also require the robustness
    cases (extreme margins and logits) to pass; False accepts code that is correct at ordinary scales but
    overflows there (exit status 3 of ``refvit crosscheck``); ``setting``: "jiang2024" (the first setting) or
    "li2025" (the second, with its own contracts and cases).

    Returns
    -------
    Report, when the implementation passes.
    """
    if not isinstance(robust, bool):
        raise ValueError(f"robust must be True or False, got {robust!r}")
    report = crosscheck(forward_fn, grad_fn, gd_step_fn, dtype, trainer=trainer, train_w_O=train_w_O, cases=cases,
                        steps=steps, timeout=timeout, verbose=False, setting=setting)
    if not report.correct or (robust and not report.robust):
        raise CrosscheckFailure(report)
    return report
