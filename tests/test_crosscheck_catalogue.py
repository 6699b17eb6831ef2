"""refvit.crosscheck, second version: every later catalogue entry, injected into an einsum implementation written
here (independent of ``crosscheck.Variant``), is named; controls written differently but correctly pass;
mistakes outside the catalogue get honest findings (uniform factors, a drifting update), not a wrong name."""
import math

import numpy as np
import pytest
from scipy.special import expit

from refvit import crosscheck as cc
from refvit.jiang2024.model import Params, loss_and_grads


# --- an implementation in einsum, with switches for the mistakes -------------------------------------------------

def user_model(causal=False, eps=0.0, clamp=0.0, shift=True, labels01=False, loss="logistic", bilinear=False,
               bce01=False, squeeze=False, dtype=None):
    """(forward, grad) of the model written with einsum and a hand-derived backward; each switch one mistake."""
    def parts(W_Q, W_K, W_V, w_O, X):
        n, M, _ = X.shape
        if bilinear:                                              # W = W_Q W_Kᵀ, a d×d bilinear form
            W = W_Q @ W_K.T
            Z = np.einsum("nld,de,nje->nlj", X, W, X)
        else:
            Z = np.einsum("nlh,njh->nlj", np.einsum("nmd,dh->nmh", X, W_Q), np.einsum("nmd,dh->nmh", X, W_K))
        inside = np.ones_like(Z)
        if clamp:
            inside = (np.abs(Z) <= clamp).astype(Z.dtype)
            Z = np.clip(Z, -clamp, clamp)
        if causal:
            Z = np.where(np.arange(M)[None, :] <= np.arange(M)[:, None], Z, -np.inf)
        with np.errstate(over="ignore", invalid="ignore"):
            E = np.exp(Z - Z.max(axis=2, keepdims=True)) if shift else np.exp(Z)
            S = E / (E.sum(axis=2, keepdims=True) + eps)
        v = np.einsum("nmd,de,e->nm", X, W_V, w_O)
        abar = S.mean(axis=1)
        return np.einsum("nj,nj->n", abar, v), (Z, S, v, abar, inside)

    def fwd(W_Q, W_K, W_V, w_O, X):
        f = parts(W_Q, W_K, W_V, w_O, X)[0]
        return f.squeeze() if squeeze else f

    def grad(W_Q, W_K, W_V, w_O, X, y):
        n, M, _ = X.shape
        f, (Z, S, v, abar, inside) = parts(W_Q, W_K, W_V, w_O, X)
        t = (y + 1) / 2 if labels01 else y
        m = t * f
        with np.errstate(over="ignore", invalid="ignore"):     # the naive loss overflows on purpose
            if bce01:                                             # BCE with logits on t ∈ {0, 1}, done right
                t01 = (y + 1) / 2
                L = np.mean(np.logaddexp(0, f) - t01 * f)
                df = (expit(f) - t01) / n
            else:
                if loss == "naive":
                    L = np.mean(np.log(1 + np.exp(-m)))
                elif loss == "clamped":
                    L = np.mean(-np.log(np.clip(expit(m), 1e-7, 1 - 1e-7)))
                else:
                    L = np.mean(np.logaddexp(0, -m))
                dm = -expit(-m)
                if loss == "clamped":
                    p = expit(m)
                    dm = np.where((p > 1e-7) & (p < 1 - 1e-7), dm, 0.0)
                df = dm * t / n
        dv = df[:, None] * abar
        dS = np.broadcast_to((df[:, None] * v / M)[:, None, :], S.shape)
        g = (S * dS).sum(axis=2, keepdims=True)
        dZ = S * (dS - g) * inside
        if eps:                                                   # the max shift is differentiated through
            top = Z == Z.max(axis=2, keepdims=True)
            dZ = dZ - top * g * (1 - S.sum(axis=2, keepdims=True))
        du = np.einsum("nm,nmd->d", dv, X)
        if bilinear:
            dW = np.einsum("nlj,nld,nje->de", dZ, X, X)
            dW_Q, dW_K = dW @ W_K, dW.T @ W_Q
        else:
            Q, K = np.einsum("nmd,dh->nmh", X, W_Q), np.einsum("nmd,dh->nmh", X, W_K)
            dW_Q = np.einsum("nmd,nmh->dh", X, np.einsum("nlj,njh->nlh", dZ, K))
            dW_K = np.einsum("nmd,nmh->dh", X, np.einsum("nlj,nlh->njh", dZ, Q))
        return L, dW_Q, dW_K, np.outer(du, w_O), W_V.T @ du
    return fwd, grad


