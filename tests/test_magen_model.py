"""The third setting's reference model (refvit.magen2025): gradients against finite differences, the Taylor
remainder, Hessian symmetry, the complex step and the per-sample sums; closed forms (uniform attention, the
two-token sigmoid form, the first GD step from zero); the data law; config validation; training through the shared
trainer; and mutation tests.

Tolerances. Finite differences: 1e-6 relative to the block's largest entry. In float64, central differences with
h = 1e-5 are accurate to ~1e-10 relative on O(1) problems (truncation O(h²), rounding O(ε/h)); a dropped softmax
term, a uniform-attention backward, a missing 1/n or a transposition gives errors of 1e-2 to 1. Model vs formulas:
1e-12 relative, the same real numbers summed in a different order (a few dozen O(1) terms: rounding ~1e-15).
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refvit.magen2025.model as mg_model
from refvit import gradcheck
from refvit.config import TrainConfig
from refvit.li2025 import LiModelConfig
from refvit.magen2025 import (MagenDataConfig, MagenModelConfig, MagenParams, MagenQKParams, formulas, forward,
                              init_params, loss_and_grads, make_dataset, sample, signals, train)
from refvit.magen2025.data import project_off
from refvit.magen2025.model import backward, forward_cache
from refvit.primitives import mean_loss
from refvit.streams import streams

from .magen_problems import DATA, GAUSS, REGIMES, problem

TOL_FD = 1e-6
TOL_TWO_PATHS = 1e-12


def _fd_blocks(fun_of_params, params):
    """Central-difference gradient of a scalar function of the params NamedTuple, block by block."""
    out = []
    for k in range(len(params)):
        arrays = [a.copy() for a in params]

        def fun(x, k=k):
            arrays[k] = x
            return fun_of_params(type(params)(*arrays))
        out.append(gradcheck.numerical_grad(fun, arrays[k].copy()))
    return type(params)(*out)


def _worst(a, b):
    return np.unravel_index(np.argmax(np.abs(a - b)), a.shape)


def _loss(params, X, y):
    return mean_loss(forward_cache(params, X)[0], y)


# ---------------------------------------------------------------------------------------------------------------
# Finite differences and the checks that need no second implementation
# ---------------------------------------------------------------------------------------------------------------

def test_regimes_are_what_they_claim():
    """O(1) scores, moved weights after GD, M = 3, the query form and the query form on M = 4 tokens: no regime hides
    behind uniform attention."""
    for name, make in REGIMES.items():
        params, X, _, _ = make()
        _, cache = forward_cache(params, X)
        assert 0.3 < np.abs(cache.Z).max() < 20, name
        assert np.abs(cache.S - 1 / X.shape[1]).max() > 0.1, name


@pytest.mark.parametrize("regime", list(REGIMES))
def test_vjp_matches_finite_differences(regime):
    """backward(df) with a random cotangent equals the FD gradient of Σ_i df_i f_i per block (math 16.13–16.17).

    A random df, not ones: the softmax VJP of an all-ones upstream gradient vanishes for wrong Jacobians too.
    """
    params, X, _, _ = REGIMES[regime]()
    df = np.random.default_rng(7).standard_normal(X.shape[0])
    analytic = backward(df, forward_cache(params, X)[1], X, params)
    numeric = _fd_blocks(lambda p: float(df @ forward_cache(p, X)[0]), params)
    for name, a, b in zip(params._fields, analytic, numeric):
        err = gradcheck.rel_error(a, b)
        assert err < TOL_FD, f"{regime} {name}: rel error {err:.2e} at {_worst(a, b)}"


@pytest.mark.parametrize("regime", list(REGIMES))
def test_loss_gradient_matches_finite_differences(regime):
    params, X, y, cfg = REGIMES[regime]()
    _, grads = loss_and_grads(params, X, y, cfg)
    numeric = _fd_blocks(lambda p: _loss(p, X, y), params)
    for name, a, b in zip(params._fields, grads, numeric):
        err = gradcheck.rel_error(a, b)
        assert err < TOL_FD, f"{regime} {name}: rel error {err:.2e} at {_worst(a, b)}"


@pytest.mark.parametrize("form", ["prompt", "query"])
def test_taylor_hessian_and_complex_step_at_default_sizes(form):
    """At the default sizes (d = 2000, N = 40), where entry-wise FD is too slow: the Taylor remainder of L_S falls as
    h² (slope 2 ± 0.2, gradcheck's default), the derivative of the gradient is symmetric (central differences at
    ε = 1e-5: ~1e-10 relative, 1e-6 as for FD), and the complex step of Σ df f equals ⟨grad, v⟩ (exact to rounding:
    1e-12 leaves three decades over ~1e-15)."""
    dc = MagenDataConfig(n_test=2)
    cfg = GAUSS.replace(sigma0=0.02) if form == "prompt" else MagenModelConfig(form="query", init="gaussian",
                                                                                   sigma0=0.15, d_h=4)
    params, X, y, _ = problem(cfg, dc, seed=5)
    assert np.abs(forward_cache(params, X)[1].Z).max() > 0.3                 # O(1) scores at this init
    _, grads = loss_and_grads(params, X, y, cfg)
    rng = np.random.default_rng(11)
    tay = gradcheck.taylor_check(lambda p: _loss(p, X, y), grads, params, rng, h_max=1e-1)
    assert tay.passed, f"Taylor slope {tay.slope:.3f} over {tay.decades:.1f} decades"
    a, b = gradcheck.hessian_symmetry_check(lambda p: loss_and_grads(p, X, y, cfg)[1], params, rng)
    assert gradcheck.rel_error(a, b) < TOL_FD, f"Hessian symmetry {a:.10g} vs {b:.10g}"
    df = rng.standard_normal(X.shape[0])
    gdf = backward(df, forward_cache(params, X)[1], X, params)
    a, b = gradcheck.complex_step_check(lambda p: np.sum(df * forward_cache(p, X.astype(complex))[0]), gdf, params,
                                        rng)
    assert abs(a - b) <= 1e-12 * max(abs(a), 1.0), f"complex step {a:.15g} vs {b:.15g}"


# ---------------------------------------------------------------------------------------------------------------
# Mutation tests: the checks can fail
# ---------------------------------------------------------------------------------------------------------------

def _broken_attention_backward(kind):
    """``attention_backward`` with one plausible mistake."""
    def attention_backward(df, cache, X):
        S, u = cache.S, cache.u
        if kind == "uniform attention":
            S = np.full_like(S, 1.0 / S.shape[1])                 # a backward that reuses the initial attention
        du = df[:, None] * S
        dv = np.einsum("nm,nmd->d", du, X)
        dS = df[:, None] * u
        dZ = S * dS if kind == "no off-diagonal" else S * (dS - (S * dS).sum(axis=-1, keepdims=True))
        return np.einsum("nm,nmd->d", dZ, X), dv
    return attention_backward


@pytest.mark.parametrize("kind,regime,block", [("no off-diagonal", "O1_scores", "p"),
                                               ("uniform attention", "O1_scores", "p"),
                                               ("uniform attention", "after_gd", "v"),
                                               ("no off-diagonal", "query_form", "W_K")])
def test_mutation_broken_backward_fails_the_check(kind, regime, block, monkeypatch):
    """A deliberately broken backward fails the same FD comparison the tests above rely on."""
    params, X, y, cfg = REGIMES[regime]()
    monkeypatch.setattr(mg_model, "attention_backward", _broken_attention_backward(kind))
    _, grads = loss_and_grads(params, X, y, cfg)
    monkeypatch.undo()
    numeric = _fd_blocks(lambda p: _loss(p, X, y), params)
    err = gradcheck.rel_error(getattr(grads, block), getattr(numeric, block))
    assert err > 1e-2, f"broken backward ({kind}) passed the FD check on {block} (error {err:.2e})"


def test_mutation_transposed_query_chain_fails(monkeypatch):
    """dW_Q = q daᵀ reshaped (a transposition inside (16.17)) fails the FD check of W_Q."""
    params, X, y, cfg = REGIMES["query_form"]()
    orig = mg_model.backward

    def bwd(df, cache, X_, p):
        g = orig(df, cache, X_, p)
        da = p.W_K @ mg_model.attention_backward(df, cache, X_)[0]
        return g._replace(W_Q=np.outer(p.q, da).T[::-1])
    monkeypatch.setattr(mg_model, "backward", bwd)
    _, grads = loss_and_grads(params, X, y, cfg)
    monkeypatch.undo()
    numeric = _fd_blocks(lambda p: _loss(p, X, y), params)
    assert gradcheck.rel_error(grads.W_Q, numeric.W_Q) > 1e-2


# ---------------------------------------------------------------------------------------------------------------
# Chain rule vs the per-sample sums
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("regime", list(REGIMES))
def test_per_sample_sums_equal_chain_rule(regime):
    params, X, y, cfg = REGIMES[regime]()
    _, chain = loss_and_grads(params, X, y, cfg)
    sums = formulas.gradients(params, X, y, cfg)
    for name, a, b in zip(params._fields, chain, sums):
        err = gradcheck.rel_error(a, b)
        assert err <= TOL_TWO_PATHS, f"{regime} {name}: chain rule vs per-sample sums rel error {err:.2e}"


problems = st.builds(
    lambda n, M, d, form, scale, seed: _random_problem(n, M, d, form, scale, seed),
    st.integers(1, 4), st.integers(2, 5), st.integers(3, 6), st.sampled_from(["prompt", "query"]),
    st.sampled_from([0.1, 0.5, 1.0]), st.integers(0, 2**32 - 1))


def _random_problem(n, M, d, form, scale, seed):
    """Gaussian tokens X (n, M, d) (not the data law), labels and N(0, scale²) params of either form."""
    rng = np.random.default_rng(seed)
    cfg = MagenModelConfig(form=form, init="gaussian", sigma0=scale, d_h=2)
    X = rng.standard_normal((n, M, d))
    y = rng.choice([-1.0, 1.0], size=n)
    return init_params(cfg, d, rng), X, y, cfg


@given(problems)
def test_per_sample_sums_equal_chain_rule_on_random_problems(problem_):
    params, X, y, cfg = problem_
    _, chain = loss_and_grads(params, X, y, cfg)
    sums = formulas.gradients(params, X, y, cfg)
    scale = max(1.0, float(np.abs(X).max()) ** 2) * max(1.0, max(float(np.abs(a).max()) for a in params)) ** 3
    for name, a, b in zip(params._fields, chain, sums):
        # absolute, against the size of the summands (|x|² |W|³ bounds each term): ε ≈ 2.2e-16 times a few dozen
        # terms; 1e-13 leaves room, while a wrong term is of the size of the gradient itself.
        assert np.abs(a - b).max() <= 1e-13 * scale, f"{name}: {np.abs(a - b).max():.2e}"


@settings(max_examples=20)
@given(problems)
def test_vjp_matches_finite_differences_on_random_problems(problem_):
    params, X, y, cfg = problem_
    df = np.random.default_rng(X.size).standard_normal(X.shape[0])
    analytic = backward(df, forward_cache(params, X)[1], X, params)
    numeric = _fd_blocks(lambda p: float(df @ forward_cache(p, X)[0]), params)
    scale = max(1.0, float(np.abs(forward_cache(params, X)[0]).max()), float(np.abs(X).max()) ** 2)
    for name, a, b in zip(params._fields, analytic, numeric):
        # absolute, against the output and token scale: FD rounding ε·|f|/h ≈ 1e-11 and truncation h²·|f'''| stay
        # far below 1e-7·scale; a wrong term is O(|∂f|), comparable to the scale at these O(1) sizes.
        assert np.abs(a - b).max() <= 1e-7 * scale, f"{name}: {np.abs(a - b).max():.2e} at {_worst(a, b)}"


# ---------------------------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("regime", ["O1_scores", "after_gd", "M3_tokens"])
def test_zero_prompt_gives_uniform_attention_and_the_closed_gradients(regime):
    """p = 0: s = 1/M exactly, f = mean_m u_m, and the gradients (math 16.24)."""
    params, X, y, cfg = REGIMES[regime]()
    params = params._replace(p=np.zeros_like(params.p))
    n, M, _ = X.shape
    f, cache = forward_cache(params, X)
    assert np.all(cache.S == 1.0 / M)                                         # exp(0)/Σ exp(0): exact
    u = np.einsum("nmd,d->nm", X, params.v)
    np.testing.assert_allclose(f, u.mean(axis=1), rtol=1e-13, atol=1e-15)      # a few ulps of an M-term sum
    _, g = loss_and_grads(params, X, y, cfg)
    gi = -y / (n * (1 + np.exp(y * f)))                                        # (math 16.12)
    dv = np.einsum("n,nmd->d", gi, X) / M
    dp = np.einsum("n,nm,nmd->d", gi, u - u.mean(axis=1, keepdims=True), X) / M
    assert gradcheck.rel_error(g.v, dv) < TOL_TWO_PATHS and gradcheck.rel_error(g.p, dp) < TOL_TWO_PATHS


@pytest.mark.parametrize("regime", ["O1_scores", "after_gd"])
def test_two_token_sigmoid_form(regime):
    """M = 2: f = σ(pᵀ(x₀ − x₁)) u₀ + (1 − σ) u₁ and ∇_p = Σ g_i s(1 − s)(u₀ − u₁)(x₀ − x₁) (math 16.23)."""
    from scipy.special import expit
    params, X, y, cfg = REGIMES[regime]()
    diff = X[:, 0] - X[:, 1]                                                   # (n, d)
    s = expit(diff @ params.p)
    u0, u1 = X[:, 0] @ params.v, X[:, 1] @ params.v
    f = s * u0 + (1 - s) * u1
    # another formula for the same numbers: ~1e-15 relative to max|u|
    assert np.abs(forward(params, X, cfg) - f).max() <= 1e-13 * max(1.0, np.abs(u0).max(), np.abs(u1).max())
    gi = -y / (X.shape[0] * (1 + np.exp(y * f)))
    dp = np.einsum("n,nd->d", gi * s * (1 - s) * (u0 - u1), diff)
    assert gradcheck.rel_error(loss_and_grads(params, X, y, cfg)[1].p, dp) < TOL_TWO_PATHS


@pytest.mark.parametrize("M", [2, 3])
def test_first_gd_step_from_zero_in_closed_form(M):
    """From p = v = 0 one GD step of the shared trainer moves only v, to η/(2nM) Σ y_i Σ_m x_im (math 16.21); the
    second step's p update is −η times (16.24) at v₁."""
    dc = DATA.replace(M=M, d=30)
    ds = make_dataset(dc, *streams(8)[:2])
    cfg = MagenModelConfig()
    p0 = init_params(cfg, dc.d)
    assert not np.any(p0.p) and not np.any(p0.v)
    eta = 3.0
    p1, _ = train(p0, ds, cfg, lr=eta, steps=1, test=False)
    want = formulas.first_gd_step(ds.X, ds.y, eta)
    assert np.all(p1.p == 0.0)                                               # ∇_p = 0 exactly at u = 0
    assert gradcheck.rel_error(p1.v, want.v) < TOL_TWO_PATHS                 # two summation orders
    p2, hist = train(p0, ds, cfg, lr=eta, steps=2, test=False)
    n = dc.N
    u = np.einsum("nmd,d->nm", ds.X, p1.v)
    gi = -ds.y / (n * (1 + np.exp(ds.y * u.mean(axis=1))))
    dp = np.einsum("n,nm,nmd->d", gi, u - u.mean(axis=1, keepdims=True), ds.X) / M
    assert gradcheck.rel_error(p2.p, -eta * dp) < TOL_TWO_PATHS
    assert np.all(hist["attn_signal_clean"][:2] == 1.0 / M)                   # uniform until p moves


