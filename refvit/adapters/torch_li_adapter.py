# refvit/adapters/torch_li_adapter.py
r"""A PyTorch implementation of the second setting's model (Li et al., docs/math.md §13), wrapped for
``refvit.crosscheck`` with ``setting="li2025"``. Copy this file and put your module in place of ``TwoTokenAttention``;
torch is not a dependency of refvit, so install it yourself.

The module follows docs/math.md (13.6)–(13.12): W_Q, W_K as ``nn.Linear(d, m_k, bias=False)`` (their weights are
the (m_k, d) matrices themselves), W_V a (2, m_v, d) parameter whose class difference of row means is the value
direction v, softmax over keys without temperature, c_L = 1 ("sum") or 1/L ("mean"), the loss
mean log(1 + e^{−y f}) as ``softplus(−y f)``. SignGD is written out (``torch.sign`` gives sgn 0 = 0), Adam is
``torch.optim.Adam`` with its defaults β = (0.9, 0.999), ε = 1e-8; only the trained blocks are handed to the
optimizer. float64 only in this setting.

From the shell (exit status 0 = pass, 1 = incorrect, 3 = correct but not robust):

    refvit crosscheck refvit/adapters/torch_li_adapter.py:forward --setting li2025 \
        --grad refvit/adapters/torch_li_adapter.py:grad --step refvit/adapters/torch_li_adapter.py:step \
        --trainer refvit/adapters/torch_li_adapter.py:make_trainer

From Python:

    from refvit.crosscheck import crosscheck
    report = crosscheck(forward, grad, step, trainer=make_trainer, setting="li2025")
"""
import torch
import torch.nn.functional as F
from torch import nn


class TwoTokenAttention(nn.Module):
    def __init__(self, d, m_k, m_v, c_L):
        super().__init__()
        self.q = nn.Linear(d, m_k, bias=False)
        self.k = nn.Linear(d, m_k, bias=False)
        self.W_V = nn.Parameter(torch.zeros(2, m_v, d, dtype=torch.float64))
        self.c_L = c_L

    def forward(self, X):                                          # X: (n, L, d)
        S = torch.softmax(self.q(X) @ self.k(X).transpose(1, 2), dim=-1)   # (n, L, L), over keys m
        v = self.W_V[0].mean(dim=0) - self.W_V[1].mean(dim=0)      # (d,) class difference of the row means
        c = 1.0 if self.c_L == "sum" else 1.0 / X.shape[1]
        return c * (S @ (X @ v)[..., None]).squeeze(-1).sum(dim=1)  # (n,) f = c_L Σ_l Σ_m S_lm ⟨v, x_m⟩


def _model(W_Q, W_K, W_V, c_L):
    m_k, d = W_Q.shape
    m = TwoTokenAttention(d, m_k, W_V.shape[1], c_L).to(torch.float64)
    with torch.no_grad():
        for p, a in ((m.q.weight, W_Q), (m.k.weight, W_K), (m.W_V, W_V)):
            p.copy_(torch.from_numpy(a))
    return m


def _blocks(m):
    return {"W_Q": m.q.weight, "W_K": m.k.weight, "W_V": m.W_V}


def loss_fn(f, y):
    """Mean logistic loss log(1 + e^{−y f}) as softplus, finite at every margin."""
    return F.softplus(-y * f).mean()


def forward(W_Q, W_K, W_V, X, c_L):
    with torch.no_grad():
        return _model(W_Q, W_K, W_V, c_L)(torch.from_numpy(X)).numpy()


def grad(W_Q, W_K, W_V, X, y, c_L):
    m = _model(W_Q, W_K, W_V, c_L)
    loss = loss_fn(m(torch.from_numpy(X)), torch.from_numpy(y))
    loss.backward()
    return (loss.item(), *(p.grad.numpy() for p in _blocks(m).values()))


class Trainer:
    """The trainer protocol: ``step(k)`` runs k updates of the case's optimizer (GD, SignGD or Adam, its state
    kept across calls) on the trained blocks, ``params()`` reads (W_Q, W_K, W_V) back."""

    def __init__(self, W_Q, W_K, W_V, X, y, c_L, lr, optimizer, trained):
        self.m = _model(W_Q, W_K, W_V, c_L)
        self.X, self.y, self.lr, self.optimizer = torch.from_numpy(X), torch.from_numpy(y), lr, optimizer
        self.params_trained = [p for name, p in _blocks(self.m).items() if name in trained]
        for name, p in _blocks(self.m).items():
            p.requires_grad_(name in trained)
        self.opt = torch.optim.Adam(self.params_trained, lr=lr) if optimizer == "adam" else \
            torch.optim.SGD(self.params_trained, lr=lr)

    def step(self, k):
        for _ in range(k):
            self.opt.zero_grad()
            loss_fn(self.m(self.X), self.y).backward()
            if self.optimizer == "signgd":                        # sgn(g) in place of g, then θ − lr·sgn(g)
                for p in self.params_trained:
                    p.grad = torch.sign(p.grad)
            self.opt.step()

    def params(self):
        return tuple(p.detach().numpy().copy() for p in _blocks(self.m).values())


def make_trainer(W_Q, W_K, W_V, X, y, c_L, lr, optimizer, trained):
    return Trainer(W_Q, W_K, W_V, X, y, c_L, lr, optimizer, trained)


def step(W_Q, W_K, W_V, X, y, c_L, lr, optimizer, trained):
    """One GD or SignGD step (the checker asks no stateless step of Adam)."""
    tr = Trainer(W_Q, W_K, W_V, X, y, c_L, lr, optimizer, trained)
    tr.step(1)
    return tr.params()
