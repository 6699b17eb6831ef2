"""The numba attention core against the numpy reference, and the strict kernels against their own Python source.

Tolerance 1e-12 relative: the kernels sum dot products in a plain loop where numpy/BLAS uses blocked or pairwise
sums, which moves the last ~2-3 bits (observed ≤1e-14); a wrong index or a missing term is O(1e-2) or larger.
"""
import numpy as np
import pytest
from hypothesis import given

from refvit import Params, figure1_setting, init_params, loss_and_grads, make_dataset, streams, train
from refvit.jiang2024 import _kernels
from refvit.gradcheck import rel_error
from refvit.jiang2024.model import attention_backward, attention_forward, forward_cache, resolve_backend

from .strategies import problems, summand_scale

TOL = 1e-12


@given(problems)
def test_numba_matches_numpy_loss_and_grads(problem):
    params, X, y = problem
    loss_np, g_np = loss_and_grads(params, X, y, backend="numpy")
    loss_nb, g_nb = loss_and_grads(params, X, y, backend="numba")
    assert abs(loss_np - loss_nb) <= TOL * max(1.0, abs(loss_np))
    for name, a, b, sc in zip(Params._fields, g_np, g_nb, summand_scale(params, X)):
        # Random problems can make a gradient block far smaller than its summands (Σ_j G_lj = 0), so the bound
        # is relative to the summands' magnitude (ε times a few hundred terms), as in test_formulas.py.
        assert np.abs(a - b).max() <= 1e-13 * sc, f"{name}: {np.abs(a - b).max():.2e} vs scale {sc:.2e}"


@pytest.mark.parametrize("regime", ["paper_tiny_init", "O1_logits", "after_50_steps"])
def test_numba_matches_numpy_in_each_regime(regime):
    from .problems import REGIMES
    params, X, y = REGIMES[regime]()
    loss_np, g_np = loss_and_grads(params, X, y, backend="numpy")
    loss_nb, g_nb = loss_and_grads(params, X, y, backend="numba")
    assert abs(loss_np - loss_nb) <= TOL * max(1.0, abs(loss_np))
    for name, a, b in zip(Params._fields, g_np, g_nb):
        assert rel_error(a, b) <= TOL, f"{name}: {rel_error(a, b):.2e}"


@pytest.mark.skipif(not hasattr(_kernels._attention_forward, "py_func"),
                    reason="NUMBA_DISABLE_JIT=1: the kernels are their Python source, nothing to compare")
@given(problems)
def test_kernels_equal_their_python_source_bitwise(problem):
    """A strict (no fastmath) njit loop performs the same IEEE operations as its .py_func: bit-identical."""
    params, X, y = problem
    _, cache = forward_cache(params, X)
    Q, K, v = cache.Q, cache.K, cache.v
    for a, b in zip(_kernels._attention_forward(Q, K, v), _kernels._attention_forward.py_func(Q, K, v)):
        np.testing.assert_array_equal(a, b)
    df = np.random.default_rng(0).standard_normal(X.shape[0])
    S = cache.S
    for a, b in zip(_kernels._attention_backward(df, S, v, Q, K),
                    _kernels._attention_backward.py_func(df, S, v, Q, K)):
        np.testing.assert_array_equal(a, b)


def test_attention_core_parity_on_figure1_cell():
    """Paper-sized check of the core alone: N=20, M=16, d_h=512, at O(1) logits."""
    data_cfg, model_cfg, _ = figure1_setting(N=20, mu_norm=60.0, n_test=2)
    rng = streams(5)
    data = make_dataset(data_cfg, rng.data, rng.test)
    params = init_params(model_cfg.replace(init_scale=1.0), data_cfg.d, rng.init)
    _, cache = forward_cache(params, data.X)
    outs_np = attention_forward(cache.Q, cache.K, cache.v)
    outs_nb = _kernels.attention_forward(cache.Q, cache.K, cache.v)
    for a, b in zip(outs_np, outs_nb):
        assert rel_error(a, b) <= TOL
    df = np.random.default_rng(1).standard_normal(20)
    for a, b in zip(attention_backward(df, cache.S, cache.v, cache.Q, cache.K),
                    _kernels.attention_backward(df, cache.S, cache.v, cache.Q, cache.K)):
        assert rel_error(a, b) <= TOL


def test_training_trajectories_agree_across_backends():
    """20 GD steps: the per-step rounding differences do not grow past 1e-10 over a short run."""
    data_cfg, model_cfg, _ = figure1_setting(N=4, mu_norm=40.0, n_test=2)
    data_cfg = data_cfg.replace(d=64, M=6)
    rng = streams(2)
    data = make_dataset(data_cfg, rng.data, rng.test)
    params = init_params(model_cfg.replace(d_h=16, d_v=8, init_scale=2.0), data_cfg.d, rng.init)
    p_np, h_np = train(params, data.X, data.y, lr=0.1, steps=20, backend="numpy")
    p_nb, h_nb = train(params, data.X, data.y, lr=0.1, steps=20, backend="numba")
    # 1e-10: per-step differences of ~1e-15 compound over 20 steps of a smooth map (observed ~1e-14).
    assert rel_error(h_np["train_loss"], h_nb["train_loss"]) < 1e-10
    for a, b in zip(p_np, p_nb):
        assert rel_error(a, b) < 1e-10


def test_auto_backend_respects_disable_jit(monkeypatch):
    monkeypatch.setenv("NUMBA_DISABLE_JIT", "1")
    assert resolve_backend("auto") == "numpy"
    monkeypatch.setenv("NUMBA_DISABLE_JIT", "0")
    assert resolve_backend("auto") == "numba"
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("cuda")