# ---------------------------------------------------------------------------------------------------------------
# The data law
# ---------------------------------------------------------------------------------------------------------------

def _noise(ds_X, pos):
    n, M, _ = ds_X.shape
    keep = np.arange(M)[None, :] != pos[:, None]
    return ds_X[keep].reshape(n, M - 1, -1)


@settings(max_examples=30)
@given(st.integers(1, 8), st.integers(3, 40), st.integers(2, 4), st.sampled_from(["coordinate", "random"]),
       st.sampled_from(["fixed", "random"]), st.integers(0, 2**32 - 1))
def test_noise_is_orthogonal_to_both_signals_and_signal_tokens_follow_the_clean_label(N, d, M, sig, position, seed):
    cfg = MagenDataConfig(N=N, d=d, M=M, rho=2.5, sigma=1.7, signals=sig, signal_position=position, n_test=3,
                          flip_rate=0.3)
    ds = make_dataset(cfg, *streams(seed)[:2])
    mu = ds.mu
    # the signals: orthogonal with norm ρ (QR columns are orthonormal to ~1e-15)
    np.testing.assert_allclose(mu @ mu.T, 2.5 ** 2 * np.eye(2), rtol=0, atol=1e-13)
    xi = _noise(ds.X, ds.signal_pos)
    # ⟨ξ, μ_j⟩ / (‖ξ‖ρ): the projection's rounding is a few ε relative to the norms
    cos = np.abs(xi @ mu.T) / (np.linalg.norm(xi, axis=-1, keepdims=True) * 2.5)
    assert cos.max() < 1e-13
    sig_tok = ds.X[np.arange(N), ds.signal_pos]
    assert np.array_equal(sig_tok, np.where((ds.y_clean > 0)[:, None], mu[0], mu[1]))
    sig_test = ds.X_test[np.arange(3), ds.signal_pos_test]
    assert np.array_equal(sig_test, np.where((ds.y_test > 0)[:, None], mu[0], mu[1]))   # the test set is clean
    if position == "fixed":
        assert np.all(ds.signal_pos == 0) and np.all(ds.signal_pos_test == 0)


