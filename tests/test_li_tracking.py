"""The tracked quantities of docs/math.md (14.1)–(14.7), read from a forward cache, against inner products of the
weights with μ and y_i ξ_i computed directly (never from the cache); the log-spaced recording grid.

The cache comes from a small forward written here from the model's definition (Q = X W_Qᵀ, K = X W_Kᵀ, softmax over
keys, v = mean_r W_V[0, r] − mean_r W_V[1, r], u = X v), so these tests do not depend on the model module.
"""
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.special import expit

from refvit.li2025.tracking import TRACKED_KEYS, TRACKED_SHAPES, tracked

# Inner products of O(1) weights and tokens in d = 30, computed by two summation orders: they agree to ~1e-15
# relative; 1e-12 leaves margin and is far below a wrong index or sign (an O(1) difference).
TOL = 1e-12


def problem(n=7, d=30, s=5, m_k=4, m_v=3, mu_norm=0.7, random_pos=True, seed=0):
    """Data of the two-token model (sparse noise, μ = ‖μ‖ e_0) and O(1) weights: every logit is O(1), so s11 and s21
    are far from 0, 1 and 1/2 and a transposed S would show."""
    rng = np.random.default_rng(seed)
    y = rng.choice([-1.0, 1.0], n)
    mu = np.zeros(d)
    mu[0] = mu_norm
    xi = np.zeros((n, d))
    for i in range(n):
        xi[i, rng.choice(np.arange(1, d), s, replace=False)] = rng.standard_normal(s)
    pos = rng.integers(0, 2, n) if random_pos else np.zeros(n, dtype=int)
    W = SimpleNamespace(W_Q=rng.standard_normal((m_k, d)), W_K=rng.standard_normal((m_k, d)),
                        W_V=rng.standard_normal((2, m_v, d)))
    return SimpleNamespace(y=y, mu=mu, xi=xi, pos=pos, W=W)


def tokens(p, signal_sign=None):
    """X (n, 2, d): token pos_i = signal_sign_i·μ, the other token ξ_i."""
    sign = p.y if signal_sign is None else signal_sign
    n, d = p.xi.shape
    X = np.empty((n, 2, d))
    for i in range(n):
        X[i, p.pos[i]] = sign[i] * p.mu
        X[i, 1 - p.pos[i]] = p.xi[i]
    return X


def forward(W, X):
    """The cache of the two-token model (Q, K, u, Z, S), from its definition, with a stable softmax."""
    Q = X @ W.W_Q.T                                      # (n, 2, m_k)
    K = X @ W.W_K.T                                      # (n, 2, m_k)
    Z = np.einsum("nlk,nmk->nlm", Q, K)                  # (n, 2, 2)
    E = np.exp(Z - Z.max(axis=2, keepdims=True))
    S = E / E.sum(axis=2, keepdims=True)
    v = W.W_V[0].mean(axis=0) - W.W_V[1].mean(axis=0)   # (d,)
    return SimpleNamespace(Q=Q, K=K, u=X @ v, Z=Z, S=S)


def direct(p, signal_sign=None):
    """Every tracked quantity from the weights, μ and ξ by loops over s and i (docs/math.md (14.1)–(14.7))."""
    W, y, mu, xi = p.W, p.y, p.mu, p.xi
    n, m_k = len(y), W.W_Q.shape[0]
    v = W.W_V[0].mean(axis=0) - W.W_V[1].mean(axis=0)
    qn = np.array([[W.W_Q[s] @ (y[i] * xi[i]) for i in range(n)] for s in range(m_k)])
    kn = np.array([[W.W_K[s] @ (y[i] * xi[i]) for i in range(n)] for s in range(m_k)])
    sign = y if signal_sign is None else signal_sign
    s11, s21 = [], []
    for i in range(n):
        qs, qx = W.W_Q @ (sign[i] * mu), W.W_Q @ xi[i]        # the signal and noise queries of sample i
        ks, kx = W.W_K @ (sign[i] * mu), W.W_K @ xi[i]
        s11.append(expit(qs @ ks - qs @ kx))                  # two-way softmax: e^a / (e^a + e^b) = σ(a − b)
        s21.append(expit(qx @ ks - qx @ kx))
    votes = [sum(np.sign(qn[s, i]) + np.sign(kn[s, i]) for i in range(n)) for s in range(m_k)]
    M = np.sign(votes)
    q_sig, k_sig = W.W_Q @ mu, W.W_K @ mu
    agree = sum(np.sign(qn[s, i]) == np.sign(kn[s, i]) != 0 for s in range(m_k) for i in range(n)) / (m_k * n)
    return {"query_noise": qn, "key_noise": kn, "query_signal": q_sig, "key_signal": k_sig,
            "value_signal": v @ mu, "value_noise": np.array([v @ (y[i] * xi[i]) for i in range(n)]),
            "s11": np.array(s11), "s21": np.array(s21), "qk_noise_agree": agree, "noise_vote": M,
            "query_signal_vote": np.mean([np.sign(q_sig[s]) == M[s] != 0 for s in range(m_k)]),
            "key_signal_vote": np.mean([np.sign(k_sig[s]) == -M[s] != 0 for s in range(m_k)])}


