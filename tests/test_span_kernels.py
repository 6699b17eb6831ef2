"""The span step's numba kernels (``_kernels.span_logits``, ``span_products``) and its stacked coordinates against
the numpy path of the same step: equal to the bit.

The kernels make the numpy path's BLAS calls (one (M, d_h)·(d_h, M) and two (M, M)·(M, d_h) products per sample) and
add the rows of a repeated token in position order, as ``TokenSet.scatter`` does, so nothing is rounded differently:
the tests ask for equal arrays, not a tolerance. They force the kernel path even under NUMBA_DISABLE_JIT=1, where the
kernels run as Python. The numpy path itself is checked against the dense gradient in tests/test_span.py.
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
    """The same objective twice: through the kernels and through the numpy path."""
    fast, slow = SpanObjective(p0, X, y, **kw), SpanObjective(p0, X, y, **kw)
    fast._kernels, slow._kernels = _kernels, None
    return fast, slow


def moved_state(obj, scale, seed=3):
    """A non-zero state in the training layout (A_Q, A_K halves of one buffer), logits O(1)."""
    rng = np.random.default_rng(seed)
    st = obj.fresh_state()
    for a in st[:3]:
        a[...] = scale * rng.standard_normal(a.shape)
    return st


def assert_same_evaluation(a, b):
    assert a.loss == b.loss
    for name, x, z in zip(("Γ_Q", "Γ_K", "Γ_V", "∇w_O"), a.grads, b.grads):
        np.testing.assert_array_equal(x, z, err_msg=name)
    np.testing.assert_array_equal(a.f, b.f)
    for name, x, z in zip(a.cache._fields, a.cache, b.cache):
        np.testing.assert_array_equal(x, z, err_msg=f"cache {name}")


def small(other_tokens="weak_gaussian", **model):
    data_cfg = DataConfig(N=6, M=4, d=40, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3, other_tokens=other_tokens, n_test=2)
    return problem(data_cfg, ModelConfig(**{"d_h": 5, "d_v": 3, "init": "gaussian", "sigma0": 0.3, **model}))


@pytest.mark.parametrize("core", ["numpy", "numba"])
@pytest.mark.parametrize("case", ["figure1", "zero_tokens", "orthonormal", "many_repeated"])
def test_kernels_equal_the_numpy_path_to_the_bit(case, core, monkeypatch):
    """At A = 0 and at a moved state: loss, every gradient block, f, the whole cache and the test outputs."""
    kw = {"core": core}
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
    fast, slow = paths(p0, X, data.y, X_test=data.X_test, y_test=data.y_test, **kw)
    if case == "many_repeated":
        assert fast.tokens.first is None and int(np.sum(fast.tokens.counts > 1)) == 5
    if case == "zero_tokens":
        assert np.any(fast.tokens.index < 0)
    for st in (fast.fresh_state(), moved_state(fast, scale)):
        assert_same_evaluation(fast.value_and_grad(st), slow.value_and_grad(st))
        for _ in range(2):                            # the test outputs: through W(t), then through the cache
            np.testing.assert_array_equal(fast.test_outputs(st), slow.test_outputs(st))


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


def test_numba_core_in_span_coordinates_matches_the_numpy_core():
    """core="numba" changes the softmax loops only (``model.logits_core``); tolerance 1e-12 relative as in
    tests/test_backends.py: plain-loop sums against numpy's pairwise ones move the last bits, a wrong term is O(1e-2)."""
    data, p0 = small()
    a = SpanObjective(p0, data.X, data.y, core="numba")
    b = SpanObjective(p0, data.X, data.y, core="numpy")
    st = moved_state(a, 0.05)
    ea, eb = a.value_and_grad(st), b.value_and_grad(st)
    assert abs(ea.loss - eb.loss) <= 1e-12 * eb.loss
    for x, z in zip(ea.grads, eb.grads):
        assert np.abs(x - z).max() <= 1e-12 * np.abs(z).max()


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
