"""The second setting's reference model (refvit.li2025): gradients against finite differences and against the per-row
sums, closed forms, the value-row identity, the data law, config validation, and a mutation test.

Tolerances. Finite differences: 1e-6 relative to the block's largest entry. In float64, central differences with
h = 1e-5 are accurate to ~1e-10 relative on O(1) problems (truncation O(h²), rounding O(ε/h)); at the tiny init the
query/key gradients are ~1e-6 of the loss scale, so the loss's rounding (ε·L/h ≈ 1e-11 absolute) can show as ~1e-5
there on the *loss* check — that regime is checked on Σ df·f, whose scale is the output's. Observed on Σ df·f:
1e-11 to 4e-10 at O(1) logits and after SignGD, 2e-8 for the query/key blocks at the tiny init. A dropped term, a
missing 1/m_v or λ, or a transposition gives errors of 1e-2 to 1. Model vs formulas: 1e-12 relative, the same real
numbers summed in a different order (a few dozen O(1) terms: rounding ~1e-15; observed ≤ 6e-16).
"""
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import refvit.li2025.model as li_model
from refvit import gradcheck
from refvit.jiang2024.config import DataConfig, ModelConfig
from refvit.streams import streams
from refvit.li2025 import (
    LiDataConfig,
    LiModelConfig,
    LiParams,
    formulas,
    forward,
    init_params,
    loss_and_grads,
    make_dataset,
    sample,
)
from refvit.li2025.model import backward, forward_cache
from refvit.primitives import mean_loss

from .li_problems import DATA, REGIMES, problem

TOL_FD = 1e-6
TOL_TWO_PATHS = 1e-12


def _fd_blocks(fun_of_params, params):
    """Central-difference gradient of a scalar function of LiParams, block by block."""
    out = []
    for k in range(3):
        arrays = [a.copy() for a in params]

        def fun(x, k=k):
            arrays[k] = x
            return fun_of_params(LiParams(*arrays))
        out.append(gradcheck.numerical_grad(fun, arrays[k].copy()))
    return LiParams(*out)


def _worst(a, b):
    return np.unravel_index(np.argmax(np.abs(a - b)), a.shape)


# ---------------------------------------------------------------------------------------------------------------
# Finite differences
# ---------------------------------------------------------------------------------------------------------------

def test_regimes_are_what_they_claim():
    """Tiny logits at the default init, O(1) logits, and a point moved by SignGD."""
    zmax = {}
    for name, make in REGIMES.items():
        params, X, _, cfg = make()
        zmax[name] = np.abs(forward_cache(params, X, cfg)[1].Z).max()
    assert zmax["tiny_init"] < 1e-3
    assert 0.5 < zmax["O1_logits"] < 50 and 0.5 < zmax["after_signgd"] < 50


@pytest.mark.parametrize("regime", list(REGIMES))
def test_vjp_matches_finite_differences(regime):
    """backward(df) with a random cotangent equals the FD gradient of Σ_i df_i f_i for every block (math 13.14–13.19).

    A random df, not ones: with df = 1 a wrong softmax Jacobian can vanish as well.
    """
    params, X, y, cfg = REGIMES[regime]()
    df = np.random.default_rng(7).standard_normal(X.shape[0])
    _, cache = forward_cache(params, X, cfg)
    analytic = backward(df, cache, X, cfg)
    numeric = _fd_blocks(lambda p: float(df @ forward_cache(p, X, cfg)[0]), params)
    for name, a, b in zip(LiParams._fields, analytic, numeric):
        err = gradcheck.rel_error(a, b)
        assert err < TOL_FD, f"{regime} {name}: rel error {err:.2e} at {_worst(a, b)}"


@pytest.mark.parametrize("regime", ["O1_logits", "after_signgd"])
def test_loss_gradient_matches_finite_differences(regime):
    params, X, y, cfg = REGIMES[regime]()
    _, grads = loss_and_grads(params, X, y, cfg)
    numeric = _fd_blocks(lambda p: mean_loss(forward_cache(p, X, cfg)[0], y), params)
    for name, a, b in zip(LiParams._fields, grads, numeric):
        err = gradcheck.rel_error(a, b)
        assert err < TOL_FD, f"{regime} {name}: rel error {err:.2e} at {_worst(a, b)}"


