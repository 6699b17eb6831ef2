"""Every gradient block against central finite differences, in three regimes, plus a mutation test.

Tolerance 1e-6 (relative to the block's largest entry): in float64, central differences with h = 1e-5 are accurate
to ~1e-10 relative on O(1) problems (truncation O(h²), rounding O(ε/h)); a missing 1/M, a transposition or a dropped
Jacobian term gives errors of 1e-2 to 1. Observed: 6e-12 to 1e-9 at O(1) logits and after 50 steps; at the paper's
tiny init ∇W_Q and ∇W_K are ~1e-4 of the loss scale, so the loss's rounding (ε·L/h ≈ 1e-11 absolute) shows as
~1e-7 relative there — still a decade below the tolerance and five above the mutation test's errors.

The checks that need no second implementation (second half of the file) have tolerances of their own, each stated
where it is used: the Taylor slope within 0.2 of 2, the two Hessian estimates within 1e-6 relative, the complex
step within 1e-13 of ‖∇L‖. Each is run on the model at O(1) logits and on four broken gradients built here: a
transposed block, a mis-signed block, a missing factor 1/M, and a dropped softmax term.
"""
import numpy as np
import pytest

import refvit.jiang2024.model as model
from refvit import (DataConfig, ModelConfig, Params, figure1_setting, gradcheck, init_params, loss_and_grads,
                    make_dataset, streams)
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


# --- checks with no second implementation: Taylor remainder, Hessian symmetry, complex step ----------------------

def square_problem():
    """O(1) logits with d = d_h = d_v, so that a transposed gradient block has the block's shape (max |Z| ≈ 7.6)."""
    data_cfg = DataConfig(N=4, M=4, d=6, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3, n_test=2)
    rng = streams(0)
    data = make_dataset(data_cfg, rng.data, rng.test)
    return init_params(ModelConfig(d_h=6, d_v=6, init="gaussian", sigma0=0.5), 6, rng.init), data.X, data.y


def _loss(X, y):
    return lambda p: mean_loss(forward_cache(p, X)[0], y)


def _complex_loss(X, y):
    """The model's loss with log1p(exp(−z)) for logaddexp (which refuses complex input); fine for O(1) margins.
    The forward pass itself is complex-safe: its softmax subtracts the row max, which cancels (docs/math.md (3.5))."""
    return lambda p: np.mean(np.log1p(np.exp(-y * forward_cache(p, X)[0])))


def _grad(X, y):
    return lambda p: loss_and_grads(p, X, y, backend="numpy")[1]


def _norm(g) -> float:
    return float(np.sqrt(sum(np.sum(b * b) for b in g)))


def _dropped_softmax_term(monkeypatch):
    monkeypatch.setattr(model, "attention_backward", _broken_backward)


# Each break turns the correct gradient function into a wrong one; M = 4 tokens in both problems.
BREAKS = {
    "transposed_W_Q": lambda g: g._replace(W_Q=g.W_Q.T.copy()),            # (d, d_h) block written as (d_h, d)ᵀ
    "mis_signed_W_K": lambda g: g._replace(W_K=-g.W_K),
    "missing_1/M_in_dv": lambda g: g._replace(W_V=4 * g.W_V, w_O=4 * g.w_O),  # ā = Sᵀ𝟙 without its 1/M (math 4.2)
    "dropped_softmax_term": lambda g: g,                                     # patched in attention_backward
}


def _broken(name, X, y, monkeypatch):
    if name == "dropped_softmax_term":
        _dropped_softmax_term(monkeypatch)
    grad = _grad(X, y)
    return lambda p: BREAKS[name](grad(p))


def _blockwise(fun_of_params, params, k):
    """fun_of_params as a function of block k alone (the other blocks fixed), for per-block checks."""
    def fun(a):
        p = list(params)
        p[k] = a
        return fun_of_params(Params(*p))
    return fun


BLOCKS = [*Params._fields, "all"]


