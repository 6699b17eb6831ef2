"""Every gradient block against central finite differences, in three regimes, plus a mutation test.

Tolerance 1e-6 (relative to the block's largest entry): in float64, central differences with h = 1e-5 are accurate
to ~1e-10 relative on O(1) problems (truncation O(h²), rounding O(ε/h)); a missing 1/M, a transposition or a dropped
Jacobian term gives errors of 1e-2 to 1. Observed: 6e-12 to 1e-9 at O(1) logits and after 50 steps; at the paper's
tiny init ∇W_Q and ∇W_K are ~1e-4 of the loss scale, so the loss's rounding (ε·L/h ≈ 1e-11 absolute) shows as
~1e-7 relative there — still a decade below the tolerance and five above the mutation test's errors.
"""
import numpy as np
import pytest

import refvit.jiang2024.model as model
from refvit import Params, figure1_setting, gradcheck, init_params, loss_and_grads, make_dataset, streams
from refvit.jiang2024.model import backward, forward_cache, mean_loss

from .problems import REGIMES

TOL = 1e-6


def test_regimes_are_what_they_claim():
    """The three regimes really differ: tiny logits, O(1) logits, and moved parameters."""
    zmax = {}
    for name, make in REGIMES.items():
        params, X, _ = make()
        zmax[name] = np.abs(forward_cache(params, X)[1].Z).max()
    assert zmax["paper_tiny_init"] < 1e-2
    assert 0.5 < zmax["O1_logits"] < 50
    assert 0.5 < zmax["after_50_steps"] < 50


def _fd_blocks(fun_of_params, params):
    """Central-difference gradient of a scalar function of Params, block by block."""
    out = []
    for k in range(4):
        arrays = [a.copy() for a in params]

        def fun(x, k=k):
            arrays[k] = x
            return fun_of_params(Params(*arrays))
        out.append(gradcheck.numerical_grad(fun, arrays[k].copy()))
    return out


@pytest.mark.parametrize("regime", list(REGIMES))
def test_vjp_matches_finite_differences(regime):
    """backward(df) with a random cotangent df equals the FD gradient of Σ_n df_n f_n, for every block.

    A random df, not ones: with df = 1 the softmax part of a wrong Jacobian can vanish as well (STYLE §9).
    """
    params, X, y = REGIMES[regime]()
    df = np.random.default_rng(1).standard_normal(X.shape[0])
    f, cache = forward_cache(params, X)
    analytic = backward(df, cache, params, X)
    numeric = _fd_blocks(lambda p: float(df @ forward_cache(p, X)[0]), params)
    for name, a, b in zip(Params._fields, analytic, numeric):
        err = gradcheck.rel_error(a, b)
        assert err < TOL, f"{regime} {name}: rel error {err:.2e}, worst index {np.unravel_index(np.argmax(abs(a-b)), a.shape)}"


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_loss_gradient_matches_finite_differences(regime, backend):
    params, X, y = REGIMES[regime]()
    _, grads = loss_and_grads(params, X, y, backend=backend)
    numeric = _fd_blocks(lambda p: mean_loss(forward_cache(p, X)[0], y), params)
    for name, a, b in zip(Params._fields, grads, numeric):
        err = gradcheck.rel_error(a, b)
        assert err < TOL, f"{regime} {name}: rel error {err:.2e}"


def test_directional_check_on_paper_sized_block():
    """One random direction at the Figure-1 sizes (d=1024, d_h=512), where entry-wise FD would be too slow."""
    data_cfg, model_cfg, _ = figure1_setting(N=4, mu_norm=60.0, n_test=2)
    rng = streams(3)
    data = make_dataset(data_cfg, rng.data, rng.test)
    params = init_params(model_cfg.replace(init_scale=1.0), data_cfg.d, rng.init)   # ÷1: non-trivial attention
    _, grads = loss_and_grads(params, data.X, data.y)
    for k, name in enumerate(Params._fields):
        def fun(x, k=k):
            p = list(params)
            p[k] = x
            return mean_loss(forward_cache(Params(*p), data.X)[0], data.y)
        a, b = gradcheck.directional_check(fun, grads[k], params[k], np.random.default_rng(k))
        # Scalar comparison; 1e-6 as above (the observed value is ~1e-9).
        assert gradcheck.rel_error(a, b) < TOL, f"{name}: analytic {a:.10g} vs numeric {b:.10g}"


def _broken_backward(df, S, v, Q, K):
    """A plausible bug: the softmax Jacobian without its off-diagonal term (dZ = S ⊙ dS)."""
    M = Q.shape[1]
    dv = df[:, None] * S.sum(axis=1) / M
    dZ = S * np.broadcast_to((df[:, None] * v / M)[:, None, :], S.shape)
    return dZ @ K, dZ.transpose(0, 2, 1) @ Q, dv


@pytest.mark.parametrize("regime", list(REGIMES))
def test_mutation_broken_backward_fails_the_check(regime, monkeypatch):
    """The check can fail: a backward missing the softmax off-diagonal term is caught in every regime."""
    params, X, y = REGIMES[regime]()
    monkeypatch.setattr(model, "attention_backward", _broken_backward)
    _, grads = loss_and_grads(params, X, y, backend="numpy")
    monkeypatch.undo()
    numeric = _fd_blocks(lambda p: mean_loss(forward_cache(p, X)[0], y), params)
    worst = max(gradcheck.rel_error(grads[k], numeric[k]) for k in (0, 1))
    assert worst > 1e-2, f"broken backward passed the check in {regime} (error {worst:.2e})"


def test_numerical_grad_restores_input_and_matches_closed_form():
    x = np.array([0.3, -1.2, 2.0])
    x0 = x.copy()
    g = gradcheck.numerical_grad(lambda z: float(np.sum(np.sin(z) * z**2)), x)
    np.testing.assert_array_equal(x, x0)
    exact = np.cos(x) * x**2 + 2 * x * np.sin(x)
    assert gradcheck.rel_error(g, exact) < 1e-9   # central FD error ~h² = 1e-10 for these O(1) derivatives


def test_rel_error_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        gradcheck.rel_error(np.zeros(2), np.zeros(3))