def test_directional_check_at_default_sizes():
    """One random direction per block at the default sizes (d = 2000, m_k = m_v = 10), at an init whose logits are
    O(1) on the noise token (σ₀ = 0.05: a ≈ m_k σ₀² ‖ξ‖² ≈ 1), where entry-wise FD would be too slow."""
    dc = LiDataConfig(N=6, n_test=2, mu_norm=2.0)
    cfg = LiModelConfig(sigma0=0.05)
    params, X, y, _ = problem(cfg, dc, seed=3)
    _, grads = loss_and_grads(params, X, y, cfg)
    for k, name in enumerate(LiParams._fields):
        def fun(x, k=k):
            p = list(params)
            p[k] = x
            return mean_loss(forward_cache(LiParams(*p), X, cfg)[0], y)
        a, b = gradcheck.directional_check(fun, grads[k], params[k], np.random.default_rng(k))
        # a scalar comparison: 1e-6 as above
        assert gradcheck.rel_error(a, b) < TOL_FD, f"{name}: analytic {a:.10g} vs numeric {b:.10g}"


# ---------------------------------------------------------------------------------------------------------------
# Mutation tests: the checks can fail
# ---------------------------------------------------------------------------------------------------------------

def _broken_backward(kind):
    """``backward`` with one plausible mistake."""
    def bwd(df, cache, X, cfg):
        Q, K, u, _, S = cache
        lam, c, m_v = cfg.logit_scale, cfg.c(X.shape[1]), cfg.m_v
        du = df[:, None] * c * S.sum(axis=1)
        dv = np.einsum("nm,nmd->d", du, X) / (1 if kind == "no 1/m_v" else m_v)
        dW_V = np.stack([np.tile(dv, (m_v, 1)), np.tile(-dv, (m_v, 1))])
        dS = np.broadcast_to((df[:, None] * c * u)[:, None, :], S.shape)
        dZ = S * dS if kind == "no off-diagonal" else S * (dS - (S * dS).sum(axis=-1, keepdims=True))
        lam_used = 1.0 if kind == "no logit_scale" else lam
        dQ = lam_used * dZ @ K
        dK = lam_used * ((dZ if kind == "transpose" else dZ.transpose(0, 2, 1)) @ Q)
        n, L, d = X.shape
        return LiParams(dQ.reshape(n * L, -1).T @ X.reshape(n * L, d), dK.reshape(n * L, -1).T @ X.reshape(n * L, d),
                        dW_V)
    return bwd


@pytest.mark.parametrize("kind,block", [("no off-diagonal", "W_Q"), ("no 1/m_v", "W_V"),
                                        ("no logit_scale", "W_K"), ("transpose", "W_K")])
def test_mutation_broken_backward_fails_the_check(kind, block, monkeypatch):
    """A deliberately broken backward fails the same FD comparison the tests above rely on, at O(1) logits."""
    params, X, y, cfg = REGIMES["O1_logits"]()
    monkeypatch.setattr(li_model, "backward", _broken_backward(kind))
    _, grads = loss_and_grads(params, X, y, cfg)
    monkeypatch.undo()
    numeric = _fd_blocks(lambda p: mean_loss(forward_cache(p, X, cfg)[0], y), params)
    err = gradcheck.rel_error(getattr(grads, block), getattr(numeric, block))
    assert err > 1e-2, f"broken backward ({kind}) passed the FD check on {block} (error {err:.2e})"


# ---------------------------------------------------------------------------------------------------------------
# Chain rule vs the per-row sums
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("regime", list(REGIMES))
def test_per_row_sums_equal_chain_rule(regime):
    params, X, y, cfg = REGIMES[regime]()
    _, chain = loss_and_grads(params, X, y, cfg)
    sums = formulas.gradients(params, X, y, cfg)
    for name, a, b in zip(LiParams._fields, chain, sums):
        err = gradcheck.rel_error(a, b)
        assert err <= TOL_TWO_PATHS, f"{regime} {name}: chain rule vs per-row sums rel error {err:.2e}"


