"""The adapters in refvit/adapters/ are the files users copy (and import, once refvit is installed): each passes refvit.crosscheck (float64 and float32), its
documented command line works, and docs/crosscheck.md shows each one verbatim. The framework tests skip cleanly
when torch / jax is not installed (neither is a refvit dependency); the documentation test always runs."""
import importlib.util
import re
from pathlib import Path

import pytest

from refvit import cli
from refvit.crosscheck import crosscheck, select_cases

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"torch": ROOT / "refvit" / "adapters" / "torch_adapter.py",
            "jax": ROOT / "refvit" / "adapters" / "jax_adapter.py"}
DOC = ROOT / "docs" / "crosscheck.md"


def load_example(name: str, folder: str = "examples"):
    """The module of <folder>/<name>.py, loaded from its file (examples/ is not a package)."""
    path = ROOT / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{folder.replace('/', '_')}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fenced_blocks(text: str) -> list[str]:
    """The contents of the ``` fenced blocks of a Markdown text, each up to and including its last newline."""
    return re.findall(r"^```[^\n]*\n(.*?)^```[ \t]*$", text, flags=re.S | re.M)


@pytest.fixture
def one_torch_thread():
    """Single-threaded torch for these tiny problems (thread hand-offs on a busy machine cost 100× per step)."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def adapter(framework: str, request):
    """Skip without the framework; else the adapter module (torch single-threaded)."""
    pytest.importorskip(framework)
    if framework == "torch":
        request.getfixturevalue("one_torch_thread")
    return load_example(EXAMPLES[framework].stem, "refvit/adapters")


@pytest.mark.parametrize("cases", ["quick", pytest.param("authors", marks=pytest.mark.slow)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("framework", sorted(EXAMPLES))
def test_adapter_passes_every_case(framework, dtype, cases, request):
    # every case: correctness and robustness ("quick" holds large_margin, where a literal log(1 + e^{−y f})
    # overflows); the authors' widths take seconds per case, hence the slow marker
    ad = adapter(framework, request)
    report = crosscheck(ad.forward, ad.grad, ad.gd_step, dtype=dtype, cases=cases, verbose=False)
    assert report.passed and report.status == 0, report.format()
    n = len(select_cases(cases))
    assert len(report.rows()) == n * 10          # every block of every case was checked, none left out


def test_torch_trainer_passes_every_quick_case(request):
    ad = adapter("torch", request)
    report = crosscheck(ad.forward, ad.grad, trainer=ad.make_trainer, cases="quick", verbose=False)
    assert report.passed, report.format()


@pytest.mark.parametrize("framework", sorted(EXAMPLES))
def test_adapter_docstring_command_works(framework, request, monkeypatch, capsys):
    ad = adapter(framework, request)
    rel = EXAMPLES[framework].relative_to(ROOT).as_posix()
    doc = " ".join(ad.__doc__.replace("\\\n", " ").split())
    command = f"refvit crosscheck {rel}:forward --grad {rel}:grad --step {rel}:gd_step"
    assert command in doc, "the docstring must show how to run this file"
    monkeypatch.chdir(ROOT)
    assert cli.main(command.split()[1:] + ["--cases", "small", "large_margin"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_doc_shows_each_adapter_verbatim():
    blocks = fenced_blocks(DOC.read_text(encoding="utf-8"))
    for framework, path in EXAMPLES.items():
        header = f"# refvit/adapters/{path.name}\n"
        text = path.read_text(encoding="utf-8")
        assert text.startswith(header), f"{path.name} must start with the line {header!r}"
        shown = [b for b in blocks if b.startswith(header)]
        assert shown, f"docs/crosscheck.md has no fenced block starting with {header!r}"
        for b in shown:
            assert b == text, f"a block of docs/crosscheck.md differs from {path.name}: copy the file into it again"


def test_packaged_torch_adapter_passes_through_refvit_testing(request):
    pytest.importorskip("torch")
    request.getfixturevalue("one_torch_thread")
    from refvit.adapters import torch_adapter
    from refvit.testing import assert_matches_reference
    assert assert_matches_reference(torch_adapter.forward, torch_adapter.grad, torch_adapter.gd_step,
                                    cases=["o1_logits", "large_margin"]).passed