@pytest.mark.parametrize("problem", ["O1_logits", "square"])
@pytest.mark.parametrize("block", BLOCKS)
def test_taylor_remainder_shrinks_as_h_squared(problem, block):
    """r(h) = L(θ + hv) − L(θ) − h⟨∇L, v⟩ falls as h² over the two decades above rounding, per block and for all.

    Tolerance |slope − 2| ≤ 0.2 (the default): the O(h³) term moves the fitted slope off 2 along directions of small
    curvature; observed within 0.07 of 2 over 40 random directions per block and for all four together (200 per
    problem) at O(1) logits, after 50 steps and on the square problem. A wrong gradient pulls it towards 1
    (1.00 for the breaks below). At the paper's tiny init the W_Q, W_K curvature is so small that r(h) reaches
    rounding before two decades: the check then refuses to pass, which is why it runs at O(1) logits.
    """
    params, X, y = REGIMES["O1_logits"]() if problem == "O1_logits" else square_problem()
    L, g = _loss(X, y), _grad(X, y)(params)
    for seed in range(3):
        if block == "all":
            t = gradcheck.taylor_check(L, g, params, np.random.default_rng(seed))
        else:
            k = Params._fields.index(block)
            t = gradcheck.taylor_check(_blockwise(L, params, k), g[k], params[k], np.random.default_rng(seed))
        assert t.passed, f"{block}, direction {seed}: slope {t.slope:.3f} over {t.decades} decades, r = {t.r[t.used]}"


@pytest.mark.parametrize("problem", ["O1_logits", "square"])
@pytest.mark.parametrize("block", BLOCKS)
def test_hessian_seen_through_the_gradient_is_symmetric(problem, block):
    """⟨u, ∇L(θ+εv) − ∇L(θ−εv)⟩ = ⟨v, ∇L(θ+εu) − ∇L(θ−εu)⟩ for random u, v, within a block and across all four.

    Tolerance 1e-6 relative: both sides are central differences of O(1) gradients at ε = 1e-5, accurate to ~1e-10
    (observed 4e-12 to 2.4e-9); the breaks below give 2e-3 to 2.
    """
    params, X, y = REGIMES["O1_logits"]() if problem == "O1_logits" else square_problem()
    grad = _grad(X, y)
    for seed in range(3):
        if block == "all":
            a, b = gradcheck.hessian_symmetry_check(grad, params, np.random.default_rng(seed))
        else:
            k = Params._fields.index(block)
            a, b = gradcheck.hessian_symmetry_check(lambda x: _blockwise(grad, params, k)(x)[k], params[k],
                                                    np.random.default_rng(seed))
        assert gradcheck.rel_error(a, b) < 1e-6, f"{block}, seed {seed}: uᵀHv {a:.12g} vs vᵀHu {b:.12g}"


@pytest.mark.parametrize("regime", list(REGIMES))
def test_complex_step_confirms_the_model_gradient_to_rounding(regime):
    """Im L(θ + i·1e-30·v)/1e-30 = ⟨∇L, v⟩ with no subtraction, so the two agree to rounding: 1e-13 of ‖∇L‖‖v‖
    (observed ≤ 6e-17; a finite difference could not go below ~1e-10). Also the VJP of f with a random cotangent."""
    params, X, y = REGIMES[regime]()
    g = _grad(X, y)(params)
    for seed in range(3):
        a, b = gradcheck.complex_step_check(_complex_loss(X, y), g, params, np.random.default_rng(seed))
        assert abs(a - b) <= 1e-13 * _norm(g), f"seed {seed}: analytic {a:.17g} vs complex step {b:.17g}"
    df = np.random.default_rng(9).standard_normal(X.shape[0])
    vjp = backward(df, forward_cache(params, X)[1], params, X)
    a, b = gradcheck.complex_step_check(lambda p: df @ forward_cache(p, X)[0], vjp, params, np.random.default_rng(0))
    assert abs(a - b) <= 1e-13 * _norm(vjp), f"VJP: analytic {a:.17g} vs complex step {b:.17g}"


