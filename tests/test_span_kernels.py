"""The span step's fused numba kernel (``_kernels.span_step``, core="numba") against the numpy path of the same step
(core="numpy"), and the stacked coordinates of training.

The two paths gather the same rows and make the same BLAS calls for the logits, so Q, K, v and Z are equal to the
bit; the softmax and its backward differ in rounding only (numpy's vectorized exp and pairwise sums against one libm
exp per entry and running sums). The numpy path itself is checked against the dense gradient in tests/test_span.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from refvit.config import TrainConfig
from refvit.jiang2024 import _kernels
from refvit.jiang2024.config import DataConfig, ModelConfig, figure1_setting
from refvit.jiang2024.data import make_dataset
from refvit.jiang2024.init import init_params
from refvit.jiang2024.span import SpanObjective, _side_by_side
from refvit.optimizers import Optimizer, _blocks
from refvit.primitives import halves_of_one, merge_halves
import refvit.jiang2024.tokens as tokens_mod
from refvit.streams import streams
from refvit.trainer import run


def problem(data_cfg, model_cfg, seed=0):
    rng = streams(seed, 9)
    data = make_dataset(data_cfg, rng.data, rng.test)
    return data, init_params(model_cfg, data_cfg.d, rng.init)


def paths(p0, X, y, **kw):
    """The same objective twice: through the fused kernel and through the numpy path."""
    return SpanObjective(p0, X, y, core="numba", **kw), SpanObjective(p0, X, y, core="numpy", **kw)


def moved_state(obj, scale, seed=3):
    """A non-zero state in the training layout (A_Q, A_K halves of one buffer), logits O(1)."""
    rng = np.random.default_rng(seed)
    st = obj.fresh_state()
    for a in st[:3]:
        a[...] = scale * rng.standard_normal(a.shape)
    return st


def run_kernel(fn, obj, UcA, v) -> list:
    """``span_step`` (compiled or its Python, ``fn``) on the training set of ``obj`` with UcA (n_u, 2 d_h) and value
    scores v (n, M): its outputs Q, K, Z, S, abar, f, dv, G, each in an array of its own."""
    (n, M), d_h, n_u = obj.tokens.index.shape, obj.QKW0.shape[1] // 2, obj.tokens.n_unique
    out = [np.empty((n, M, d_h)), np.empty((n, M, d_h)), np.empty((n, M, M)), np.empty((n, M, M)),
           np.empty((n, M)), np.empty(n), np.empty((n, M)), np.empty((n_u, 2 * d_h))]
    fn(obj.QKW0, UcA, obj.tokens.index, v, obj.y, float(n), obj._first, *out)
    return out


# Relative to each array's largest entry. Measured: ≤ 1.4e-15 (exp to 1 ulp, sums of M = 16 terms in another
# order, then dQ, dK rows summed over M products); a wrong term or a missed row moves an entry by O(1e-2).
ROUNDING = 1e-13


def assert_close(x, z, what):
    assert np.abs(x - z).max() <= ROUNDING * np.abs(z).max(), f"{what}: {np.abs(x - z).max():.2e}"


def assert_same_evaluation(a, b):
    assert abs(a.loss - b.loss) <= ROUNDING * b.loss
    for name, x, z in zip(("Γ_Q", "Γ_K", "Γ_V", "∇w_O"), a.grads, b.grads):
        assert_close(x, z, name)
    assert_close(a.f, b.f, "f")
    for name, x, z in zip(a.cache._fields, a.cache, b.cache):
        if name in ("Q", "K", "v", "Z"):             # the same gathers and BLAS calls: the same bits
            np.testing.assert_array_equal(x, z, err_msg=f"cache {name}")
        else:
            assert_close(x, z, f"cache {name}")


def small(other_tokens="weak_gaussian", **model):
    data_cfg = DataConfig(N=6, M=4, d=40, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3, other_tokens=other_tokens, n_test=2)
    return problem(data_cfg, ModelConfig(**{"d_h": 5, "d_v": 3, "init": "gaussian", "sigma0": 0.3, **model}))


@pytest.mark.parametrize("case", ["figure1", "zero_tokens", "orthonormal", "many_repeated"])
def test_fused_kernel_matches_the_numpy_path(case, monkeypatch):
    """At A = 0 and at a moved state: loss, every gradient block, f, the whole cache and the test outputs."""
    kw = {}
    if case == "figure1":
        data_cfg, model_cfg, _ = figure1_setting(N=20, mu_norm=80.0, n_test=2)
        data, p0 = problem(data_cfg, model_cfg)
        scale = 1e-4                                  # ‖x‖ ≈ 128: logits O(1) after U_c·A
    else:
        data, p0 = small("zero" if case == "zero_tokens" else "weak_gaussian")
        scale = 0.05
    X = data.X
    if case == "orthonormal":
        kw["basis"] = "orthonormal"
    if case == "many_repeated":                       # more repeated tokens than REPEATED_MAX: scatter uses Eᵀ
        monkeypatch.setattr(tokens_mod, "REPEATED_MAX", 2)
        X = X.copy()
        X[3:, 1] = X[:3, 1]                           # three noise tokens shared by two samples each
    for moved in (False, True):                       # a fresh pair each time: the first test call is its own path
        fast, slow = paths(p0, X, data.y, X_test=data.X_test, y_test=data.y_test, **kw)
        if case == "many_repeated":
            assert fast.tokens.first is None and int(np.sum(fast.tokens.counts > 1)) == 5
        if case == "zero_tokens":
            assert np.any(fast.tokens.index < 0)
        st = moved_state(fast, scale) if moved else fast.fresh_state()
        assert_same_evaluation(fast.value_and_grad(st), slow.value_and_grad(st))
        # moved: the first call is the single evaluation (every non-zero test token, ``tokens.all_tokens``), the
        # second goes through the cached X_test·W(0), X_test·P; at A = 0 both go through the cached products
        for _ in range(2):
            assert_close(fast.test_outputs(st), slow.test_outputs(st), "test outputs")


@pytest.mark.skipif(not hasattr(_kernels.span_step, "py_func"), reason="numba JIT disabled: nothing compiled")
def test_compiled_kernel_equals_its_python_to_the_bit():
    """The compiled ``span_step`` against the same function run by Python (numpy's BLAS, math.exp): equal arrays."""
    data_cfg, model_cfg, _ = figure1_setting(N=6, mu_norm=80.0, n_test=2)
    data, p0 = problem(data_cfg, model_cfg)
    obj = SpanObjective(p0, data.X, data.y, core="numba")
    st = moved_state(obj, 1e-4)
    UcA = obj.U_c @ _side_by_side(st.A_Q, st.A_K)
    v = obj.tokens.gather(obj.tokens.U @ (p0.W_V @ p0.w_O))
    compiled, plain = (run_kernel(fn, obj, UcA, v) for fn in (_kernels.span_step, _kernels.span_step.py_func))
    for a, b in zip(compiled, plain):
        np.testing.assert_array_equal(a, b)


def test_training_layout_gives_the_same_trajectory_to_the_bit():
    """Training on the halves of one buffer (one product) or on two separate arrays (a stacked copy): same bits,
    over 15 GD steps with w_O trained."""
    data, p0 = small()
    cfg = TrainConfig(lr=0.5, steps=15, coords="span", train_w_O=True)
    obj = SpanObjective(p0, data.X, data.y)
    st = obj.fresh_state()
    assert _side_by_side(st.A_Q, st.A_K) is st.A_Q.base            # no copy in the training layout
    separate = [np.zeros_like(st.A_Q), np.zeros_like(st.A_K)]
    stacked = _side_by_side(*separate)
    assert not np.shares_memory(stacked, separate[0]) and stacked.shape == (st.A_Q.shape[0], 2 * st.A_Q.shape[1])
    assert _side_by_side(st.A_K, st.A_Q) is not st.A_K.base      # halves in the wrong order: a copy, not the buffer
    np.testing.assert_array_equal(_side_by_side(st.A_K, st.A_Q), np.hstack([st.A_K, st.A_Q]))

    class Separate:   # the same objective without fresh_state: the loop copies state0 into separate arrays
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            if name == "fresh_state":
                raise AttributeError(name)
            return getattr(self.inner, name)

    p_a, h_a = run(SpanObjective(p0, data.X, data.y), cfg)
    p_b, h_b = run(Separate(SpanObjective(p0, data.X, data.y)), cfg)
    for a, b in zip(p_a, p_b):
        np.testing.assert_array_equal(a, b)
    for key in h_a.values:
        np.testing.assert_array_equal(h_a[key], h_b[key])


def test_kernel_as_plain_python_takes_margins_past_the_float64_range_of_exp():
    """y·f > 709.78: e^{y f} overflows, which plain-Python math.exp reports by raising; the kernel takes it as inf
    (ℓ' = -0), as compiled code and the numpy path do. Plain Python and compiled: the same arrays."""
    data, p0 = small()
    obj = SpanObjective(p0, data.X, data.y, core="numba")
    v = np.where(data.y[:, None] > 0, 1e3, -1e3) * np.ones(obj.tokens.index.shape)   # f = ±1000 on y's side
    plain = getattr(_kernels.span_step, "py_func", _kernels.span_step)    # without JIT the kernel is plain already
    outs = [run_kernel(fn, obj, obj.QKW0[:0], v) for fn in (plain, _kernels.span_step)]   # UcA with no rows: A = 0
    for out in outs:
        assert np.all(obj.y * out[5] > 709.8) and np.all(out[6] == 0.0) and np.all(out[7] == 0.0)   # ℓ' = 0
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_training_with_the_fused_kernel_follows_the_numpy_path():
    """60 GD steps with w_O trained, through the loop: the rounding of one step does not grow into a different
    trajectory. Tolerance 1e-10 relative: measured ≤ 5e-16 after 60 steps, with room for rounding that compounds
    over a longer or less stable run; a step computed wrong anywhere moves the history by far more."""
    data, p0 = small()
    cfg = TrainConfig(lr=0.5, steps=60, coords="span", train_w_O=True)
    p_a, h_a = run(SpanObjective(p0, data.X, data.y, core="numba"), cfg)
    p_b, h_b = run(SpanObjective(p0, data.X, data.y, core="numpy"), cfg)
    assert h_a.steps == h_b.steps == 60
    for a, b in zip(p_a, p_b):
        assert np.abs(a - b).max() <= 1e-10 * np.abs(b).max()
    for key in ("train_loss", "attn_signal", "value_signal", "min_margin"):
        assert np.abs(h_a[key] - h_b[key]).max() <= 1e-10 * np.abs(h_b[key]).max(), key


def test_halves_of_one_buffer_are_found_only_when_exactly_so():
    """``halves_of_one`` lets the loop update and check [A_Q | A_K] in one pass; anything but the two halves of one
    C-contiguous buffer, in that order, must come back as None (then each array is handled on its own)."""
    buf = np.arange(24.0).reshape(3, 8).copy()   # a view of a view has the first array as its base
    left, right = buf[:, :4], buf[:, 4:]
    assert halves_of_one(left, right) is buf
    assert halves_of_one(right, left) is None                        # swapped
    assert halves_of_one(buf[:, :3], buf[:, 3:6]) is None            # not halves
    assert halves_of_one(left, np.zeros((3, 4))) is None             # another array
    wide = np.zeros((3, 16))
    assert halves_of_one(wide[:, :8:2], wide[:, 8::2]) is None       # strided halves of a wider buffer
    assert halves_of_one(buf[0, :4], buf[0, 4:]) is None              # 1-D
    assert merge_halves([left, right, buf[0]])[0] is buf and len(merge_halves([left, right, buf[0]])) == 2
    # the GD update by blocks equals the field-by-field update to the bit
    rng = np.random.default_rng(0)
    G = rng.standard_normal((3, 8))
    state, ref = [left, right, np.ones(2)], [left.copy(), right.copy(), np.ones(2)]
    grads = [G[:, :4], G[:, 4:], np.full(2, 0.5)]
    Optimizer(TrainConfig(lr=0.3, steps=1), state).step(state, grads, [True, True, True], 0)
    for s, g in zip(ref, grads):
        s -= 0.3 * g
    for a, b in zip(state, ref):
        np.testing.assert_array_equal(a, b)
    assert list(_blocks(state, grads, [True, False, True]))[0][0] is left   # a frozen half: no merge
