# refvit/adapters/torch_adapter.py
r"""A PyTorch implementation of the model, wrapped for ``refvit.crosscheck``. Copy this file and put your module in
place of ``ViT``; torch is not a dependency of refvit, so install it yourself.

The module mirrors the authors' script (docs/math.md §2, §3): ``nn.Linear(d, ·, bias=False)`` layers, so W = weightᵀ,
softmax over keys without 1/√d_h, the mean over the M queries, the loss mean log(1 + e^{−y f}) written as
``softplus(−y f)`` and ``torch.optim.SGD`` with the head frozen by ``requires_grad_(False)``. The parameters keep the
dtype they arrive in, so the same code is checked in float64 and in float32.

``nn.SoftMarginLoss`` computes the same loss literally: correct at ordinary scales, but inf (and NaN gradients) once
y f < −709, which the checker's robustness case reaches (exit status 3: correct but not robust).

From the shell (exit status 0 = pass, 1 = incorrect, 3 = correct but not robust):

    refvit crosscheck refvit/adapters/torch_adapter.py:forward --grad refvit/adapters/torch_adapter.py:grad \
        --step refvit/adapters/torch_adapter.py:gd_step [--dtype float32] [--json report.json]
    refvit crosscheck refvit/adapters/torch_adapter.py:forward --trainer refvit/adapters/torch_adapter.py:make_trainer

From Python:

    from refvit.crosscheck import crosscheck
    report = crosscheck(forward, grad, gd_step)                    # or dtype="float32"
    report = crosscheck(forward, grad, lambda *a: gd_step(*a, train_w_O=True), train_w_O=True)   # head trained
    report = crosscheck(forward, grad, trainer=make_trainer)       # your own training loop, optimizer kept

These problems are tiny: ``torch.set_num_threads(1)`` avoids thread hand-offs that can make one step 100× slower.
"""
import torch
import torch.nn.functional as F
from torch import nn


class ViT(nn.Module):
    def __init__(self, d, d_h, d_v):
        super().__init__()
        self.q = nn.Linear(d, d_h, bias=False)
        self.k = nn.Linear(d, d_h, bias=False)
        self.v = nn.Linear(d, d_v, bias=False)
        self.fc = nn.Linear(d_v, 1, bias=False)

    def forward(self, X):                                    # X: (n, M, d)
        S = torch.softmax(self.q(X) @ self.k(X).transpose(1, 2), dim=-1)   # (n, M, M), over keys
        return self.fc(S @ self.v(X)).squeeze(-1).mean(dim=1)           # (n,), mean over the M queries


def _model(W_Q, W_K, W_V, w_O):
    """A ViT holding the given numpy parameters (dtype follows them: float64 or float32)."""
    d, d_h = W_Q.shape
    m = ViT(d, d_h, W_V.shape[1]).to(torch.from_numpy(W_Q).dtype)
    with torch.no_grad():
        for layer, W in ((m.q, W_Q), (m.k, W_K), (m.v, W_V), (m.fc, w_O[:, None])):
            layer.weight.copy_(torch.from_numpy(W.T))    # nn.Linear stores Wᵀ
    return m


def loss_fn(f, y):
    """Mean logistic loss log(1 + e^{−y f}) as softplus, finite at every margin (SoftMarginLoss overflows)."""
    return F.softplus(-y * f).mean()


def _params(m):
    return tuple(layer.weight.detach().numpy().T.copy() for layer in (m.q, m.k, m.v)) + \
        (m.fc.weight.detach().numpy()[0].copy(),)


def forward(W_Q, W_K, W_V, w_O, X):
    with torch.no_grad():
        return _model(W_Q, W_K, W_V, w_O)(torch.from_numpy(X)).numpy()


def grad(W_Q, W_K, W_V, w_O, X, y):
    m = _model(W_Q, W_K, W_V, w_O)
    loss = loss_fn(m(torch.from_numpy(X)), torch.from_numpy(y))
    loss.backward()
    g = [layer.weight.grad.numpy() for layer in (m.q, m.k, m.v, m.fc)]
    return loss.item(), g[0].T, g[1].T, g[2].T, g[3][0]


def gd_step(W_Q, W_K, W_V, w_O, X, y, lr, train_w_O=False):
    m = _model(W_Q, W_K, W_V, w_O)
    m.fc.requires_grad_(train_w_O)                      # the authors freeze the head
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr)
    opt.zero_grad()
    loss_fn(m(torch.from_numpy(X)), torch.from_numpy(y)).backward()
    opt.step()
    return _params(m)


class Trainer:
    """The trainer protocol: created once, ``step(k)`` runs k GD steps with one optimizer kept across calls,
    ``params()`` reads (W_Q, W_K, W_V, w_O) back."""

    def __init__(self, W_Q, W_K, W_V, w_O, X, y, lr, train_w_O=False):
        self.m = _model(W_Q, W_K, W_V, w_O)
        self.m.fc.requires_grad_(train_w_O)
        self.opt = torch.optim.SGD([p for p in self.m.parameters() if p.requires_grad], lr=lr)
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)

    def step(self, k):
        for _ in range(k):
            self.opt.zero_grad()
            loss_fn(self.m(self.X), self.y).backward()
            self.opt.step()

    def params(self):
        return _params(self.m)


def make_trainer(W_Q, W_K, W_V, w_O, X, y, lr):
    return Trainer(W_Q, W_K, W_V, w_O, X, y, lr)