def _summand_scale(params, X, y, cfg):
    """Σ|summand| of (13.21)–(13.23) per block (max over entries): the scale two summation orders' rounding is
    relative to, since the gradient itself can be far smaller than its terms (Σ_m δ_lm = 0 by design)."""
    W_Q, W_K, W_V = params
    n, L, _ = X.shape
    c, lam = cfg.c(L), cfg.logit_scale
    sq, sk, sv = np.zeros_like(W_Q), np.zeros_like(W_K), np.zeros_like(W_V[0])
    for i in range(n):
        S, u, f, _ = formulas.sample_terms(params, X[i], cfg)
        db = c * lam * S * (np.abs(u)[None, :] + (S @ np.abs(u))[:, None])   # |δ_lm| ≤ this
        aX = np.abs(X[i])
        sq += (np.abs(X[i] @ W_K.T).T @ db.T @ aX) / n    # Σ_{l,m} |δ_lm| |K_ms| |x_l|
        sk += (np.abs(X[i] @ W_Q.T).T @ db @ aX) / n      # Σ_{l,m} |δ_lm| |Q_ls| |x_m|
        sv += c / W_V.shape[1] * (S.sum(axis=0) @ aX) / n
    return float(sq.max()), float(sk.max()), float(sv.max())


problems = st.builds(
    lambda n, d, m_k, m_v, c_L, lam, scale, seed: _random_problem(n, d, m_k, m_v, c_L, lam, scale, seed),
    st.integers(1, 4), st.integers(2, 6), st.integers(1, 3), st.integers(1, 3), st.sampled_from(["sum", "mean"]),
    st.sampled_from([0.5, 1.0, 2.0]), st.sampled_from([0.05, 0.5, 1.0]), st.integers(0, 2**32 - 1))


def _random_problem(n, d, m_k, m_v, c_L, lam, scale, seed):
    """Gaussian tokens X (n, 2, d) (not the data law: every coordinate shared), labels and N(0, scale²) params."""
    rng = np.random.default_rng(seed)
    cfg = LiModelConfig(m_k=m_k, m_v=m_v, sigma0=scale, c_L=c_L, logit_scale=lam)
    X = rng.standard_normal((n, 2, d))
    y = rng.choice([-1.0, 1.0], size=n)
    return init_params(cfg, d, rng), X, y, cfg


@given(problems)
def test_per_row_sums_equal_chain_rule_on_random_problems(problem_):
    params, X, y, cfg = problem_
    _, chain = loss_and_grads(params, X, y, cfg)
    sums = formulas.gradients(params, X, y, cfg)
    for name, a, b, sc in zip(LiParams._fields, chain, sums, _summand_scale(params, X, y, cfg)):
        # 1e-13 per unit of summand magnitude: ε ≈ 2.2e-16 times at most a few hundred terms.
        assert np.abs(a - b).max() <= 1e-13 * sc, f"{name}: {np.abs(a - b).max():.2e} vs scale {sc:.2e}"


@settings(max_examples=20)
@given(problems)
@example(_random_problem(1, 5, 1, 2, 'sum', 1.0, 1.0, 13))      # O(30) gradients: truncation above 1e-7 absolute
def test_vjp_matches_finite_differences_on_random_problems(problem_):
    params, X, y, cfg = problem_
    df = np.random.default_rng(X.size).standard_normal(X.shape[0])
    analytic = backward(df, forward_cache(params, X, cfg)[1], X, cfg)
    numeric = _fd_blocks(lambda p: float(df @ forward_cache(p, X, cfg)[0]), params)
    f_scale = max(1.0, float(np.abs(forward_cache(params, X, cfg)[0]).max()))
    for name, a, b in zip(LiParams._fields, analytic, numeric):
        # against the larger of the output and the block's gradient scale: blocks that vanish (e.g. W_Q at tiny
        # scale) leave only FD rounding, ε·|f|/h ≈ 1e-11·|f|; large gradients (|∂f| ≈ 30 at O(1) logits) carry the
        # h² truncation error, seen at 8e-9 relative. 1e-7 leaves a decade over both; a wrong term is O(|∂f|).
        scale = max(f_scale, float(np.abs(a).max()))
        assert np.abs(a - b).max() <= 1e-7 * scale, f"{name}: {np.abs(a - b).max():.2e} at {_worst(a, b)}"


# ---------------------------------------------------------------------------------------------------------------
# Closed forms and identities
# ---------------------------------------------------------------------------------------------------------------

def _v(W_V):
    """v = w̄_{V,+1} − w̄_{V,−1} written independently of the code's value_direction (math 13.8)."""
    m_v = W_V.shape[1]
    return np.add.reduce(W_V[0], axis=0) / m_v - np.add.reduce(W_V[1], axis=0) / m_v


