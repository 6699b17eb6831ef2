"""refvit.crosscheck: our own backends pass, float32 passes in float32 mode, and every catalogued mistake, injected
into our model *independently of the catalogue's own implementation* (``crosscheck.Variant``), is named."""
import json
import math

import numpy as np
import pytest

from refvit import cli, crosscheck as cc
from refvit.jiang2024.config import dynamics_setting, figure1_setting
from refvit.gradcheck import directional_check, rel_error
from refvit.jiang2024.model import Params, backward, forward, forward_cache, loss_and_grads, loss_grads_cache
from refvit.jiang2024.train import train


# --- user implementations built from refvit.jiang2024.model ---------------------------------------------------------------

def make_step(grad_fn, scale=1.0, train_w_O=False):
    """GD step θ − scale·lr·∇L from a grad_fn; w_O updated only if train_w_O."""
    def step(W_Q, W_K, W_V, w_O, X, y, lr):
        _, dW_Q, dW_K, dW_V, dw_O = grad_fn(W_Q, W_K, W_V, w_O, X, y)
        eta = scale * lr
        return W_Q - eta * dW_Q, W_K - eta * dW_K, W_V - eta * dW_V, (w_O - eta * dw_O) if train_w_O else w_O
    return step


def ours(backend="numpy"):
    """Our model as a user's (forward, grad) pair on the chosen backend."""
    def fwd(W_Q, W_K, W_V, w_O, X):
        return forward((W_Q, W_K, W_V, w_O), X, backend)

    def grad(W_Q, W_K, W_V, w_O, X, y):
        loss, g = loss_and_grads((W_Q, W_K, W_V, w_O), X, y, backend)
        return (loss, *g)
    return fwd, grad


def ours_float32():
    """Our model run with float32 arrays: forward_cache/loss_grads_cache keep the dtype (no float64 casting)."""
    c = lambda *a: [np.asarray(x, dtype=np.float32) for x in a]  # noqa: E731

    def fwd(W_Q, W_K, W_V, w_O, X):
        return forward_cache(Params(*c(W_Q, W_K, W_V, w_O)), *c(X))[0]

    def grad(W_Q, W_K, W_V, w_O, X, y):
        loss, g, f, _ = loss_grads_cache(Params(*c(W_Q, W_K, W_V, w_O)), *c(X), *c(y))
        assert f.dtype == np.float32 and g.W_Q.dtype == np.float32   # really float32 arithmetic
        return (loss, *g)

    def step(W_Q, W_K, W_V, w_O, X, y, lr):
        p = Params(*c(W_Q, W_K, W_V, w_O))
        _, g, _, _ = loss_grads_cache(p, *c(X), *c(y))
        eta = np.float32(lr)
        return p.W_Q - eta * g.W_Q, p.W_K - eta * g.W_K, p.W_V - eta * g.W_V, p.w_O
    return fwd, grad, step


