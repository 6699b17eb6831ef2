"""Common mistakes outside the catalogue, recognised by their signature in your numbers rather than by a full
mutant: dropout left on (two calls on the same inputs differ), gradients accumulated over micro-batches without
dividing (loss and every gradient k × the reference, f exact), label smoothing (f exact, the loss shifted by
(ε/2)·mean(y f), the gradients those of the smoothed loss), an extra residual around the attention or an extra
LayerNorm before the head (f equal to that model's f).

Each test returns a ``Signature`` (the cause's name and the sentence) or None.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import expit

from ..jiang2024.model import Params, backward, forward_cache
from .cases import tolerance
from .metrics import block_error, uniform_factor

LAYERNORM_EPS = 1e-5     # torch.nn.LayerNorm's default


class Signature(NamedTuple):
    name: str
    text: str


def nondeterministic(user_f, again_f) -> Signature | None:
    """Your forward gave two different answers on the same inputs."""
    if again_f is None or not np.all(np.isfinite(user_f)) or not np.all(np.isfinite(again_f)):
        return None
    e = block_error(user_f, again_f)
    if e == 0.0:
        return None
    return Signature("dropout_left_on", f"your forward is not deterministic: two calls on the same inputs differ "
                     f"(by far more than rounding): dropout left on or another random draw in the model (call "
                     f"model.eval(), or F.dropout(..., training=False))")


def accumulation(user, ref, n: int, dtype: str) -> Signature | None:
    """Loss and every gradient k × the reference with k an integer 2 … n − 1 and f exact."""
    if user.grads is None or block_error(user.f, ref.f) > tolerance(dtype, "f"):
        return None
    tol = tolerance(dtype, "grad")
    cs = [uniform_factor(np.ravel(a), np.ravel(b), tol) for a, b in zip(user.grads, ref.grads)
          if float(np.max(np.abs(b))) > 0]
    cs.append(user.loss / ref.loss if ref.loss else None)
    if any(c is None for c in cs):
        return None
    k = round(cs[0])
    if not (2 <= k < n) or any(abs(c - k) > tol * k for c in cs):
        return None
    return Signature("accumulation_not_divided", f"your loss and every gradient are {k} × the reference while f is "
                     f"exact: gradients accumulated over {k} micro-batches without dividing by {k} (or a loss "
                     f"summed over {k} parts; with micro-batches of unequal size, as at odd N, the factor is not "
                     f"uniform)")


def label_smoothing(user, ref, p0: Params, X, y, dtype: str) -> Signature | None:
    """f exact, the loss that of BCE with targets ε/2 and 1 − ε/2: ℓ = log(1 + e^{−z}) + (ε/2) z with z = y f."""
    if user.grads is None or block_error(user.f, ref.f) > tolerance(dtype, "f"):
        return None
    z = y * ref.f
    if abs(float(np.mean(z))) < 1e-12 or user.loss is None:
        return None
    eps = 2 * (user.loss - ref.loss) / float(np.mean(z))
    if not 1e-6 < eps < 1:
        return None
    f, cache = forward_cache(p0, X)
    df = y * (-expit(-z) + eps / 2) / len(y)            # dℓ/df, averaged over the n samples
    pred = backward(df, cache, p0, X)
    if any(block_error(a, b) > tolerance(dtype, "grad") for a, b in zip(user.grads, pred)):
        return None
    return Signature("label_smoothing", f"your loss is BCE with smoothed targets (ε = {eps:.4g}: {eps / 2:.4g} and "
                     f"{1 - eps / 2:.4g} instead of 0 and 1): f is exact and the loss and gradients are those of "
                     f"log(1 + e^{{−y f}}) + (ε/2)·y f")


def _extra_forward(p0: Params, X, kind: str) -> np.ndarray:
    """f of the model with an extra residual (values added to the attention output) or an extra LayerNorm
    (over d_v, no affine, eps 1e-5) before the head; (n,)."""
    W_Q, W_K, W_V, w_O = p0
    _, cache = forward_cache(p0, X)
    H = cache.S @ (X @ W_V)                                # (n, M, d_v) attention output per query
    if kind == "residual":
        H = H + X @ W_V
    else:
        mu = H.mean(-1, keepdims=True)
        H = (H - mu) / np.sqrt(((H - mu) ** 2).mean(-1, keepdims=True) + LAYERNORM_EPS)
    return (H @ w_O).mean(axis=1)


EXTRA = {"extra_residual": ("residual", "your f is that of the model with an extra residual connection around the "
                                        "attention (values added to its output): this model has none "
                                        "(docs/math.md (2.7))"),
         "extra_layernorm": ("layernorm", "your f is that of the model with an extra LayerNorm on the attention "
                                          "output before the head: this model has none (docs/math.md (2.7))")}


def extra_layer(user_f, p0: Params, X, dtype: str) -> Signature | None:
    """Your f equals that of the model with one extra layer of ``EXTRA``."""
    for name, (kind, text) in EXTRA.items():
        with np.errstate(all="ignore"):
            f = _extra_forward(p0, X, kind)
        if np.all(np.isfinite(f)) and block_error(user_f, f) <= tolerance(dtype, "f"):
            return Signature(name, text)
    return None
