"""Small PyTorch implementations of the model, each with one mistake a user makes, written here from the contracts
of docs/crosscheck.md (not from the checker's catalogue of mutants), for tests/test_crosscheck_v3.py.

``user(kind)`` returns (forward, grad, step, make_trainer) for one kind of implementation; ``"correct"`` is a
correct one with a stable loss, ``"soft_margin"`` the same with PyTorch's standard ``F.soft_margin_loss``.
Importing this module requires torch.
"""
import torch
import torch.nn.functional as F

KINDS = ("correct", "soft_margin", "causal_soft_margin", "causal", "f32_softmax", "layernorm", "residual",
         "label_smoothing", "dropout", "accumulate", "class_weighted", "zero_dW_Q", "W_V_lr_tenth",
         "trainer_trains_w_O", "trainer_running_buffer", "trainer_extra_bias")


def _t(a):
    return torch.from_numpy(a)


def _f(kind, W_Q, W_K, W_V, w_O, X, bias=None):
    """f (n,) for the kind; tensors in, tensor out."""
    Z = (X @ W_Q) @ (X @ W_K).transpose(1, 2)                       # (n, M, M) logits
    if kind.startswith("causal"):
        M = X.shape[1]
        Z = Z.masked_fill(torch.ones(M, M, dtype=torch.bool).triu(1), float("-inf"))
    if kind == "f32_softmax":
        S = torch.softmax(Z.float(), dim=-1).to(Z.dtype)            # one float32 op in float64 code
    else:
        S = torch.softmax(Z, dim=-1)
    H = S @ (X @ W_V)                                               # (n, M, d_v)
    if kind == "residual":
        H = H + X @ W_V                                             # an extra residual branch around attention
    if kind == "layernorm":
        H = F.layer_norm(H, H.shape[-1:])                           # an extra LayerNorm before the head
    if kind == "dropout":
        H = F.dropout(H, p=0.1, training=True)                      # dropout left on
    f = (H @ w_O).mean(dim=1)
    return f if bias is None else f + bias


def _loss(kind, f, y):
    if kind in ("soft_margin", "causal_soft_margin"):
        return F.soft_margin_loss(f, y)                             # log(1 + e^{−y f}) computed literally
    if kind == "label_smoothing":                                   # BCE with targets 0.05 / 0.95
        t = (y + 1) / 2 * 0.9 + 0.05
        return F.binary_cross_entropy_with_logits(f, t)
    if kind == "class_weighted":                                    # positives weighted by n / (2 n₊)
        w = torch.where(y > 0, len(y) / (2 * (y > 0).sum()), len(y) / (2 * (y < 0).sum()))
        return (w * F.softplus(-y * f)).mean()
    return F.softplus(-y * f).mean()


def _grads(kind, W_Q, W_K, W_V, w_O, X, y):
    ps = [_t(a).requires_grad_(True) for a in (W_Q, W_K, W_V, w_O)]
    Xt, yt = _t(X), _t(y)
    if kind == "accumulate":                                        # two half batches, the sum not halved
        idx = [slice(0, (len(y) + 1) // 2), slice((len(y) + 1) // 2, len(y))]
        loss = 0.0
        for s in idx:
            if Xt[s].shape[0]:
                part = _loss(kind, _f(kind, *ps, Xt[s]), yt[s])
                part.backward()
                loss = loss + part.item()
        g = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
        return loss, [a.numpy() for a in g]
    loss = _loss(kind, _f(kind, *ps, Xt), yt)
    loss.backward()
    g = [p.grad.numpy() for p in ps]
    if kind == "zero_dW_Q":
        g[0] = g[0] * 0.0                                          # W_Q detached by mistake
    return loss.item(), g


def user(kind):
    """(forward, grad, step, make_trainer) of one kind of user implementation (float64 or float32 as passed)."""
    def forward(W_Q, W_K, W_V, w_O, X):
        with torch.no_grad():
            return _f(kind, *(_t(a) for a in (W_Q, W_K, W_V, w_O, X))).numpy()

    def grad(W_Q, W_K, W_V, w_O, X, y):
        loss, g = _grads(kind, W_Q, W_K, W_V, w_O, X, y)
        return (loss, *g)

    def step(W_Q, W_K, W_V, w_O, X, y, lr):
        _, g = _grads(kind, W_Q, W_K, W_V, w_O, X, y)
        lrs = [lr, lr, lr * 0.1 if kind == "W_V_lr_tenth" else lr]
        return tuple(p - (a * gi).astype(p.dtype) for p, a, gi in zip((W_Q, W_K, W_V), lrs, g)) + (w_O,)

    class Trainer:
        def __init__(self, W_Q, W_K, W_V, w_O, X, y, lr):
            self.p = [_t(a.copy()).requires_grad_(True) for a in (W_Q, W_K, W_V, w_O)]
            self.X, self.y, self.lr = _t(X), _t(y), lr
            trained = self.p if kind == "trainer_trains_w_O" else self.p[:3]   # the head is frozen: not here
            self.bias = torch.zeros((), dtype=self.X.dtype, requires_grad=True)
            if kind == "trainer_extra_bias":
                trained = trained + [self.bias]                    # a trained bias the model does not have
            self.opt = torch.optim.SGD(trained, lr=lr)
            self.running = torch.zeros((), dtype=self.X.dtype)   # a buffer: running mean of f, kept in the model

        def step(self, k):
            for _ in range(k):
                self.opt.zero_grad()
                if kind == "trainer_running_buffer":               # f centred by a running mean (a buffer)
                    f = _f(kind, *self.p, self.X)
                    f_c = f - self.running
                    self.running = 0.9 * self.running + 0.1 * f.detach().mean()
                    f = f_c
                else:
                    f = _f(kind, *self.p, self.X, self.bias if kind == "trainer_extra_bias" else None)
                F.softplus(-self.y * f).mean().backward()
                self.opt.step()

        def params(self):
            return tuple(p.detach().numpy().copy() for p in self.p)

    return forward, grad, step, Trainer
