"""Optional: our hand-derived gradients against PyTorch autograd (float64). Skips cleanly without torch."""
import pytest

torch = pytest.importorskip("torch")

from refvit import Params, loss_and_grads  # noqa: E402
from refvit.gradcheck import rel_error  # noqa: E402

from .problems import REGIMES  # noqa: E402


def torch_loss(W_Q, W_K, W_V, w_O, X, y):
    """The model of docs/math.md (2.7), (3.3) in torch: softmax over keys, mean over queries, logistic loss."""
    Z = X @ W_Q @ W_K.T @ X.transpose(1, 2)            # (n, M, M) x_lᵀ W_Q W_Kᵀ x_j
    S = torch.softmax(Z, dim=-1)
    v = (X @ W_V @ w_O).unsqueeze(-1)                   # (n, M, 1) value scores
    f = (S @ v).squeeze(-1).mean(dim=1)                 # (1/M) Σ_l Σ_j S_lj v_j
    return torch.nn.functional.softplus(-y * f).mean()  # log(1 + e^{-y f})


@pytest.mark.parametrize("regime", list(REGIMES))
def test_gradients_match_torch_autograd(regime):
    params, X, y = REGIMES[regime]()
    tp = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in params]
    loss = torch_loss(*tp, torch.tensor(X), torch.tensor(y))
    loss.backward()
    ours_loss, ours = loss_and_grads(params, X, y)
    # Same real numbers, different summation order: float64 rounding ~1e-15; 1e-12 leaves room for conditioning.
    assert abs(ours_loss - loss.item()) <= 1e-12 * max(1.0, abs(ours_loss))
    for name, a, t in zip(Params._fields, ours, tp):
        assert rel_error(a, t.grad.numpy()) <= 1e-12, name
