"""Optional: the second setting's hand-derived gradients against PyTorch autograd (float64). Skips without torch.

The torch model is written here from docs/math.md (13.6)–(13.12), not translated from refvit.li2025.model.
"""
import pytest

torch = pytest.importorskip("torch")

from refvit.gradcheck import rel_error  # noqa: E402
from refvit.li2025 import LiModelConfig, LiParams, loss_and_grads  # noqa: E402

from .li_problems import REGIMES, problem  # noqa: E402


def torch_loss(W_Q, W_K, W_V, X, y, c_L: float, lam: float):
    """L_S of (math 13.12) for X (n, L, d): scores a_lm = Σ_s ⟨w_{Q,s}, x_l⟩⟨w_{K,s}, x_m⟩, softmax over keys m,
    v = mean of the +1 value rows − mean of the −1 rows, f = c_L Σ_l Σ_m S_lm ⟨v, x_m⟩."""
    a = torch.einsum("nls,nms->nlm", X @ W_Q.T, X @ W_K.T)       # (n, L, L)
    S = torch.softmax(lam * a, dim=-1)
    v = W_V[0].mean(dim=0) - W_V[1].mean(dim=0)                 # (d,)
    f = c_L * torch.einsum("nlm,nm->n", S, X @ v)
    return torch.nn.functional.softplus(-y * f).mean()          # log(1 + e^{−y f})


def _compare(params, X, y, cfg):
    tp = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in params]
    c_L = {"sum": 1.0, "mean": 0.5}[cfg.c_L]                     # (math 13.9) for L = 2, read from the switch
    loss = torch_loss(*tp, torch.tensor(X), torch.tensor(y), c_L, cfg.logit_scale)
    loss.backward()
    ours_loss, ours = loss_and_grads(params, X, y, cfg)
    # Same real numbers, different summation order: float64 rounding ~1e-15; 1e-12 leaves room for conditioning.
    assert abs(ours_loss - loss.item()) <= 1e-12 * max(1.0, abs(ours_loss))
    for name, a, t in zip(LiParams._fields, ours, tp):
        err = rel_error(a, t.grad.numpy())
        assert err <= 1e-12, f"{name}: rel error {err:.2e}"


@pytest.mark.parametrize("regime", list(REGIMES))
def test_gradients_match_torch_autograd(regime):
    _compare(*REGIMES[regime]())


@pytest.mark.parametrize("c_L,lam", [("sum", 1.0), ("mean", 0.7), ("sum", 2.5)])
def test_gradients_match_torch_autograd_across_switches(c_L, lam):
    _compare(*problem(LiModelConfig(m_k=4, m_v=3, sigma0=0.5, c_L=c_L, logit_scale=lam), seed=5))