def sgd(grad, momentum=0.0, weight_decay=0.0, clip=0.0, scale=1.0):
    """A step function with optional extras; momentum keeps its state in the closure (reset on a new start)."""
    state = {}

    def step(W_Q, W_K, W_V, w_O, X, y, lr):
        _, *g = grad(W_Q, W_K, W_V, w_O, X, y)
        p = [W_Q, W_K, W_V, w_O]
        g[3] = np.zeros_like(g[3])                                # w_O frozen
        if weight_decay:
            g = [gi + weight_decay * pi for gi, pi in zip(g[:3], p[:3])] + [g[3]]
        if clip:
            norm = math.sqrt(sum(float(np.sum(gi ** 2)) for gi in g))
            if norm > clip:
                g = [gi * (clip / norm) for gi in g]
        if momentum:
            key = X.shape                                         # one state per case (cases differ in shape)
            if key in state:
                g = [momentum * vi + gi for vi, gi in zip(state[key], g)]
            state[key] = g
        return tuple(pi - scale * lr * gi for pi, gi in zip(p, g))
    return step


def check(fwd, grad, step=None, **kw):
    kw.setdefault("cases", "quick")
    return cc.crosscheck(fwd, grad, step, verbose=False, **kw)


# --- catalogue entries: injected and named -----------------------------------------------------------------------

MODEL_MISTAKES = {
    "causal_mask": dict(causal=True),
    "softmax_epsilon": dict(eps=1e-6),
    "clamped_logits": dict(clamp=50.0),
    "softmax_without_max_shift": dict(shift=False),
    "labels_01_as_pm1": dict(labels01=True),
    "naive_logistic_overflow": dict(loss="naive"),
    "clamped_probability": dict(loss="clamped"),
}


@pytest.mark.parametrize("name", sorted(MODEL_MISTAKES))
def test_model_mistake_is_named(name):
    fwd, grad = user_model(**MODEL_MISTAKES[name])
    report = check(fwd, grad, sgd(grad))
    assert not report.passed
    assert report.diagnosis == [name], report.format()
    assert "float32_accumulation" not in report.format()


@pytest.mark.parametrize("name, extra", [("momentum", dict(momentum=0.9)), ("weight_decay", dict(weight_decay=0.01)),
                                         ("gradient_clipping", dict(clip=1.0))])
def test_optimizer_extra_is_named(name, extra):
    fwd, grad = user_model()
    report = check(fwd, grad, sgd(grad, **extra))
    assert not report.passed
    assert report.diagnosis == [name], report.format()
    assert all(r.passed for c in report.cases for r in c.blocks if not r.block.startswith("traj"))


def test_mean_over_keys_is_named_with_its_twin():
    # ā_l = (1/M) Σ_j S_lj ≡ 1/M: f = mean value score, the numbers of a softmax over queries too, so both named.
    fwd0, grad0 = user_model()

    def fwd(W_Q, W_K, W_V, w_O, X):
        return fwd0(0 * W_Q, W_K, W_V, w_O, X)

    def grad(W_Q, W_K, W_V, w_O, X, y):
        L, _, _, dW_V, dw_O = grad0(0 * W_Q, W_K, W_V, w_O, X, y)
        return L, 0 * W_Q, 0 * W_K, dW_V, dw_O
    report = check(fwd, grad, cases="small")
    assert report.diagnosis == ["softmax_over_queries", "mean_over_keys"], report.format()


def test_squeeze_at_size_1_is_named_from_the_shape():
    fwd, grad = user_model(squeeze=True)
    report = check(fwd, grad)
    bad = [c for c in report.cases if c.error]
    assert [c.name for c in bad] == ["N1", "N1_M1"]
    assert "f must have shape (1,); got shape (), dtype float64" in bad[0].error
    assert "squeeze_size_1" in report.diagnosis, report.format()


# --- controls: written differently, correct, must pass ------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(), dict(bilinear=True), dict(bce01=True)], ids=["einsum", "bilinear", "bce01"])
def test_correct_controls_pass(kw):
    fwd, grad = user_model(**kw)
    report = check(fwd, grad, sgd(grad))               # "quick": the authors' widths are slow in plain einsum
    assert report.passed, report.format()


