"""What the proofs track, read from the forward cache of the two-token transformer of Li et al. (ICLR 2025),
trained by SignGD, Adam or GD (docs/math.md §14.1).

Letters: n samples, L = 2 tokens (a signal token and a noise token), m_k query/key width. The forward cache holds
Q, K (n, L, m_k) (token l of sample i times W_Qᵀ, W_Kᵀ), u (n, L) (value scores ⟨v, x_{i,l}⟩) and S (n, L, L) (the
softmax over keys); ``signal_pos`` (n,) says which token of each sample is the signal token y_i·μ, the other one is
the noise token ξ_i. Every tracked quantity is an inner product of a weight row with μ or y_i ξ_i, so it is an entry
of the cache times a sign: the weights themselves are never read.

``tracked`` gives one row of a history (``refvit.li2025.objective`` records it at every kept step; with
``TrainConfig.history_per_decade`` a run of T steps keeps O(log T) rows, ``refvit.trainer.log_steps``). The
history's series are what the stage detector (``refvit.li2025.stages``) reads.
"""
from __future__ import annotations

import numpy as np

# key -> shape of its value in one row ("" = a float). Noise quantities are indexed (s, i): s ∈ [m_k], i ∈ [n].
TRACKED_SHAPES = {
    "query_noise": ("m_k", "n"),      # ⟨w_{Q,s}, y_i ξ_i⟩                                   (math 14.1)
    "key_noise": ("m_k", "n"),        # ⟨w_{K,s}, y_i ξ_i⟩                                   (math 14.1)
    "query_signal": ("m_k",),         # ⟨w_{Q,s}, μ⟩                                         (math 14.2)
    "key_signal": ("m_k",),           # ⟨w_{K,s}, μ⟩                                         (math 14.2)
    "value_signal": (),               # ⟨v, μ⟩                                               (math 14.3)
    "value_noise": ("n",),            # ⟨v, y_i ξ_i⟩, the mean value noise of sample i        (math 14.3)
    "s11": ("n",),                    # signal query -> signal key                           (math 14.4)
    "s21": ("n",),                    # noise query -> signal key                            (math 14.4)
    "qk_noise_agree": (),             # fraction of (s, i) with sgn query noise = sgn key noise (math 14.5)
    "noise_vote": ("m_k",),           # M_s ∈ {-1, 0, 1}, the majority vote of the noise signs (math 14.6)
    "query_signal_vote": (),          # fraction of s with sgn⟨w_{Q,s}, μ⟩ = M_s             (math 14.7)
    "key_signal_vote": (),            # fraction of s with sgn⟨w_{K,s}, μ⟩ = −M_s            (math 14.7)
}
TRACKED_KEYS = tuple(TRACKED_SHAPES)

# The signal token of every sample is ±μ with one μ, so n samples give n copies of ⟨w_{Q,s}, μ⟩. They are products of
# the same vector with the same row, which BLAS may round differently per row (~1e-16 relative); a sample whose
# signal token has the other sign gives the value negated (relative difference 2). 1e-9 separates the two widely.
_SAME_SIGNAL_RTOL = 1e-9


def _positions(y, signal_pos, n: int, signal_sign):
    """Validated (y, signal sign, signal position, noise position), each (n,)."""
    y = np.asarray(y, dtype=np.float64)
    pos = np.asarray(signal_pos)
    if y.shape != (n,) or not np.all(np.abs(y) == 1):
        raise ValueError(f"y must be ({n},) labels in {{-1, +1}}, got shape {y.shape}")
    if pos.shape != (n,) or not np.all((pos == 0) | (pos == 1)):
        raise ValueError(f"signal_pos must be ({n},) token indices in {{0, 1}}, got shape {pos.shape}")
    sign = y if signal_sign is None else np.asarray(signal_sign, dtype=np.float64)
    if sign.shape != (n,) or not np.all(np.abs(sign) == 1):
        raise ValueError(f"signal_sign must be ({n},) signs in {{-1, +1}}, got shape {sign.shape}")
    pos = pos.astype(np.int64)
    return y, sign, pos, 1 - pos


def _signal_inner(entries: np.ndarray, what: str) -> np.ndarray:
    """The common value of the n per-sample copies ``entries`` (n, ...) of one inner product with μ (their mean)."""
    value = entries.mean(axis=0)
    spread = float(np.max(np.abs(entries - value), initial=0.0))
    scale = float(np.max(np.abs(entries), initial=0.0))
    if spread > _SAME_SIGNAL_RTOL * scale:
        raise ValueError(f"{what} differs across samples (spread {spread:.3g} of {scale:.3g}): the signal tokens are "
                         "not signal_sign_i·μ for one μ; with flipped labels pass signal_sign (the clean labels)")
    return value