def injected(name):
    """(forward, grad, step, train_w_O, dtype) of our model with one mistake injected, for each catalogue entry."""
    fwd0, grad0 = ours()
    args = dict(train_w_O=False, dtype="float64")
    if name == "sqrt_dh_temperature":      # Z/√d_h: the same as W_Q/√d_h
        def fwd(W_Q, W_K, W_V, w_O, X):
            return fwd0(W_Q / math.sqrt(W_Q.shape[1]), W_K, W_V, w_O, X)

        def grad(W_Q, W_K, W_V, w_O, X, y):
            t = 1 / math.sqrt(W_Q.shape[1])
            loss, dW_Q, dW_K, dW_V, dw_O = grad0(t * W_Q, W_K, W_V, w_O, X, y)
            return loss, t * dW_Q, dW_K, dW_V, dw_O
    elif name == "softmax_over_queries":   # columns of S sum to 1, so ā ≡ 1/M: our model at W_Q = 0
        def fwd(W_Q, W_K, W_V, w_O, X):
            return fwd0(0 * W_Q, W_K, W_V, w_O, X)

        def grad(W_Q, W_K, W_V, w_O, X, y):
            loss, _, _, dW_V, dw_O = grad0(0 * W_Q, W_K, W_V, w_O, X, y)
            return loss, 0 * W_Q, 0 * W_K, dW_V, dw_O
    elif name == "missing_1_over_M":       # f·M = f with w_O·M (f is linear in w_O)
        def fwd(W_Q, W_K, W_V, w_O, X):
            return fwd0(W_Q, W_K, W_V, X.shape[1] * w_O, X)

        def grad(W_Q, W_K, W_V, w_O, X, y):
            M = X.shape[1]
            loss, dW_Q, dW_K, dW_V, dw_O = grad0(W_Q, W_K, W_V, M * w_O, X, y)
            return loss, dW_Q, dW_K, dW_V, M * dw_O
    elif name == "missing_1_over_N":
        fwd = fwd0

        def grad(W_Q, W_K, W_V, w_O, X, y):
            return tuple(X.shape[0] * a for a in grad0(W_Q, W_K, W_V, w_O, X, y))
    elif name == "exponential_loss":
        fwd = fwd0

        def grad(W_Q, W_K, W_V, w_O, X, y):
            p = Params(W_Q, W_K, W_V, w_O)
            f, cache = forward_cache(p, X)
            e = np.exp(-y * f)
            return (e.mean(), *backward(-y * e / len(y), cache, p, X))
    elif name == "W_K_as_W_Q":
        def fwd(W_Q, W_K, W_V, w_O, X):
            return fwd0(W_K, W_K, W_V, w_O, X)

        def grad(W_Q, W_K, W_V, w_O, X, y):
            loss, dQ, dK, dW_V, dw_O = grad0(W_K, W_K, W_V, w_O, X, y)
            return loss, 0 * W_Q, dQ + dK, dW_V, dw_O
    elif name == "transposed_logits":      # x_jᵀ W_Q W_Kᵀ x_l = x_lᵀ W_K W_Qᵀ x_j: W_Q and W_K swap roles
        def fwd(W_Q, W_K, W_V, w_O, X):
            return fwd0(W_K, W_Q, W_V, w_O, X)

        def grad(W_Q, W_K, W_V, w_O, X, y):
            loss, dK, dQ, dW_V, dw_O = grad0(W_K, W_Q, W_V, w_O, X, y)
            return loss, dQ, dK, dW_V, dw_O
    elif name == "float32_accumulation":
        fwd, grad, step = ours_float32()
        return fwd, grad, step, args
    else:
        fwd, grad = fwd0, grad0
    step = make_step(grad)
    if name == "doubled_step":
        step = make_step(grad, scale=2.0)
    elif name == "w_O_trained":
        step = make_step(grad, train_w_O=True)          # the checker expects w_O frozen (default)
    elif name == "w_O_frozen":
        args["train_w_O"] = True                        # the checker expects w_O trained; the step freezes it
    return fwd, grad, step, args


# --- the tests ---------------------------------------------------------------------------------------------------

def test_cases_cover_the_intended_regimes():
    by = {s.name: s for s in cc.CASES}
    stats = {}
    for s in cc.SMALL_CASES:
        c = cc.build_case(s)
        _, cache = forward_cache(c.params, c.X)
        stats[s.name] = (np.abs(cache.Z).max(), (cache.S.max(axis=-1) > 0.999).mean())
    assert stats["tiny_init"][0] < 0.05                  # logits ≈ 0: attention near uniform
    assert 1 < stats["o1_logits"][0] < 10                # O(1) logits
    assert stats["saturated"][1] > 0.5                   # most softmax rows one-hot
    assert by["M1"].M == 1 and cc.build_case(by["M1"]).X.shape[1] == 1
    assert by["dh_ne_dv"].d_h != by["dh_ne_dv"].d_v
    for name, (data, model, tr) in (("figure1", figure1_setting()), ("dynamics", dynamics_setting())):
        s = by[name]                                     # the authors' widths, init and step size; only N shrunk
        assert (s.M, s.d, s.d_h, s.d_v) == (data.M, data.d, model.d_h, model.d_v)
        assert (s.sigma_p, s.sigma_w, s.init_scale, s.lr) == (data.sigma_p, data.sigma_w, model.init_scale, tr.lr)


def test_variant_without_mistakes_is_the_reference():
    # Variant is a second implementation (the catalogue's); both are float64 with different summation order,
    # so 1e-12 relative (measured ≤ 1e-14 here).
    v = cc.Variant()
    for s in cc.SMALL_CASES:
        c = cc.build_case(s)
        loss, g = loss_and_grads(c.params, c.X, c.y)
        vloss, vg = v.loss_and_grads(c.params, c.X, c.y)
        assert rel_error(v.forward(c.params, c.X)[0], forward(c.params, c.X)) < 1e-12
        assert abs(vloss - loss) < 1e-12 * abs(loss)
        for a, b in zip(vg, g):
            assert rel_error(a, b) < 1e-12, s.name


