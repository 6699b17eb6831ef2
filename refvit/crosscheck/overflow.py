"""Non-finite outputs where the reference is finite: say what overflowed, where, and what to write instead.

The reference is stable at every scale (a max-shifted softmax, docs/math.md (3.5); the loss as logaddexp,
docs/math.md (3.1)), so a NaN or inf in your f, loss, gradients or iterates is an overflow in your code. Which one
follows from the block that first goes non-finite and from the case's numbers: the largest logit
x_lᵀ W_Q W_Kᵀ x_j of the sample (exp overflows above log(float max): 709.8 in float64, 88.7 in float32) and the most
negative margin y·f. This diagnosis replaces the catalogue for such a case: a mutant that is NaN wherever you are
NaN says nothing about your code.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..jiang2024.model import forward_cache


class Overflow(NamedTuple):
    """One case's overflow: the cause's name (a catalogue name when the signature is that mistake's, else
    "overflow") and the sentence that says what overflowed and where."""
    name: str
    text: str


def _finite(a) -> bool:
    return a is not None and bool(np.all(np.isfinite(np.asarray(a, dtype=np.float64))))


def _what(a) -> str:
    a = np.asarray(a, dtype=np.float64)
    return "NaN" if np.any(np.isnan(a)) else "inf"


def exp_limit(dtype: str) -> float:
    """The largest z with exp(z) finite in ``dtype``: log(float max), 709.78 (float64), 88.72 (float32)."""
    return math.log(float(np.finfo(dtype).max))


def overflow(user, ref, inputs, dtype: str, loss_ok_elsewhere: bool, logits=None,
             logit_text: str = "x_lᵀ W_Q W_Kᵀ x_j") -> Overflow | None:
    """The overflow of one case, or None when every output you returned is finite.

    ``user``/``ref``: the case's outputs (``_Outputs``); ``inputs``: (p0, X, y) float64; ``loss_ok_elsewhere``:
    your loss passed in every other case that ran (then a literal log(1 + e^{−z}) is the only explanation of an
    infinite loss, and the catalogue name ``naive_logistic_overflow`` is given); ``logits``: (p0, X) -> the
    logits (n, L, L) of the setting's model (default: the first setting's), written ``logit_text`` in the
    sentences."""
    p0, X, y = inputs
    lim = exp_limit(dtype)
    Z = forward_cache(p0, X)[1].Z if logits is None else logits(p0, X)
    zmax = Z.reshape(len(y), -1).max(axis=1)                         # (n,) largest logit per sample
    margins = y * ref.f                                              # (n,) y·f of the reference
    i_m = int(np.argmin(margins))
    m_text = f"y·f = {margins[i_m]:.4g} (sample {i_m})"
    if not _finite(user.f):
        bad = np.flatnonzero(~np.isfinite(np.asarray(user.f, dtype=np.float64)))
        i = int(bad[np.argmax(zmax[bad])])
        where = (f"your f is {_what(user.f)} for {len(bad)} of {len(y)} samples (sample {i}: largest logit "
                 f"{logit_text} = {zmax[i]:.4g})")
        if np.all(zmax[bad] > lim):
            return Overflow("softmax_without_max_shift",
                            f"{where}: exp of the raw logits overflows above {lim:.1f} in {dtype}; subtract each "
                            f"row's max before exp (torch.softmax, jax.nn.softmax and scipy.special.softmax do)")
        return Overflow("overflow", f"{where}, where the reference's f is finite")
    if user.loss is not None and not _finite(user.loss):
        tail = ""
        if user.grads is not None and not all(_finite(g) for g in user.grads):
            tail = ("; its gradient is then NaN as well (−e^{−z}/(1 + e^{−z}) = −inf/inf): −sigmoid(−z) "
                    "(torch.sigmoid, scipy.special.expit) stays finite")
        if -margins[i_m] > lim and loss_ok_elsewhere:
            return Overflow("naive_logistic_overflow",
                            f"your loss is {_what(user.loss)} at {m_text}: log(1 + e^{{−z}}) computed literally "
                            f"overflows once e^{{−z}} does (z < −{lim:.1f} in {dtype}); write it as softplus(−z) "
                            f"(torch.nn.functional.softplus, jax.nn.softplus) or logaddexp(0, −z), "
                            f"not SoftMarginLoss{tail}")
        if -margins[i_m] > lim:
            return Overflow("overflow", f"your loss is {_what(user.loss)} at {m_text}: an e^{{−z}} in it "
                            f"overflows for z < −{lim:.1f} in {dtype} (a literal log(1 + e^{{−z}}) does: write "
                            f"softplus(−z) or logaddexp(0, −z)){tail}")
        return Overflow("overflow", f"your loss is {_what(user.loss)} where the reference's is "
                        f"{ref.loss:.4g} (most negative margin {m_text})")
    if user.grads is not None and not all(_finite(g) for g in user.grads):
        names = [f"d{k}" for k, g in zip(p0._fields, user.grads) if not _finite(g)]
        what = _what(np.concatenate([np.ravel(g) for g in user.grads]))
        where = f"your {', '.join(names)} {'holds' if len(names) == 1 else 'hold'} {what}"
        if -margins[i_m] > lim:
            return Overflow("overflow", f"{where} at {m_text} while the loss is finite: the derivative "
                            f"e^{{−z}}/(1 + e^{{−z}}) is inf/inf for z < −{lim:.1f} in {dtype}; write it as "
                            f"sigmoid(−z) (torch.sigmoid, scipy.special.expit)")
        if zmax.max() > lim:
            return Overflow("overflow", f"{where} at logits up to {zmax.max():.4g} while f and the loss are "
                            f"finite: the softmax backward overflows (exp above {lim:.1f} in {dtype}); use the "
                            f"softmax's own backward, or subtract the row max before exp")
        return Overflow("overflow", f"{where} where the reference's gradients are finite")
    for kind, traj in (("step", user.traj), ("trainer", user.trainer)):
        if traj and not all(_finite(a) for a in traj[-1]):
            what = _what(np.concatenate([np.ravel(a) for a in traj[-1]]))
            return Overflow("overflow", f"your {kind}'s parameters become {what} at step {len(traj)} while f, "
                            f"the loss and the gradients at the start are finite")
    return None
