"""Optional: the PyTorch implementation of the second setting in refvit/adapters/ passes every case of the checker
(forward, gradients, GD and SignGD steps, and its trainer for GD, SignGD and Adam), and docs/crosscheck.md shows
it verbatim. Skips without torch (the documentation test always runs)."""
from pathlib import Path

import pytest

from refvit.crosscheck import crosscheck
from refvit.crosscheck.li_cases import LI_CASE_GROUPS

from .test_examples import fenced_blocks

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = ROOT / "refvit" / "adapters" / "torch_li_adapter.py"


@pytest.fixture
def torch_li(request):
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)           # tiny problems: thread hand-offs cost more than they save
    from refvit.adapters import torch_li_adapter
    yield torch_li_adapter
    torch.set_num_threads(n)


def test_torch_li_adapter_passes_every_case(torch_li):
    ad = torch_li
    report = crosscheck(ad.forward, ad.grad, ad.step, trainer=ad.make_trainer, setting="li2025", verbose=False)
    assert report.passed and report.status == 0, report.format()
    assert {c.name for c in report.cases} == {s.name for s in LI_CASE_GROUPS["all"]}


def test_torch_li_adapter_passes_through_refvit_testing(torch_li):
    from refvit.testing import assert_matches_reference
    ad = torch_li
    assert assert_matches_reference(ad.forward, ad.grad, ad.step, trainer=ad.make_trainer, setting="li2025",
                                    cases=["signgd_sparse", "adam_mean", "large_margin"]).passed


def test_doc_shows_the_li_adapter_verbatim():
    text = ADAPTER.read_text(encoding="utf-8")
    header = "# refvit/adapters/torch_li_adapter.py\n"
    assert text.startswith(header)
    shown = [b for b in fenced_blocks((ROOT / "docs" / "crosscheck.md").read_text(encoding="utf-8"))
             if b.startswith(header)]
    assert shown and all(b == text for b in shown), "copy refvit/adapters/torch_li_adapter.py into docs/crosscheck.md"