@pytest.mark.parametrize("regime", list(REGIMES))
def test_zero_query_gives_uniform_attention_and_the_closed_gradients(regime):
    """W_Q = 0: S = 1/L, f = c_L Σ_m u_m, ∇W_K = 0 exactly, ∇W_Q and ∇W_V by (math 13.26)."""
    params, X, y, cfg = REGIMES[regime]()
    params = params._replace(W_Q=np.zeros_like(params.W_Q))
    n, L, _ = X.shape
    c, lam = cfg.c(L), cfg.logit_scale
    f, cache = forward_cache(params, X, cfg)
    assert np.all(cache.S == 1.0 / L)                           # exp(0)/Σ exp(0): exact
    u = X @ _v(params.W_V)                                      # (n, L)
    np.testing.assert_allclose(f, c * L * u.mean(axis=1), rtol=1e-13, atol=0)   # a few ulps of an L-term sum
    _, grads = loss_and_grads(params, X, y, cfg)
    assert np.all(grads.W_K == 0.0)                             # dK = λ dZᵀ Q with Q = 0: exact zero
    g = -y / (n * (1 + np.exp(y * f)))                          # (math 13.13)
    r = np.einsum("nm,nmd->nd", u - u.mean(axis=1, keepdims=True), X)
    xbar = X.mean(axis=1)
    dW_Q = lam * c * np.einsum("n,nd,ne->de", g, r @ params.W_K.T, xbar)
    dW_V1 = c / cfg.m_v * L * np.einsum("n,nd->d", g, xbar)
    # 1e-12: the same sums in another order (see the module docstring)
    assert gradcheck.rel_error(grads.W_Q, dW_Q) < TOL_TWO_PATHS
    assert gradcheck.rel_error(grads.W_V, np.stack([np.tile(dW_V1, (cfg.m_v, 1)), np.tile(-dW_V1, (cfg.m_v, 1))])) \
        < TOL_TWO_PATHS


def test_equal_class_values_give_f_zero_and_no_attention_gradient():
    """W_{V,+1} = W_{V,−1}: v = 0, u = 0, f = 0, L = log 2, ∇W_Q = ∇W_K = 0 exactly (dS = 0)."""
    params, X, y, cfg = REGIMES["O1_logits"]()
    params = params._replace(W_V=np.stack([params.W_V[0], params.W_V[0]]))
    loss, grads = loss_and_grads(params, X, y, cfg)
    assert loss == math.log(2.0)                                # logaddexp(0, 0) = log 2, correctly rounded
    assert np.all(grads.W_Q == 0.0) and np.all(grads.W_K == 0.0)
    assert np.abs(grads.W_V).max() > 0                          # the value path still learns


@pytest.mark.parametrize("regime", list(REGIMES))
def test_two_token_sigmoid_form(regime):
    """L = 2: f = c_L Σ_l [σ(Z_l0 − Z_l1) u_0 + σ(Z_l1 − Z_l0) u_1], and ∂f/∂(a_l0 − a_l1) = c_L λ S_l0 S_l1 (u_0 − u_1)
    (math 13.25)."""
    from scipy.special import expit
    params, X, y, cfg = REGIMES[regime]()
    c, lam = cfg.c(2), cfg.logit_scale
    a = np.einsum("sd,nld,se,nme->nlm", params.W_Q, X, params.W_K, X)    # (n, 2, 2) pre-scale scores
    u = X @ _v(params.W_V)
    s0 = expit(lam * (a[:, :, 0] - a[:, :, 1]))                            # S_l0 (n, 2)
    f = c * (s0 * u[:, [0]] + (1 - s0) * u[:, [1]]).sum(axis=1)
    f_code, cache = forward_cache(params, X, cfg)
    # rounding of a different formula for the same numbers: ~1e-15 relative to max|u|
    assert np.abs(f_code - f).max() <= 1e-13 * max(1.0, np.abs(u).max())
    # ∂f/∂Z from the code's backward (dQ = λ dZ K, recovered through FD of f in the difference a_l0 − a_l1)
    delta = c * lam * s0 * (1 - s0) * (u[:, [0]] - u[:, [1]])
    for i in range(X.shape[0]):
        for l in range(2):
            def f_of_gap(t, i=i, l=l):
                z = lam * a[i].copy()
                z[l, 0] += lam * t[0] / 2
                z[l, 1] -= lam * t[0] / 2
                S = np.exp(z - z.max(1, keepdims=True))
                S /= S.sum(1, keepdims=True)
                return c * float(np.sum(S @ u[i]))
            fd = gradcheck.numerical_grad(f_of_gap, np.zeros(1))[0]
            assert abs(fd - delta[i, l]) <= 1e-9 * max(1.0, abs(u[i]).max())   # FD ~1e-10 on O(1) numbers