@pytest.mark.parametrize("sig", ["coordinate", "random"])
def test_noise_covariance_is_sigma2_times_the_projection(sig):
    """The sample covariance of 40000 noise tokens in d = 6 equals σ²(I − μ₁μ₁ᵀ/ρ² − μ₂μ₂ᵀ/ρ²) (math 16.2): each
    entry within 6 standard errors (the s.e. of a covariance entry is ≤ σ²√2/√n)."""
    cfg = MagenDataConfig(N=40000, d=6, rho=2.0, sigma=1.5, signals=sig, n_test=1)
    ds = make_dataset(cfg, *streams(12)[:2])
    xi = _noise(ds.X, ds.signal_pos)[:, 0]
    C = xi.T @ xi / xi.shape[0]
    P = np.eye(6) - ds.mu.T @ ds.mu / 4.0
    assert np.abs(C - 1.5 ** 2 * P).max() < 6 * 1.5 ** 2 * math.sqrt(2 / xi.shape[0])
    assert abs(np.trace(C) / (1.5 ** 2 * 4) - 1) < 6 * math.sqrt(2 / 4 / xi.shape[0])   # E‖ξ‖² = σ²(d−2)


def test_projection_is_the_covariance_map():
    """project_off is P: P² = P, Pμ_j = 0, and P applied to g is g − Σ⟨g, μ_j⟩μ_j/ρ² (one product: 1e-14)."""
    cfg = MagenDataConfig(d=9, rho=3.0, signals="random", N=2, n_test=1)
    mu = signals(cfg, np.random.default_rng(0))
    P = project_off(np.eye(9), mu, 3.0)
    np.testing.assert_allclose(P @ P, P, atol=1e-14)
    np.testing.assert_allclose(P @ mu.T, 0, atol=1e-13)
    np.testing.assert_allclose(P, np.eye(9) - mu.T @ mu / 9.0, atol=1e-14)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.45])