@pytest.mark.parametrize("name", list(BREAKS))
def test_each_new_check_fails_on_a_broken_gradient(name, monkeypatch):
    """A transposed, mis-signed, mis-scaled block or a dropped softmax term fails all three checks (square problem).

    The thresholds are those the passing tests use; the margins are wide (observed over seeds 0–2): slope 1.00
    against 2 ± 0.2, asymmetry ≥ 2.2e-3 against 1e-6, complex-step error ≥ 6.7e-4 of ‖∇L‖ against 1e-13.
    """
    params, X, y = square_problem()
    grad = _broken(name, X, y, monkeypatch)
    g = grad(params)
    for seed in range(3):
        t = gradcheck.taylor_check(_loss(X, y), g, params, np.random.default_rng(seed))
        assert not t.passed and t.slope < 1.5, f"{name} passed the Taylor check: slope {t.slope:.3f}"
        a, b = gradcheck.hessian_symmetry_check(grad, params, np.random.default_rng(seed))
        assert gradcheck.rel_error(a, b) > 1e-6, f"{name} passed the symmetry check: {a:.12g} vs {b:.12g}"
        a, b = gradcheck.complex_step_check(_complex_loss(X, y), g, params, np.random.default_rng(seed))
        assert abs(a - b) > 1e-13 * _norm(g), f"{name} passed the complex-step check: {a:.17g} vs {b:.17g}"


def test_a_factor_common_to_every_block_is_invisible_to_the_symmetry_check_only():
    """What the docstring promises: 2·∇L has a symmetric derivative (it is the gradient of 2L), so only the Taylor
    check (slope → 1) and the complex step catch a factor shared by all blocks."""
    params, X, y = square_problem()
    grad = _grad(X, y)
    a, b = gradcheck.hessian_symmetry_check(lambda p: Params(*(2 * q for q in grad(p))), params,
                                            np.random.default_rng(0))
    assert gradcheck.rel_error(a, b) < 1e-6     # symmetric to ~1e-10, as for the true gradient
    t = gradcheck.taylor_check(_loss(X, y), Params(*(2 * q for q in grad(params))), params, np.random.default_rng(0))
    assert not t.passed and t.slope < 1.5, t.slope


# --- the checks on toy functions with closed-form gradients ---------------------------------------------------------

def _toy(x):
    """A complex-safe function of a tuple (a (3,), B (3, 2)): log-sum-exp with its max subtracted, a product, and a
    complex-safe |·|, np.where(z.real < 0, −z, z)."""
    a, B = x
    m = a.max()                                              # the shift cancels, so its non-analytic value is harmless
    lse = m + np.log(np.sum(np.exp(a - m)))
    return lse + np.sum(np.sin(a) @ B) + np.sum(np.where(B.real < 0, -B, B) ** 3)


def _toy_grad(x):
    """The closed form of ∇_toy: (softmax(a) + cos(a)·B𝟙, sin(a)𝟙ᵀ + 3 B|B|)."""
    a, B = x
    e = np.exp(a - a.max())
    return e / e.sum() + np.cos(a) * B.sum(axis=1), np.outer(np.sin(a), np.ones(2)) + 3 * B * np.abs(B)


TOY_X = (np.array([0.3, -1.2, 2.0]), np.array([[0.5, -0.7], [1.1, 0.2], [-0.4, 0.9]]))