def test_float32_control_passes_in_float32_mode_and_fails_a_float64_check():
    fwd0, grad0 = user_model()
    c32 = lambda *a: [np.asarray(x, np.float32) for x in a]  # noqa: E731

    def fwd(*a):
        return fwd0(*c32(*a))

    def grad(*a):
        return grad0(*c32(*a))

    def step(W_Q, W_K, W_V, w_O, X, y, lr):
        p = c32(W_Q, W_K, W_V, w_O)
        _, *g = grad0(*p, *c32(X, y))
        return p[0] - np.float32(lr) * g[0], p[1] - np.float32(lr) * g[1], p[2] - np.float32(lr) * g[2], p[3]
    assert check(fwd, grad, step, dtype="float32").passed
    report = check(fwd, grad, step, dtype="float64")
    assert report.diagnosis == ["float32_accumulation"], report.format()


# --- outside the catalogue: findings, not a wrong name ------------------------------------------------------------

def test_a_uniform_multiple_is_reported_with_its_factor():
    fwd, grad0 = user_model()

    def grad(*a):
        L, dW_Q, dW_K, dW_V, dw_O = grad0(*a)
        return L, dW_Q, dW_K, 4 * dW_V, dw_O
    report = check(fwd, grad, cases="small")
    errs = {r.block: r.error for c in report.cases for r in c.blocks if r.block == "dW_V"}
    assert abs(errs["dW_V"] - 0.75) < 1e-9            # 1 − 1/c, float64 summation-order noise only
    assert report.diagnosis == [], report.format()
    assert report.findings == ["your dW_V is 4 × the reference"], report.format()


def test_a_step_size_off_by_0_1_percent_is_a_small_deviation_not_float32():
    fwd, grad = user_model()
    report = check(fwd, grad, sgd(grad, scale=1.001))
    assert not report.passed and report.diagnosis == [], report.format()
    text = report.format()
    assert "systematic small deviation in the update (step size, decay, clipping, ε …)" in text
    assert "your first step update is 1.001 × the reference's −lr·∇L" in text
    assert "float32" not in text.split("FAIL.")[-1]


def test_a_case_that_raises_does_not_hide_the_diagnosis_of_the_others():
    fwd0, grad0 = user_model(causal=True)

    def fwd(W_Q, W_K, W_V, w_O, X):
        if X.shape[0] == 1:
            raise RuntimeError("batch of one not supported")
        return fwd0(W_Q, W_K, W_V, w_O, X)
    report = check(fwd, grad0)
    raised = [c for c in report.cases if c.error]
    assert [c.name for c in raised] == ["N1", "N1_M1"]
    assert "forward_fn raised RuntimeError: batch of one not supported (in fwd, line" in raised[0].error
    assert report.diagnosis == ["causal_mask"], report.format()


def test_reference_unaffected_by_a_function_that_mutates_its_inputs():
    fwd0, grad0 = user_model()

    def fwd(W_Q, W_K, W_V, w_O, X):
        f = fwd0(W_Q, W_K, W_V, w_O, X)
        for a in (W_Q, W_K, W_V, w_O, X):
            a *= 3.0                                              # vandalise every input in place
        return f

    def grad(W_Q, W_K, W_V, w_O, X, y):
        out = grad0(W_Q, W_K, W_V, w_O, X, y)
        for a in (W_Q, W_K, W_V, w_O, X, y):
            a[...] = np.nan
        return out
    step0 = sgd(grad0)

    def step(W_Q, W_K, W_V, w_O, X, y, lr):
        out = step0(W_Q, W_K, W_V, w_O, X, y, lr)
        X[...] = 0.0
        y *= -1
        return out
    report = check(fwd, grad, step)
    assert report.passed, report.format()


def test_reference_outputs_are_the_model_outputs():
    # the einsum implementation agrees with refvit.jiang2024.model to summation order (1e-12: measured ≤ 1e-14)
    fwd, grad = user_model()
    for spec in cc.select_cases("quick"):
        c = cc.build_case(spec)
        L, g = loss_and_grads(c.params, c.X, c.y)
        mine = grad(*c.params, c.X, c.y)
        assert abs(mine[0] - L) <= 1e-12 * abs(L)
        for a, b in zip(mine[1:], g):
            assert cc.block_error(a, b) <= 1e-12, spec.name
    assert isinstance(Params(*g), Params)