def test_exact_flips_count_and_keep_the_clean_signal(rate):
    cfg = MagenDataConfig(N=40, d=10, flip_rate=rate, flips="exact", n_test=5)
    ds = make_dataset(cfg, *streams(4)[:2])
    assert int(np.sum(ds.y != ds.y_clean)) == round(rate * cfg.N)


def test_iid_flips_follow_a_binomial_law():
    """flips="iid": over 200 datasets of N = 50 the number of flips has mean ηN and variance ηN(1 − η), each within
    6 standard errors; N = 1 can flip or not (the exact rule would never flip there)."""
    cfg = MagenDataConfig(N=50, d=5, flip_rate=0.2, n_test=1)
    counts = np.array([np.sum((ds := make_dataset(cfg, *streams(100, r)[:2])).y != ds.y_clean) for r in range(200)])
    mean, var = 0.2 * 50, 0.2 * 0.8 * 50
    assert abs(counts.mean() - mean) < 6 * math.sqrt(var / 200)
    assert abs(counts.var() / var - 1) < 6 * math.sqrt(2 / 199)
    one = [int(make_dataset(cfg.replace(N=1, flip_rate=0.45), *streams(7, r)[:2]).y[0] !=
               make_dataset(cfg.replace(N=1, flip_rate=0.45), *streams(7, r)[:2]).y_clean[0]) for r in range(60)]
    assert 0 < sum(one) < 60                                                  # P(all or none) < 2·0.55^60