def test_complex_step_on_a_toy_function_against_its_closed_form():
    """Tuple input; the complex step agrees with the closed form to 1e-13 of ‖∇‖ (rounding only; observed ~1e-16).
    The same function with np.abs instead of the complex-safe |·| is wrong by O(1): np.abs drops the imaginary
    part, as the docstring warns."""
    g = _toy_grad(TOY_X)
    for seed in range(5):
        a, b = gradcheck.complex_step_check(_toy, g, TOY_X, np.random.default_rng(seed))
        assert abs(a - b) <= 1e-13 * _norm(g), f"seed {seed}: {a:.17g} vs {b:.17g}"

    def with_np_abs(x):
        return _toy(x) - np.sum(np.where(x[1].real < 0, -x[1], x[1]) ** 3) + np.sum(np.abs(x[1]) ** 3)
    a, b = gradcheck.complex_step_check(with_np_abs, g, TOY_X, np.random.default_rng(0))
    assert abs(a - b) > 1e-2 * _norm(g), "np.abs looked complex-safe"
    with pytest.raises(TypeError):
        gradcheck.complex_step_check(lambda x: np.sum(np.logaddexp(0.0, x[0])), g, TOY_X, np.random.default_rng(0))


def test_taylor_and_symmetry_on_a_toy_function_with_tuple_input():
    """The closed-form gradient passes both checks; a gradient with B's block scaled by 1.01 fails both."""
    t = gradcheck.taylor_check(_toy, _toy_grad(TOY_X), TOY_X, np.random.default_rng(0))
    assert t.passed, t       # slope within 0.2 of 2 over two decades, as for the model (observed 2.0002)
    a, b = gradcheck.hessian_symmetry_check(_toy_grad, TOY_X, np.random.default_rng(0))
    assert gradcheck.rel_error(a, b) < 1e-6, (a, b)     # as for the model: ~1e-10 from central differences

    def off(x):
        ga, gB = _toy_grad(x)
        return ga, 1.01 * gB
    assert not gradcheck.taylor_check(_toy, off(TOY_X), TOY_X, np.random.default_rng(0)).passed
    a, b = gradcheck.hessian_symmetry_check(off, TOY_X, np.random.default_rng(0))
    assert gradcheck.rel_error(a, b) > 1e-6, (a, b)


def test_fun_and_grad_fun_receive_the_structure_of_x():
    """A NamedTuple x reaches fun and grad_fun as that NamedTuple (users read blocks by name); all three checks pass
    on a closed-form gradient, with the tolerances above."""
    rng = np.random.default_rng(5)
    x = Params(*(rng.standard_normal(s) for s in ((3, 2), (3, 2), (3, 2), (2,))))

    def fun(p):
        return np.sum(p.W_Q * p.W_K) + np.sum(np.sin(p.W_V)) + np.sum(p.w_O ** 3)

    def grad(p):
        return Params(p.W_K, p.W_Q, np.cos(p.W_V), 3 * p.w_O ** 2)
    assert gradcheck.taylor_check(fun, grad(x), x, np.random.default_rng(0)).passed
    a, b = gradcheck.hessian_symmetry_check(grad, x, np.random.default_rng(0))
    assert gradcheck.rel_error(a, b) < 1e-6
    a, b = gradcheck.complex_step_check(fun, grad(x), x, np.random.default_rng(0))
    assert abs(a - b) <= 1e-13 * _norm(grad(x))


def test_new_checks_refuse_non_float64_input_and_mismatched_gradients():
    with pytest.raises(ValueError, match="float64"):
        gradcheck.taylor_check(np.sum, np.ones(3), np.ones(3, dtype=np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="shapes of x"):
        gradcheck.complex_step_check(np.sum, (np.ones(3),), (np.ones(3), np.ones(2)), np.random.default_rng(0))


def test_the_documented_example_runs_passes_and_is_shown_verbatim(capsys):
    """examples/gradient_checks.py exits 0 (all three checks pass on our loss), prints one line per check, and
    docs/verification.md shows the file unchanged, so the two cannot drift."""
    from .test_examples import ROOT, fenced_blocks, load_example
    assert load_example("gradient_checks").main() == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == [
        "Taylor remainder", "Hessian symmetry", "complex step"]
    text = (ROOT / "examples" / "gradient_checks.py").read_text()
    assert text in fenced_blocks((ROOT / "docs" / "verification.md").read_text())