@pytest.mark.parametrize("mistake", [m for m in cc.CATALOGUE if m.variant.dtype == "float64"], ids=lambda m: m.name)
def test_each_mutant_gradient_is_the_gradient_of_its_own_loss(mistake):
    # Central differences along a random direction: truncation O(h²) and rounding O(ε/h) give ~1e-9 relative
    # at h = 1e-5 on this O(1) case; 1e-6 leaves margin for conditioning, while a wrong term gives ≥ 1e-2. The
    # floor 1e-9 (absolute, ~1e-8 of this case's directional derivatives) is for blocks a mutant makes exactly
    # flat (mean_over_keys: f does not depend on W_Q), where both sides are rounding noise ≤ 1e-17.
    c = cc.build_case(cc.SMALL_CASES[1])
    v = mistake.variant
    _, g = v.loss_and_grads(c.params, c.X, c.y)
    rng = np.random.default_rng(0)
    for k in range(4):
        def loss_k(a, k=k):
            p = list(c.params)
            p[k] = a
            return v.loss_and_grads(p, c.X, c.y)[0]
        analytic, numeric = directional_check(loss_k, g[k], c.params[k].copy(), rng)
        assert abs(analytic - numeric) <= 1e-6 * max(abs(analytic), abs(numeric), 1e-9), (k, analytic, numeric)


@pytest.mark.parametrize("backend, cases", [
    ("numpy", "all"),
    ("numba", "small"),
    pytest.param("numba", "authors", marks=pytest.mark.slow),   # the authors' widths cost seconds per backend
])
def test_our_backends_pass(backend, cases):
    fwd, grad = ours(backend)
    report = cc.crosscheck(fwd, grad, make_step(grad), cases=cases, verbose=False)
    assert report.passed, report.format()
    assert [c.name for c in report.cases] == [s.name for s in cc.select_cases(cases)]
    assert all(len(c.blocks) == len(cc.BLOCKS) - len(cc.TRAINER_BLOCKS) for c in report.cases)   # no trainer


def test_our_trainer_step_passes_with_w_O_frozen_and_trained():
    # refvit.train's GD (one step per call) as the user's step, on every small case (M = 1 included).
    fwd, grad = ours()
    for train_w_O in (False, True):
        def step(W_Q, W_K, W_V, w_O, X, y, lr, train_w_O=train_w_O):
            p, h = train((W_Q, W_K, W_V, w_O), X, y, lr=lr, steps=1, train_w_O=train_w_O, backend="numpy")
            assert h.steps == 1
            return tuple(p)
        report = cc.crosscheck(fwd, grad, step, train_w_O=train_w_O, cases="small", verbose=False)
        assert report.passed, report.format()


def test_float32_implementation_passes_in_float32_mode():
    report = cc.crosscheck(*ours_float32(), dtype="float32", cases="small", verbose=False)
    assert report.passed, report.format()
    # Not vacuous: the float32 errors are far above float64 rounding (≥ 1e-8 somewhere in f and the gradients).
    assert max(r["error"] for r in report.rows() if r["block"] in ("f", "dW_Q", "dW_V")) > 1e-8


FIRST_CATALOGUE = ("sqrt_dh_temperature", "softmax_over_queries", "missing_1_over_M", "missing_1_over_N",
                   "exponential_loss", "W_K_as_W_Q", "transposed_logits", "doubled_step", "w_O_trained", "w_O_frozen",
                   "float32_accumulation")   # the later entries are injected in tests/test_crosscheck_catalogue.py


@pytest.mark.parametrize("name", FIRST_CATALOGUE)
def test_each_catalogued_mistake_is_named(name):
    fwd, grad, step, args = injected(name)
    report = cc.crosscheck(fwd, grad, step, cases="small", verbose=False, **args)
    assert not report.passed
    # softmax over the queries and the 1/M mean over the keys both give f = mean value score: the same
    # numbers everywhere, so both are named
    same = {"softmax_over_queries": ["softmax_over_queries", "mean_over_keys"]}
    assert report.diagnosis == same.get(name, [name]), report.format()
    assert name in report.format()


def test_every_catalogue_entry_has_an_injection_test():
    # injected() covers each name explicitly (the fall-through branch is the correct model, which must pass)
    fwd, grad, step, args = injected("no such mistake")
    assert cc.crosscheck(fwd, grad, step, cases="small", verbose=False, **args).passed
    assert set(FIRST_CATALOGUE) <= set(cc.MISTAKES)