def assert_matches(got, want):
    assert set(got) == set(TRACKED_KEYS) == set(want)
    for k in TRACKED_KEYS:
        g, w = np.asarray(got[k]), np.asarray(want[k])
        assert g.shape == w.shape, (k, g.shape, w.shape)
        err = np.max(np.abs(g - w), initial=0.0) / max(1.0, np.max(np.abs(w), initial=0.0))
        assert err <= TOL, f"{k}: relative error {err:.3g}, worst index {np.unravel_index(np.argmax(np.abs(g - w)), g.shape)}"


@pytest.mark.parametrize("random_pos", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tracked_quantities_equal_direct_inner_products(random_pos, seed):
    p = problem(random_pos=random_pos, seed=seed)
    if random_pos:
        assert 0 < p.pos.sum() < len(p.pos)        # both signal positions occur, so a swapped index shows
    got = tracked(forward(p.W, tokens(p)), p.y, p.pos)
    assert_matches(got, direct(p))
    m_k, n = p.W.W_Q.shape[0], len(p.y)
    sizes = {"m_k": m_k, "n": n}
    for k, shape in TRACKED_SHAPES.items():       # the documented shapes
        want = tuple(sizes[a] for a in shape)
        assert np.shape(got[k]) == want and isinstance(got[k], float) == (shape == ()), k
    # independent W_Q and W_K: about half of the 28 pairs agree, so the fraction is not a trivial 0 or 1
    assert 0 < got["qk_noise_agree"] < 1


def test_signs_agree_after_aligning_the_weights():
    """W_K = W_Q makes every query/key noise pair agree (14.5 = 1); then W_K = −W_Q makes none agree (= 0)."""
    p = problem(seed=3)
    p.W.W_K = p.W.W_Q.copy()
    got = tracked(forward(p.W, tokens(p)), p.y, p.pos)
    assert got["qk_noise_agree"] == 1.0
    # the vote M_s is then the sign of Σ_i sgn⟨w_{Q,s}, y_i ξ_i⟩; the query signal agrees with it iff sign(⟨w_Q,s, μ⟩)
    # does, the key signal (= the query signal here) iff it does not: the two fractions add up to 1 without ties
    assert np.all(got["noise_vote"] != 0) and got["query_signal_vote"] + got["key_signal_vote"] == 1.0
    p.W.W_K = -p.W.W_Q
    assert tracked(forward(p.W, tokens(p)), p.y, p.pos)["qk_noise_agree"] == 0.0


def test_flipped_labels_need_the_signal_signs():
    """With flipped training labels the signal token follows the clean label: given the clean labels as signal_sign,
    the signal quantities are ⟨·, μ⟩ again; without them the per-sample copies disagree and the call is refused."""
    p = problem(seed=4)
    clean = p.y.copy()
    p.y = clean.copy()
    p.y[:2] *= -1                                    # two training labels flipped
    X = tokens(p, signal_sign=clean)
    assert_matches(tracked(forward(p.W, X), p.y, p.pos, signal_sign=clean), direct(p, signal_sign=clean))
    with pytest.raises(ValueError, match="differs across samples"):
        tracked(forward(p.W, X), p.y, p.pos)


def test_bad_input_is_refused():
    p = problem(seed=5)
    cache = forward(p.W, tokens(p))
    with pytest.raises(ValueError, match="signal_pos must be"):
        tracked(cache, p.y, p.pos + 1)
    with pytest.raises(ValueError, match="y must be"):
        tracked(cache, p.y[:-1], p.pos)
    with pytest.raises(ValueError, match="two tokens"):
        tracked(SimpleNamespace(Q=np.zeros((2, 3, 1)), K=np.zeros((2, 3, 1)), u=0, S=0), p.y[:2], p.pos[:2])