@pytest.mark.parametrize("regime", list(REGIMES))
def test_value_row_identity(regime):
    """Every value row of a class gets the same gradient and the −1 class its negative (math 13.21): exactly in
    the code, and row by row in the finite differences (independently)."""
    params, X, y, cfg = REGIMES[regime]()
    _, grads = loss_and_grads(params, X, y, cfg)
    assert np.all(grads.W_V[0] == grads.W_V[0, :1]) and np.all(grads.W_V[1] == -grads.W_V[0])
    numeric = _fd_blocks(lambda p: mean_loss(forward_cache(p, X, cfg)[0], y), params).W_V
    scale = np.abs(numeric).max()
    for j in range(2):
        for r in range(cfg.m_v):
            # FD of two rows at the same point: both ~1e-10 from the truth, so 1e-6 of the block's scale
            assert np.abs(numeric[j, r] - (1 - 2 * j) * numeric[0, 0]).max() <= TOL_FD * scale


def test_mean_aggregation_halves_f_and_its_gradient():
    """c_L = "mean" is c_L = 1/2 for two tokens: f and every gradient of Σ df f are exactly half (power of 2)."""
    params, X, y, cfg = REGIMES["after_signgd"]()
    df = np.random.default_rng(2).standard_normal(X.shape[0])
    f_sum, c_sum = forward_cache(params, X, cfg.replace(c_L="sum"))
    f_mean, c_mean = forward_cache(params, X, cfg.replace(c_L="mean"))
    assert np.array_equal(f_mean, f_sum / 2)
    for a, b in zip(backward(df, c_mean, X, cfg.replace(c_L="mean")), backward(df, c_sum, X, cfg.replace(c_L="sum"))):
        assert np.array_equal(a, b / 2)


def test_logit_scale_is_a_rescaled_query():
    """Z = λ Q Kᵀ: f(λ, W_Q) = f(1, λ W_Q); ∇W_Q(λ, W_Q) = λ ∇W_Q(1, λ W_Q), ∇W_K and ∇W_V unchanged (chain rule)."""
    params, X, y, cfg = REGIMES["O1_logits"]()
    lam = cfg.logit_scale
    one = cfg.replace(logit_scale=1.0)
    scaled = params._replace(W_Q=lam * params.W_Q)
    l1, g1 = loss_and_grads(params, X, y, cfg)
    l2, g2 = loss_and_grads(scaled, X, y, one)
    # one extra rounding (λ multiplies W_Q instead of the logits): ~1e-15 relative, 1e-12 as for two code paths
    assert abs(l1 - l2) <= 1e-12 * l1
    assert gradcheck.rel_error(g1.W_Q, lam * g2.W_Q) < TOL_TWO_PATHS
    assert gradcheck.rel_error(g1.W_K, g2.W_K) < TOL_TWO_PATHS
    assert gradcheck.rel_error(g1.W_V, g2.W_V) < TOL_TWO_PATHS


def test_signgd_moves_every_private_noise_coordinate_by_eta():
    """(math 13.24, 13.30): one SignGD step moves each entry at a private noise coordinate by ±η, the per-row sign
    y_i·sgn(ξ_ik)·(row factor), and ⟨v, y_i ξ_i⟩ over the private coordinates by 2η‖ξ_i,P‖₁."""
    dc = LiDataConfig(N=6, d=400, s=5, mu_norm=1.0, n_test=2, signal_position="random")
    params, X, y, cfg = problem(LiModelConfig(m_k=3, m_v=2, sigma0=0.3), dc, seed=4)
    _, g = loss_and_grads(params, X, y, cfg)
    eta = 0.01
    new = LiParams(*(p - eta * np.sign(gp) for p, gp in zip(params, g)))
    noise = X[np.arange(6), 1 - np.array([int(np.flatnonzero(X[i, :, 0])[0]) for i in range(6)])]  # (N, d) tokens ξ_i
    used = (noise != 0).sum(axis=0)
    checked = 0
    for i in range(6):
        P = np.flatnonzero((noise[i] != 0) & (used == 1))
        P = P[P > 0]
        if P.size == 0:
            continue
        checked += 1
        for blk in (0, 1):
            dW = new[blk][:, P] - params[blk][:, P]                              # (m_k, |P|)
            # each entry moves by exactly ±η (up to the rounding of p − η·sgn: ≤ 1 ulp of the entry)
            assert np.allclose(np.abs(dW), eta, rtol=0, atol=1e-15)
            # one sign per row s, times sgn(ξ_ik): the direction is y_i·sgn(ξ_ik)·sgn(row factor)
            per_row = np.sign(dW) * np.sign(noise[i, P])
            assert np.all(per_row == per_row[:, :1])
            # the second derivation's entries (math 13.24) have the same signs
            e = formulas.private_coordinate_entry(params, X, y, cfg, i, int(P[0]))
            assert np.array_equal(np.sign(-e[blk]), np.sign(dW[:, 0]))
        dv = _v(new.W_V)[P] - _v(params.W_V)[P]
        assert abs(y[i] * dv @ noise[i, P] - 2 * eta * np.abs(noise[i, P]).sum()) <= 1e-14 * np.abs(noise[i]).sum()
    assert checked >= 4, "the data gave too few samples with private coordinates to test"


