"""Optional: the third setting's hand-derived gradients against PyTorch autograd (float64). Skips without torch.

The torch model is written here from docs/math.md (16.6)–(16.11), not translated from refvit.magen2025.model.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from refvit.gradcheck import rel_error  # noqa: E402
from refvit.magen2025 import MagenDataConfig, MagenModelConfig, loss_and_grads  # noqa: E402

from .magen_problems import DATA, REGIMES, problem  # noqa: E402


def torch_loss(blocks, X, y, form: str):
    """L_S of (math 16.11) for X (n, M, d): prompt p (itself, or W_Kᵀ W_Q q), attention softmax over tokens of
    X p, output f = vᵀ Xᵀ softmax(X p)."""
    if form == "prompt":
        p, v = blocks
    else:
        W_Q, W_K, q, v = blocks
        p = W_K.T @ (W_Q @ q)                                    # (math 16.6)
    S = torch.softmax(X @ p, dim=-1)                             # (n, M)
    f = (S * (X @ v)).sum(dim=-1)                                # (n,)
    return torch.nn.functional.softplus(-y * f).mean()           # log(1 + e^{−y f})


def _compare(params, X, y, cfg):
    tp = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in params]
    loss = torch_loss(tp, torch.tensor(X), torch.tensor(y), cfg.form)
    loss.backward()
    ours_loss, ours = loss_and_grads(params, X, y, cfg)
    # Same real numbers, different summation order: float64 rounding ~1e-15; 1e-12 leaves room for conditioning.
    assert abs(ours_loss - loss.item()) <= 1e-12 * max(1.0, abs(ours_loss))
    for name, a, t in zip(params._fields, ours, tp):
        err = rel_error(a, t.grad.numpy())
        assert err <= 1e-12, f"{name}: rel error {err:.2e}"


@pytest.mark.parametrize("regime", list(REGIMES))
def test_gradients_match_torch_autograd(regime):
    _compare(*REGIMES[regime]())


@pytest.mark.parametrize("M,form", [(2, "prompt"), (4, "prompt"), (3, "query")])
def test_gradients_match_torch_autograd_at_default_dimension(M, form):
    """d = 2000 with random signals and O(1) scores: the oracle at the default token dimension."""
    cfg = MagenModelConfig(form=form, init="gaussian", sigma0=0.03 if form == "prompt" else 0.15, d_h=4)
    dc = MagenDataConfig(N=8, M=M, n_test=2, signals="random")
    params, X, y, _ = problem(cfg, dc, seed=6)
    _compare(params, X, y, cfg)


def test_the_oracle_sees_a_wrong_gradient():
    """The comparison fails on a gradient off by a factor on one block (the oracle is not vacuous)."""
    params, X, y, cfg = REGIMES["O1_scores"]()
    tp = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in params]
    torch_loss(tp, torch.tensor(X), torch.tensor(y), cfg.form).backward()
    _, ours = loss_and_grads(params, X, y, cfg)
    assert rel_error(ours.p * (1 + 1 / DATA.N), tp[0].grad.numpy()) > 1e-3
    assert np.abs(tp[0].grad.numpy()).max() > 1e-3                # p's gradient is not trivially zero here
