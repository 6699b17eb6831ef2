"""The PyTorch adapter refvit/adapters/torch_adapter.py through refvit.crosscheck: an autograd implementation passes,
and realistic PyTorch mistakes are named. Skipped cleanly when torch is not installed (torch is not a refvit
dependency)."""
import pytest

torch = pytest.importorskip("torch")

import math  # noqa: E402

import numpy as np  # noqa: E402

from refvit import crosscheck as cc  # noqa: E402

from .test_examples import load_example  # noqa: E402

ta = load_example("torch_adapter", "refvit/adapters")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These problems are tiny: with two intra-op threads on a busy 2-core machine one GD step took 0.16 s instead
    of 1 ms (thread hand-offs), so run single-threaded and restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("dtype, cases", [
    ("float64", "small"),
    ("float32", "small"),
    pytest.param("float64", "authors", marks=pytest.mark.slow),   # the authors' widths: seconds per case
    pytest.param("float32", "authors", marks=pytest.mark.slow),
])
def test_torch_autograd_passes(dtype, cases):
    report = cc.crosscheck(ta.forward, ta.grad, ta.gd_step, dtype=dtype, cases=cases, verbose=False)
    assert report.passed, report.format()


def test_torch_with_trained_head():
    def step(*args):
        return ta.gd_step(*args, train_w_O=True)
    assert cc.crosscheck(ta.forward, ta.grad, step, train_w_O=True, cases="small", verbose=False).passed
    report = cc.crosscheck(ta.forward, ta.grad, step, cases="small", verbose=False)   # checker expects frozen
    assert report.diagnosis == ["w_O_trained"], report.format()


class SoftmaxOverQueries(ta.ViT):
    def forward(self, X):
        S = torch.softmax(self.q(X) @ self.k(X).transpose(1, 2), dim=1)     # dim=1: the queries
        return self.fc(S @ self.v(X)).squeeze(-1).mean(dim=1)


class ScaledLogits(ta.ViT):
    def forward(self, X):
        Z = self.q(X) @ self.k(X).transpose(1, 2) / math.sqrt(self.q.out_features)
        return self.fc(torch.softmax(Z, dim=-1) @ self.v(X)).squeeze(-1).mean(dim=1)


class SummedQueries(ta.ViT):
    def forward(self, X):
        S = torch.softmax(self.q(X) @ self.k(X).transpose(1, 2), dim=-1)
        return self.fc(S @ self.v(X)).squeeze(-1).sum(dim=1)


# softmax over the queries gives exactly the numbers of the mean over the keys (f = mean value score), so an
# honest diagnosis names both
@pytest.mark.parametrize("module, names", [(SoftmaxOverQueries, ["softmax_over_queries", "mean_over_keys"]),
                                           (ScaledLogits, ["sqrt_dh_temperature"]),
                                           (SummedQueries, ["missing_1_over_M"])])
def test_realistic_torch_mistakes_are_named(monkeypatch, module, names):
    monkeypatch.setattr(ta, "ViT", module)
    report = cc.crosscheck(ta.forward, ta.grad, ta.gd_step, cases="small", verbose=False)
    assert report.diagnosis == names, report.format()


def test_float32_torch_called_in_float64_mode_is_named():
    f32 = lambda args: [a.astype(np.float32) if isinstance(a, np.ndarray) else a for a in args]  # noqa: E731

    def fwd(*args):
        return ta.forward(*f32(args))

    def grad(*args):
        return ta.grad(*f32(args))

    def step(*args):
        return ta.gd_step(*f32(args))
    report = cc.crosscheck(fwd, grad, step, dtype="float64", cases="small", verbose=False)
    assert report.diagnosis == ["float32_accumulation"], report.format()