# ---------------------------------------------------------------------------------------------------------------
# The data law
# ---------------------------------------------------------------------------------------------------------------

def _noise_and_signal(ds_X, pos):
    n = ds_X.shape[0]
    return ds_X[np.arange(n), 1 - pos], ds_X[np.arange(n), pos]


@settings(max_examples=30)
@given(st.integers(1, 8), st.integers(2, 40), st.data(), st.sampled_from(["fixed", "random"]),
       st.integers(0, 2**32 - 1))
def test_sparse_noise_law(N, d, data, position, seed):
    """Exactly s non-zeros per noise token, all in the stored support, none on coordinate 0; ⟨μ, ξ⟩ = 0 (α = 0);
    the signal token is ỹ μ at signal_pos."""
    s = data.draw(st.integers(1, d - 1))
    cfg = LiDataConfig(N=N, d=d, s=s, n_test=1, signal_position=position)
    rng = streams(seed)
    ds = make_dataset(cfg, rng.data, rng.test)
    xi, sig = _noise_and_signal(ds.X, ds.signal_pos)
    assert np.all((xi != 0).sum(axis=1) == s)
    assert np.all(xi[:, 0] == 0) and np.all(ds.support >= 1) and np.all(ds.support < d)
    for i in range(N):
        assert np.array_equal(np.flatnonzero(xi[i]), ds.support[i])
    assert np.all(xi @ ds.mu == 0.0)
    assert np.array_equal(sig, ds.y_clean[:, None] * ds.mu)
    if position == "fixed":
        assert np.all(ds.signal_pos == 0)


def test_feature_noise_and_dense_noise():
    """α > 0: ⟨μ, ξ_i⟩ = −α ỹ_i ‖μ‖² (math 13.2); dense: every coordinate but 0 non-zero, no support stored."""
    cfg = LiDataConfig(N=10, d=30, s=4, mu_norm=2.0, alpha=0.25, n_test=3)
    ds = make_dataset(cfg, *streams(1)[:2])
    xi, _ = _noise_and_signal(ds.X, ds.signal_pos)
    np.testing.assert_array_equal(xi @ ds.mu, -0.25 * ds.y_clean * 4.0)   # one non-zero product: exact
    assert np.all((xi[:, 1:] != 0).sum(axis=1) == 4)
    dense = make_dataset(cfg.replace(noise="dense", alpha=0.0), *streams(1)[:2])
    xi, _ = _noise_and_signal(dense.X, dense.signal_pos)
    assert np.all(xi[:, 0] == 0) and np.all(xi[:, 1:] != 0) and dense.support is None


def test_noise_values_and_support_statistics():
    """Noise coordinates are N(0, σ_p²) and supports uniform on {1..d−1}: the sample std within 6 standard errors,
    every coordinate's count within 6 binomial standard deviations of n·s/(d−1)."""
    cfg = LiDataConfig(N=2000, d=50, s=10, sigma_p=3.0, n_test=1)
    ds = make_dataset(cfg, *streams(2)[:2])
    xi, _ = _noise_and_signal(ds.X, ds.signal_pos)
    vals = xi[xi != 0]
    assert abs(vals.std() / 3.0 - 1) < 6 / math.sqrt(2 * vals.size)      # rel. s.e. of a std: 1/√(2n)
    counts = np.bincount(ds.support.ravel(), minlength=cfg.d)
    p = cfg.s / (cfg.d - 1)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] - cfg.N * p) < 6 * math.sqrt(cfg.N * p * (1 - p)))