def test_random_positions_are_uniform_over_the_tokens():
    ds = make_dataset(MagenDataConfig(N=3000, d=5, M=3, n_test=1), *streams(3)[:2])
    counts = np.bincount(ds.signal_pos, minlength=3)
    assert np.all(np.abs(counts - 1000) < 6 * math.sqrt(3000 * (1 / 3) * (2 / 3)))


def test_same_seed_same_data_and_init_does_not_change_data():
    cfg = MagenDataConfig(N=8, d=30, n_test=5, signals="random")
    a, b = streams(9), streams(9)
    init_params(GAUSS, cfg.d, a.init)                                         # consume the init stream first
    ds_a, ds_b = make_dataset(cfg, a.data, a.test), make_dataset(cfg, b.data, b.test)
    for x, z in zip(ds_a, ds_b):
        assert np.array_equal(x, z)
    assert not np.array_equal(ds_a.X, make_dataset(cfg, *streams(10)[:2]).X)


def test_large_d_is_cheap():
    """The noise never builds a d×d array: d = 10⁶ (a d×d float64 array would need 8 TB)."""
    X = sample(MagenDataConfig(d=10**6, N=2, n_test=1), 2, np.random.default_rng(0), np.eye(2, 10**6)).X
    assert X.shape == (2, 2, 10**6)