def _sign_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of entries where a and b have the same non-zero sign (a zero sign never agrees)."""
    return float(np.mean(np.sign(a) * np.sign(b) > 0))


def tracked(cache, y, signal_pos, signal_sign=None) -> dict:
    """One history row of the quantities the proofs track, docs/math.md (14.1)–(14.7).

    Parameters
    ----------
    cache : the forward cache of ``refvit.li2025.model`` (any object with fields Q, K (n, 2, m_k), u (n, 2) and
        S (n, 2, 2)), at the parameters of the step being recorded.
    y : (n,) training labels in {−1, +1}; the noise quantities are signed with them (y_i ξ_i).
    signal_pos : (n,) int, the signal token's index in each sample (the noise token is 1 − signal_pos).
    signal_sign : (n,) the sign of each sample's signal token x = signal_sign_i·μ; default y. With flipped training
        labels the signal token follows the clean label: pass the clean labels here.

    Returns
    -------
    dict with the keys ``TRACKED_KEYS``; arrays of the shapes in ``TRACKED_SHAPES`` (float64), floats for "".
    The signal inner products (14.2), (14.3) are read from every sample (each gives the same number, up to
    rounding) and averaged; a ValueError if they disagree, which means the signal signs are not what was passed.
    """
    Q, K, u, S = (np.asarray(getattr(cache, f), dtype=np.float64) for f in ("Q", "K", "u", "S"))
    if Q.ndim != 3 or Q.shape[1] != 2 or K.shape != Q.shape:
        raise ValueError(f"cache.Q and cache.K must be (n, 2, m_k) of one shape (two tokens), got {Q.shape}, "
                         f"{K.shape}")
    n = Q.shape[0]
    if u.shape != (n, 2) or S.shape != (n, 2, 2):
        raise ValueError(f"cache.u must be ({n}, 2) and cache.S ({n}, 2, 2), got {u.shape}, {S.shape}")
    y, sign, sig, noi = _positions(y, signal_pos, n, signal_sign)
    rows = np.arange(n)
    # token noi of sample i is ξ_i, so Q[i, noi_i, s] = ⟨w_{Q,s}, ξ_i⟩; the label sign makes it ⟨w_{Q,s}, y_i ξ_i⟩
    query_noise = (y[:, None] * Q[rows, noi]).T                                   # (m_k, n)  (math 14.1)
    key_noise = (y[:, None] * K[rows, noi]).T                                     # (m_k, n)  (math 14.1)
    # token sig of sample i is sign_i·μ, so sign_i·Q[i, sig_i, s] = ⟨w_{Q,s}, μ⟩ for every i
    query_signal = _signal_inner(sign[:, None] * Q[rows, sig], "the query signal ⟨w_Q,s, μ⟩")   # (m_k,) (math 14.2)
    key_signal = _signal_inner(sign[:, None] * K[rows, sig], "the key signal ⟨w_K,s, μ⟩")       # (m_k,) (math 14.2)
    value_signal = _signal_inner(sign * u[rows, sig], "the value signal ⟨v, μ⟩")                 # ()     (math 14.3)
    value_noise = y * u[rows, noi]                                                # (n,)  (math 14.3)
    s11 = S[rows, sig, sig]                                                       # (n,)  (math 14.4)
    s21 = S[rows, noi, sig]                                                       # (n,)  (math 14.4)
    # M_s: the sign of the 2n votes sgn⟨w_{Q,s}, y_i ξ_i⟩ and sgn⟨w_{K,s}, y_i ξ_i⟩, 0 on a tie (math 14.6)
    vote = np.sign(np.sign(query_noise).sum(axis=1) + np.sign(key_noise).sum(axis=1))   # (m_k,)
    return {
        "query_noise": query_noise, "key_noise": key_noise,
        "query_signal": query_signal, "key_signal": key_signal,
        "value_signal": float(value_signal), "value_noise": value_noise,
        "s11": s11, "s21": s21,
        "qk_noise_agree": _sign_fraction(query_noise, key_noise),                # (math 14.5)
        "noise_vote": vote,
        "query_signal_vote": _sign_fraction(query_signal, vote),                 # (math 14.7)
        "key_signal_vote": _sign_fraction(key_signal, -vote),                    # (math 14.7)
    }