def test_random_signal_position_uses_both_positions():
    ds = make_dataset(LiDataConfig(N=200, d=20, s=3, n_test=200, signal_position="random"), *streams(3)[:2])
    # P(all 200 equal) = 2^-199: both positions appear
    assert set(ds.signal_pos) == {0, 1} and set(ds.signal_pos_test) == {0, 1}


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.45])
def test_flip_count_and_clean_test_set(rate):
    cfg = LiDataConfig(N=40, d=20, s=3, flip_rate=rate, n_test=50, mu_norm=1.0)
    ds = make_dataset(cfg, *streams(4)[:2])
    assert int(np.sum(ds.y != ds.y_clean)) == round(rate * cfg.N)
    _, sig = _noise_and_signal(ds.X, ds.signal_pos)
    assert np.array_equal(sig, ds.y_clean[:, None] * ds.mu)                 # the signal follows the clean label
    _, sig_t = _noise_and_signal(ds.X_test, ds.signal_pos_test)
    assert np.array_equal(sig_t, ds.y_test[:, None] * ds.mu)                # the test set is clean


def test_balanced_labels_alternate():
    ds = make_dataset(LiDataConfig(N=6, d=10, s=2, labels="balanced", n_test=4), *streams(5)[:2])
    assert list(ds.y) == [1, -1, 1, -1, 1, -1] and list(ds.y_test) == [1, -1, 1, -1]


def test_same_seed_same_data_and_init_does_not_change_data():
    cfg = LiDataConfig(N=8, d=30, s=4, n_test=5, signal_position="random")
    a = streams(9)
    init_params(LiModelConfig(m_k=7, sigma0=0.5), cfg.d, a.init)            # consume the init stream first
    ds_a = make_dataset(cfg, a.data, a.test)
    b = streams(9)
    ds_b = make_dataset(cfg, b.data, b.test)
    init_params(LiModelConfig(m_k=2), cfg.d, b.init)
    for x, z in zip(ds_a, ds_b):
        assert np.array_equal(x, z)
    ds_c = make_dataset(cfg, *streams(10)[:2])
    assert not np.array_equal(ds_a.X, ds_c.X)


def test_large_d_is_cheap():
    """Sparse noise never builds a d×d array: d = 10⁶ with s = 5 (a d×d float64 array would need 8 TB)."""
    cfg = LiDataConfig(N=2, d=10**6, s=5, n_test=1)
    X = sample(cfg, 2, np.random.default_rng(0)).X
    assert X.shape == (2, 2, 10**6) and int((X[:, 1] != 0).sum()) == 10


def test_snr_and_its_first_setting_form():
    """(math 13.4, 13.5): ‖μ‖/(σ_p√s) sparse, ‖μ‖/(σ_p√(d−1)) dense; ×√(s/d) resp. ×√((d−1)/d) gives ‖μ‖/(σ_p√d)."""
    c = LiDataConfig(d=400, s=25, sigma_p=2.0, mu_norm=3.0)
    assert c.snr == pytest.approx(3.0 / (2.0 * 5.0), rel=1e-15)
    assert c.snr_first_setting == pytest.approx(3.0 / (2.0 * 20.0), rel=1e-15)
    dense = c.replace(noise="dense")
    assert dense.snr == pytest.approx(3.0 / (2.0 * math.sqrt(399)), rel=1e-15)
    assert dense.snr_first_setting == pytest.approx(3.0 / (2.0 * 20.0), rel=1e-15)


def test_init_law():
    """Every entry N(0, σ₀²): the sample std within 6 standard errors; shapes (m_k, d), (m_k, d), (2, m_v, d)."""
    cfg = LiModelConfig(m_k=4, m_v=3, sigma0=0.02)
    p = init_params(cfg, 500, np.random.default_rng(0))
    assert p.W_Q.shape == (4, 500) and p.W_K.shape == (4, 500) and p.W_V.shape == (2, 3, 500)
    for a in p:
        assert abs(a.std() / 0.02 - 1) < 6 / math.sqrt(2 * a.size) and abs(a.mean()) < 6 * 0.02 / math.sqrt(a.size)


# ---------------------------------------------------------------------------------------------------------------
# Validation: configs, argument types, shapes
# ---------------------------------------------------------------------------------------------------------------