def test_forward_only_diagnosis():
    # With only a forward, a forward mistake is still named; a loss-only mistake cannot be seen and is not named.
    fwd, *_ = injected("missing_1_over_M")
    report = cc.crosscheck(fwd, cases="small", verbose=False)
    assert report.diagnosis == ["missing_1_over_M"]
    assert {r["block"] for r in report.rows()} == {"f"}
    fwd, *_ = injected("exponential_loss")
    assert cc.crosscheck(fwd, cases="small", verbose=False).passed


def test_an_exception_is_reported_per_case():
    fwd, grad = ours()

    def fragile(W_Q, W_K, W_V, w_O, X):
        if X.shape[1] == 1:
            raise RuntimeError("M must be at least 2")
        return fwd(W_Q, W_K, W_V, w_O, X)
    report = cc.crosscheck(fragile, cases="small", verbose=False)
    bad = [c for c in report.cases if not c.passed]
    assert [c.name for c in bad] == ["M1"] and "RuntimeError: M must be at least 2" in bad[0].error
    assert report.diagnosis == [] and "error:" in report.format()


def test_wrong_shape_and_nan_fail():
    fwd, grad = ours()
    report = cc.crosscheck(lambda *a: fwd(*a)[:, None], cases=["tiny_init"], verbose=False)
    assert "shape" in report.cases[0].error
    report = cc.crosscheck(lambda *a: fwd(*a) * np.nan, cases=["tiny_init"], verbose=False)
    assert math.isnan(report.cases[0].blocks[0].error) and not report.passed      # NaN is reported as nan
    report = cc.crosscheck(lambda *a: fwd(*a) * np.inf, cases=["tiny_init"], verbose=False)
    assert report.cases[0].blocks[0].error == math.inf and not report.passed


def test_block_error():
    assert cc.block_error(np.zeros(3), np.zeros(3)) == 0.0
    assert cc.block_error([1.0, 2.0], [1.0, 2.5]) == pytest.approx(0.2)
    assert cc.block_error([1.0], [np.nan]) == math.inf
    assert cc.block_error(np.zeros(2), np.zeros(3)) == math.inf
    assert cc.block_error([1e-20, 0.0], [0.0, -1e-20], zero=1e-15) == 0.0      # both zero at that level
    assert cc.block_error([1e-14, 0.0], [0.0, 0.0], zero=1e-15) == 1.0


def test_bad_arguments_raise_value_error():
    fwd, _ = ours()
    with pytest.raises(ValueError, match="dtype"):
        cc.crosscheck(fwd, dtype="float16", verbose=False)
    with pytest.raises(ValueError, match="unknown case"):
        cc.crosscheck(fwd, cases=["nope"], verbose=False)
    with pytest.raises(ValueError, match="callable"):
        cc.crosscheck(None, verbose=False)


USER_MODULE = '''
import numpy as np
from refvit.jiang2024.model import forward as _f, loss_and_grads as _lg

def forward(W_Q, W_K, W_V, w_O, X):
    return _f((W_Q, W_K, W_V, w_O), X)

def grad(W_Q, W_K, W_V, w_O, X, y):
    loss, g = _lg((W_Q, W_K, W_V, w_O), X, y)
    return (loss, *g)

def step(W_Q, W_K, W_V, w_O, X, y, lr):
    loss, g = _lg((W_Q, W_K, W_V, w_O), X, y)
    return W_Q - lr * g.W_Q, W_K - lr * g.W_K, W_V - lr * g.W_V, w_O

def step_double(W_Q, W_K, W_V, w_O, X, y, lr):
    return step(W_Q, W_K, W_V, w_O, X, y, 2 * lr)
'''


def test_cli(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_vit.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["crosscheck", "my_vit:forward", "--grad", "my_vit:grad", "--step", "my_vit:step",
                     "--cases", "small", "--json", "ok.json"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert json.loads((tmp_path / "ok.json").read_text())["passed"] is True
    # file.py:function form, and a doubled step: exit code 1 and the diagnosis in the JSON
    f = str(tmp_path / "my_vit.py")
    assert cli.main(["crosscheck", f"{f}:forward", "--grad", f"{f}:grad", "--step", f"{f}:step_double",
                     "--cases", "small", "--json", "bad.json"]) == 1
    out = capsys.readouterr().out
    assert "doubled_step" in out and "FAIL" in out
    assert json.loads((tmp_path / "bad.json").read_text())["diagnosis"] == ["doubled_step"]
    assert cli.main(["crosscheck", "my_vit:nothing"]) == 2