def test_snr_its_inverse_and_the_norm_ratio():
    """(math 16.4, 16.5): SNR = ρ/(σ√d); ρ_for_snr inverts it; ρ/(σ√(d−2)) = SNR·√(d/(d−2))."""
    c = MagenDataConfig(d=400, rho=3.0, sigma=2.0)
    assert c.snr == pytest.approx(3.0 / 40.0, rel=1e-15)
    assert MagenDataConfig.rho_for_snr(c.snr, 400, 2.0) == pytest.approx(3.0, rel=1e-15)
    assert c.norm_ratio == pytest.approx(c.snr * math.sqrt(400 / 398), rel=1e-15)


# ---------------------------------------------------------------------------------------------------------------
# Training through the shared trainer
# ---------------------------------------------------------------------------------------------------------------

def test_training_equals_a_plain_gd_loop_and_records_what_it_says():
    params, X, y, cfg = REGIMES["O1_scores"]()
    ds = make_dataset(DATA, *streams(0)[:2])
    final, hist = train(params, ds, cfg, lr=0.5, steps=3)
    p = params
    for _ in range(3):
        p = MagenParams(*(a - 0.5 * b for a, b in zip(p, formulas.gradients(p, ds.X, ds.y, cfg))))
    for a, b in zip(final, p):
        assert gradcheck.rel_error(a, b) < 1e-11                              # 3 steps of two summation orders
    f, cache = forward_cache(final, ds.X)
    att = cache.S[np.arange(DATA.N), ds.signal_pos]
    clean = ds.y == ds.y_clean
    assert hist["attn_signal_clean"][-1] == pytest.approx(att[clean].mean(), rel=1e-12)
    assert hist["attn_signal_flipped"][-1] == pytest.approx(att[~clean].mean(), rel=1e-12)
    assert hist["margin_min"][-1] == pytest.approx((ds.y * f).min(), rel=1e-12)
    assert hist["margin_flipped_min"][-1] == pytest.approx((ds.y * f)[~clean].min(), rel=1e-12)
    assert hist["margin_clean_min"][-1] == pytest.approx((ds.y * f)[clean].min(), rel=1e-12)
    assert np.any(ds.y[clean] < 0)                                         # so a dropped label would show
    assert hist.final_test_error == np.mean(np.sign(forward(final, ds.X_test, cfg)) != ds.y_test)