BAD_DATA = [
    ("s", dict(s=2000)), ("s", dict(d=10, s=12)), ("s", dict(s=0)), ("d", dict(d=1, s=1)), ("N", dict(N=0)),
    ("N", dict(N=2.0)), ("n_test", dict(n_test=-1)), ("sigma_p", dict(sigma_p=0.0)), ("sigma_p", dict(sigma_p=-1.0)),
    ("sigma_p", dict(sigma_p=float("nan"))), ("sigma_p", dict(sigma_p=float("inf"))), ("mu_norm", dict(mu_norm=0.0)),
    ("mu_norm", dict(mu_norm=float("nan"))), ("noise", dict(noise="gaussian")),
    ("signal_position", dict(signal_position="middle")), ("alpha", dict(alpha=-0.1)),
    ("alpha", dict(alpha=float("nan"))), ("flip_rate", dict(flip_rate=0.5)), ("flip_rate", dict(flip_rate=-0.1)),
    ("labels", dict(labels="uniform")), ("N", dict(labels="balanced", N=5)),
]
BAD_MODEL = [
    ("m_k", dict(m_k=0)), ("m_k", dict(m_k=1.5)), ("m_v", dict(m_v=-2)), ("sigma0", dict(sigma0=0.0)),
    ("sigma0", dict(sigma0=float("nan"))), ("c_L", dict(c_L="max")), ("logit_scale", dict(logit_scale=0.0)),
    ("logit_scale", dict(logit_scale=float("inf"))), ("trained", dict(trained=())),
    ("trained", dict(trained=("W_O",))), ("trained", dict(trained="W_Q")), ("trained", dict(trained=("W_Q", "W_Q"))),
]


@pytest.mark.parametrize("option,kwargs", BAD_DATA + BAD_MODEL)
def test_config_refuses_bad_input_naming_the_option(option, kwargs):
    cls = LiModelConfig if (option, kwargs) in BAD_MODEL else LiDataConfig
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    msg = str(info.value)
    assert option in msg and "\n" not in msg, msg


def test_config_round_trip_and_switches():
    for c in (LiDataConfig(noise="dense", alpha=0.1), LiModelConfig(trained=("W_V", "W_Q"), c_L="mean")):
        assert type(c).from_dict(c.to_dict()) == c
    assert LiModelConfig(trained=("W_V", "W_Q")).trained == ("W_Q", "W_V")          # canonical order
    assert LiModelConfig(trained=("W_V",)).frozen == {"W_Q", "W_K"}
    with pytest.raises(ValueError, match="unknown LiDataConfig option"):
        LiDataConfig.from_dict({"N": 4, "M": 3})


@pytest.mark.parametrize("call,match", [
    (lambda: make_dataset(LiDataConfig(), 0, np.random.default_rng(1)), "data_rng must be a numpy.random.Generator"),
    (lambda: make_dataset(LiDataConfig(), np.random.default_rng(0), None), "test_rng must be"),
    (lambda: sample(LiDataConfig(), 3, 42), "rng must be"),
    (lambda: sample(DataConfig(), 3, np.random.default_rng(0)), "cfg must be a LiDataConfig"),
    (lambda: sample(LiDataConfig(), 0, np.random.default_rng(0)), "n must be a positive integer"),
    (lambda: init_params(ModelConfig(), 10, np.random.default_rng(0)), "cfg must be a LiModelConfig"),
    (lambda: init_params(LiModelConfig(), 10, 0), "rng must be"),
    (lambda: init_params(LiModelConfig(), 0, np.random.default_rng(0)), "d must be a positive integer"),
])
def test_argument_types_are_checked(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_model_input_checks():
    params, X, y, cfg = REGIMES["O1_logits"]()
    with pytest.raises(ValueError, match="cfg.m_k"):
        forward(params, X, cfg.replace(m_k=4))
    with pytest.raises(ValueError, match=r"W_V must have shape \(2, m_v, d\)"):
        forward(params._replace(W_V=params.W_V[:, :1]), X, cfg)
    with pytest.raises(ValueError, match="token dimension"):
        forward(params, X[:, :, :-1], cfg)
    with pytest.raises(ValueError, match="labels y must be"):
        loss_and_grads(params, X, 2 * y, cfg)
    with pytest.raises(ValueError, match="cfg must be a LiModelConfig"):
        forward(params, X, ModelConfig())
    with pytest.raises(ValueError, match="NaN or inf"):
        forward(params, np.where(X == X.max(), np.nan, X), cfg)
    with pytest.raises(ValueError, match="overflowed"):
        forward(params._replace(W_V=params.W_V * 1e308), X * 1e10, cfg)
    assert np.array_equal(forward(params, X, cfg), forward_cache(params, X, cfg)[0])