def test_frozen_blocks_stay_and_no_flips_give_nan_attention():
    params, _, _, cfg = REGIMES["query_form"]()
    ds = make_dataset(DATA.replace(flip_rate=0.0), *streams(4)[:2])
    cfg = cfg.replace(trained=("W_Q", "v"))
    final, hist = train(params, ds, cfg, config=TrainConfig(lr=0.1, steps=2, optimizer="signgd"))
    assert np.array_equal(final.W_K, params.W_K) and np.array_equal(final.q, params.q)
    assert not np.array_equal(final.W_Q, params.W_Q)
    assert np.all(np.isnan(hist["attn_signal_flipped"]))


# ---------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------

BAD_DATA = [
    ("N", dict(N=0)), ("N", dict(N=2.0)), ("d", dict(d=2)), ("M", dict(M=1)), ("n_test", dict(n_test=-1)),
    ("rho", dict(rho=0.0)), ("rho", dict(rho=float("nan"))), ("sigma", dict(sigma=-1.0)),
    ("sigma", dict(sigma=float("inf"))), ("signals", dict(signals="gaussian")),
    ("signal_position", dict(signal_position="middle")), ("flip_rate", dict(flip_rate=0.5)),
    ("flip_rate", dict(flip_rate=-0.1)), ("flips", dict(flips="bernoulli")),
]
BAD_MODEL = [
    ("form", dict(form="self")), ("init", dict(init="uniform")), ("sigma0", dict(sigma0=0.0)),
    ("d_h", dict(d_h=0)), ("init", dict(form="query")), ("trained", dict(trained=())),
    ("trained", dict(trained=("W_Q",))), ("trained", dict(trained="p")), ("trained", dict(trained=("p", "p"))),
]


@pytest.mark.parametrize("option,kwargs", BAD_DATA + BAD_MODEL)
def test_config_refuses_bad_input_naming_the_option(option, kwargs):
    cls = MagenModelConfig if (option, kwargs) in BAD_MODEL else MagenDataConfig
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    msg = str(info.value)
    assert option in msg and "\n" not in msg, msg


def test_config_round_trip_and_switches():
    for c in (MagenDataConfig(flips="exact", signals="random", M=3), MagenModelConfig(init="gaussian"),
              MagenModelConfig(form="query", init="gaussian", trained=("v", "q"))):
        assert type(c).from_dict(c.to_dict()) == c
    assert MagenModelConfig().trained == ("p", "v")
    assert MagenModelConfig(form="query", init="gaussian").frozen == {"q"}
    assert MagenModelConfig(form="query", init="gaussian", trained=("v", "W_Q")).trained == ("W_Q", "v")


@pytest.mark.parametrize("call,match", [
    (lambda: make_dataset(MagenDataConfig(), 0, np.random.default_rng(1)), "data_rng must be"),
    (lambda: sample(MagenDataConfig(), 0, np.random.default_rng(0), np.eye(2, 2000)), "n must be"),
    (lambda: init_params(LiModelConfig(), 10), "cfg must be a MagenModelConfig"),
    (lambda: init_params(GAUSS, 10, None), "rng must be"),
    (lambda: init_params(MagenModelConfig(), 0), "d must be a positive integer"),
])
def test_argument_types_are_checked(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_model_input_checks():
    params, X, y, cfg = REGIMES["O1_scores"]()
    with pytest.raises(ValueError, match="token dimension"):
        forward(params, X[:, :, :-1], cfg)
    with pytest.raises(ValueError, match="p must have the shape of v"):
        forward(params._replace(p=params.p[:-1]), X, cfg)
    with pytest.raises(ValueError, match="params must be"):
        forward(params, X, MagenModelConfig(form="query", init="gaussian"))
    with pytest.raises(ValueError, match="labels y must be"):
        loss_and_grads(params, X, 2 * y, cfg)
    with pytest.raises(ValueError, match="overflowed"):
        forward(params._replace(v=params.v * 1e300), X * 1e10, cfg)
    q = REGIMES["query_form"]()
    with pytest.raises(ValueError, match=r"W_Q and W_K must have shape \(d_h, d\)"):
        forward(q[0]._replace(W_K=q[0].W_K[:1]), q[1], q[3])
    assert isinstance(loss_and_grads(*q)[1], MagenQKParams)
