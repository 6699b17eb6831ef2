"""refvit.crosscheck, second version: the trainer protocol, the command line (exit codes, --cases, strict JSON,
progress), the messages for broken outputs, the time limit, and calibration of every tolerance (a mistake just
above it fails, one below it passes)."""
import json
import math
import textwrap
import threading

import numpy as np
import pytest

from refvit import cli, crosscheck as cc
from refvit.jiang2024.model import forward, loss_and_grads

from .problems import PATIENCE


def fwd(W_Q, W_K, W_V, w_O, X):
    return forward((W_Q, W_K, W_V, w_O), X)


def grad(W_Q, W_K, W_V, w_O, X, y):
    loss, g = loss_and_grads((W_Q, W_K, W_V, w_O), X, y)
    return (loss, *g)


def scaled_step(scale):
    def step(W_Q, W_K, W_V, w_O, X, y, lr):
        _, dW_Q, dW_K, dW_V, _ = grad(W_Q, W_K, W_V, w_O, X, y)
        eta = scale * lr
        return W_Q - eta * dW_Q, W_K - eta * dW_K, W_V - eta * dW_V, w_O
    return step


class Trainer:
    """A user's trainer: GD with optional hidden state (momentum, gradients never zeroed, Adam, a schedule)."""

    def __init__(self, W_Q, W_K, W_V, w_O, X, y, lr, kind="gd", ignore_k=False):
        self.p = [W_Q, W_K, W_V, w_O]
        self.X, self.y, self.lr, self.kind, self.ignore_k = X, y, lr, kind, ignore_k
        self.buf = None
        self.t = 0

    def _one(self):
        _, *g = grad(*self.p, self.X, self.y)
        g = g[:3]
        if self.kind == "momentum":
            self.buf = g if self.buf is None else [0.9 * b + gi for b, gi in zip(self.buf, g)]
            g = self.buf
        elif self.kind == "no_zero_grad":            # .grad accumulates across steps
            self.buf = g if self.buf is None else [b + gi for b, gi in zip(self.buf, g)]
            g = self.buf
        elif self.kind == "schedule":                # lr decays with the step count
            g = [gi * 0.99 ** self.t for gi in g]
        self.t += 1
        self.p[:3] = [pi - self.lr * gi for pi, gi in zip(self.p[:3], g)]

    def step(self, k):
        for _ in range(1 if self.ignore_k else k):
            self._one()

    def params(self):
        return tuple(a.copy() for a in self.p)


def make_trainer(kind="gd", **kw):
    return lambda *a: Trainer(*a, kind=kind, **kw)


QUICK = ["o1_logits", "M1", "N1", "unbalanced_odd"]   # fast, all shapes of trouble; "long" added where it matters


# --- the trainer protocol ----------------------------------------------------------------------------------------

def test_correct_trainer_passes_on_every_quick_case():
    report = cc.crosscheck(fwd, grad, trainer=make_trainer(), cases="quick", verbose=False)
    assert report.passed, report.format()
    assert {r.block for r in report.cases[0].blocks} >= set(cc.TRAINER_BLOCKS)


@pytest.mark.parametrize("kind, named", [("momentum", ["momentum"]), ("no_zero_grad", []), ("schedule", [])])
def test_hidden_trainer_state_is_caught(kind, named):
    report = cc.crosscheck(fwd, grad, trainer=make_trainer(kind), cases=QUICK + ["long"], verbose=False)
    assert not report.passed
    for c in report.cases:                       # the recreated trainer follows the reference, the persistent not
        by = {r.block: r for r in c.blocks}
        assert by["trainer_restart"].passed and not by["trainer_W_V"].passed, (kind, c.name)
    assert report.diagnosis == named, report.format()
    assert any(f.startswith("hidden optimizer state") for f in report.findings), report.format()


def test_trainer_step_k_must_take_k_steps():
    report = cc.crosscheck(fwd, grad, trainer=make_trainer(ignore_k=True), cases=QUICK, verbose=False)
    assert not report.passed
    assert {r.block for c in report.cases for r in c.blocks if not r.passed} == {"trainer_step_k"}
    assert "trainer.step(20) is not 20 calls of trainer.step(1)" in report.findings


def test_a_trainer_without_the_protocol_gets_a_message():
    report = cc.crosscheck(fwd, grad, trainer=lambda *a: object(), cases=["M1"], verbose=False)
    assert "make_trainer must return an object with .step(k) and .params(); got object without a callable " \
           ".step" in report.cases[0].error


# --- messages: what is required, what came, how to fix it ---------------------------------------------------------

def test_per_sample_losses_are_refused_with_the_fix():
    def g(*a):
        loss, *rest = grad(*a)
        return (np.full(a[4].shape[0], loss), *rest)
    report = cc.crosscheck(fwd, g, cases=["o1_logits"], verbose=False)
    assert report.cases[0].error == ("grad_fn: loss must be the mean, a scalar; got shape (6,), dtype float64 "
                                     "(per-sample losses: return their mean)")


def test_none_for_dw_O_says_it_is_always_required():
    def g(*a):
        return (*grad(*a)[:4], None)
    report = cc.crosscheck(fwd, g, cases=["o1_logits"], verbose=False)
    assert report.cases[0].error.startswith("grad_fn returned None for dw_O; dw_O (8,) is required, even when "
                                            "training freezes w_O")


def test_a_transposed_gradient_is_named():
    def g(*a):
        loss, dW_Q, *rest = grad(*a)
        return (loss, dW_Q.T, *rest)
    report = cc.crosscheck(fwd, g, cases=["dh_ne_dv"], verbose=False)
    assert "dW_Q must have shape (20, 3); got shape (3, 20), dtype float64; it is transposed" in report.cases[0].error
    assert report.diagnosis == ["transposed_gradient"]


@pytest.mark.parametrize("bad, word, other", [(np.nan, "NaN", "inf"), (np.inf, "+inf", "NaN")])
def test_nan_is_never_shown_as_inf(bad, word, other):
    def f(*a):
        out = fwd(*a)
        out[0] = bad
        return out
    report = cc.crosscheck(f, cases=["o1_logits"], verbose=False)
    note = report.cases[0].blocks[0].note
    assert note == f"shape (6,), dtype float64, 1 {word} of 6 entries" and other not in note
    error = report.cases[0].blocks[0].error
    assert (np.isnan(error) if word == "NaN" else error == np.inf), error       # the cell too: nan vs inf
    assert f"1 {word} of 6 entries" in report.format()


def test_time_limit_per_call():
    """The slow calls block until the checker has returned, so it can only have returned by giving up on them: no
    race with the machine's load (a wall-clock bound of 1.5 s on the whole check can fail on a busy machine). Were the
    limit ignored, each call would return after ``PATIENCE`` and ``finished`` would not be empty."""
    release, finished = threading.Event(), []

    def slow(*a):
        release.wait(PATIENCE)
        finished.append(1)
        return fwd(*a)
    try:
        report = cc.crosscheck(slow, cases=["M1", "N1"], timeout=0.2, verbose=False)
        assert not finished                         # the checker did not wait for the slow calls
    finally:
        release.set()                               # let the abandoned calls' threads end
    assert [c.error is not None for c in report.cases] == [True, True]
    assert report.cases[0].error == ("forward_fn did not return within 0.2 s; make it faster or raise the limit "
                                     "(timeout=…, --timeout SECONDS)")


# --- calibration: a mistake just above each tolerance fails, rounding below it passes -----------------------------

def perturbed(block, factor, dtype="float64"):
    """(forward, grad) whose block is multiplied by ``factor``; in float32 mode computed in float32."""
    def f(*a):
        out = fwd(*a).astype(dtype)
        return out * factor if block == "f" else out

    def g(*a):
        out = list(grad(*a))
        i = ["loss", "dW_Q", "dW_K", "dW_V", "dw_O"].index(block) if block != "f" else None
        if i is not None:
            out[i] = out[i] * factor
        return tuple(np.asarray(o, dtype=dtype) for o in out)
    return f, g


@pytest.mark.parametrize("block", ["f", "loss", "dW_Q", "dW_V"])
def test_float64_value_tolerance_is_tight(block):
    # tolerance 1e-9: a relative change of 1e-8 (10× above) fails, 1e-11 (100× below) passes
    assert not cc.crosscheck(*perturbed(block, 1 + 1e-8), cases=QUICK, verbose=False).passed
    assert cc.crosscheck(*perturbed(block, 1 + 1e-11), cases=QUICK, verbose=False).passed


def test_float32_value_tolerance_is_tight():
    # tolerance 1e-4: a relative change of 1e-3 (10× above) fails in float32 mode; float32 rounding passes
    assert not cc.crosscheck(*perturbed("dW_V", 1 + 1e-3, "float32"), dtype="float32", cases=QUICK,
                             verbose=False).passed
    assert cc.crosscheck(*perturbed("dW_V", 1.0, "float32"), dtype="float32", cases=QUICK, verbose=False).passed


def test_float64_trajectory_tolerance_is_tight():
    # tolerance 1e-8 of the displacement: a step size off by 1e-7 fails, by 1e-10 passes
    assert not cc.crosscheck(fwd, grad, scaled_step(1 + 1e-7), cases=QUICK, verbose=False).passed
    assert cc.crosscheck(fwd, grad, scaled_step(1 + 1e-10), cases=QUICK, verbose=False).passed


def step32(scale):
    def step(W_Q, W_K, W_V, w_O, X, y, lr):
        _, g, *_ = loss_and_grads((W_Q, W_K, W_V, w_O), X, y)
        p = [a.astype(np.float32) for a in (W_Q, W_K, W_V, w_O)]
        eta = np.float32(scale * lr)
        return p[0] - eta * g.W_Q.astype(np.float32), p[1] - eta * g.W_K.astype(np.float32), \
            p[2] - eta * g.W_V.astype(np.float32), p[3]
    return step


def test_float32_trajectory_tolerance_fails_a_0_1_percent_step_size_error():
    # the rounding-budget tolerance: exact float32 updates pass on every quick case (150 steps included),
    # a step size off by 0.1 % fails on every one of them
    ok = cc.crosscheck(fwd, grad, step32(1.0), dtype="float32", cases="quick", verbose=False)
    assert ok.passed, ok.format()
    bad = cc.crosscheck(fwd, grad, step32(1.001), dtype="float32", cases="quick", verbose=False)
    assert all(not c.passed for c in bad.cases), bad.format()


# --- the command line ---------------------------------------------------------------------------------------------

USER = textwrap.dedent("""
    import numpy as np
    from refvit.jiang2024.model import forward, loss_and_grads

    def fwd(W_Q, W_K, W_V, w_O, X):
        return forward((W_Q, W_K, W_V, w_O), X)

    def bad_fwd(W_Q, W_K, W_V, w_O, X):
        f = forward((W_Q, W_K, W_V, w_O), X)
        f[0] = np.nan
        f[-1] = -np.inf
        return f

    def grad(W_Q, W_K, W_V, w_O, X, y):
        loss, g = loss_and_grads((W_Q, W_K, W_V, w_O), X, y)
        return (loss, *g)

    class T:
        def __init__(self, *p):
            self.p, self.X, self.y, self.lr = list(p[:4]), p[4], p[5], p[6]
        def step(self, k):
            for _ in range(k):
                _, g = loss_and_grads(self.p, self.X, self.y)
                self.p[:3] = [a - self.lr * b for a, b in zip(self.p[:3], g[:3])]
        def params(self):
            return tuple(self.p)

    def make_trainer(*a):
        return T(*a)
""")


def test_cli_exit_codes_cases_progress_and_strict_json(tmp_path, capsys):
    user = tmp_path / "user.py"
    user.write_text(USER)
    out = tmp_path / "r.json"
    assert cli.main(["crosscheck", f"{user}:fwd", "--grad", f"{user}:grad", "--trainer", f"{user}:make_trainer",
                     "--cases", "N1", "M1", "--json", str(out)]) == 0
    cap = capsys.readouterr()
    assert "crosscheck [1/2] N1: ok" in cap.err and "crosscheck [2/2] M1: ok" in cap.err
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["cases"]] == ["N1", "M1"] and data["passed"] is True

    assert cli.main(["crosscheck", f"{user}:bad_fwd", "--cases", "o1_logits", "--json", str(out)]) == 1
    capsys.readouterr()

    def refuse(token):
        raise ValueError(f"non-strict JSON token {token}")
    data = json.loads(out.read_text(), parse_constant=refuse)      # strict: no NaN or Infinity tokens
    assert data["cases"][0]["blocks"][0]["error"] == "nan"                # a NaN is reported as nan
    assert data["cases"][0]["blocks"][0]["note"] == "shape (6,), dtype float64, 1 NaN and 1 −inf of 6 entries"

    for argv in (["crosscheck", f"{user}:nothing"], ["crosscheck", "no_such_module_x:fwd"],
                 ["crosscheck", f"{user}:fwd", "--cases", "no_such_case"]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("refvit: error: "), err
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('oops')\n")
    assert cli.main(["crosscheck", f"{broken}:fwd"]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_report_json_is_strict_for_every_non_finite_number():
    assert cc.finite_json({"a": [float("nan"), float("inf"), -float("inf"), 1.5]}) == {"a": ["nan", "inf", "-inf",
                                                                                          1.5]}
    report = cc.crosscheck(lambda *a: np.full(a[4].shape[0], np.nan), cases=["M1"], verbose=False)
    text = report.to_json()
    assert ": NaN" not in text and "Infinity" not in text

    def refuse(token):
        raise ValueError(f"non-strict JSON token {token}")
    data = json.loads(text, parse_constant=refuse)
    assert data["cases"][0]["blocks"][0]["error"] == "nan"


# --- a trajectory shorter than asked is never judged on its prefix ----------------------------------------------

def test_a_trajectory_or_trainer_with_fewer_iterates_than_asked_fails_every_block():
    from refvit.crosscheck.compare import _RefTraj, _reference_trajectory, _traj_errors, _trainer_errors
    from refvit.crosscheck.calls import _Outputs
    case = cc.build_case(cc.select_cases(["o1_logits"])[0])
    p0, X, y, lr = case.params, case.X, case.y, case.spec.lr
    traj, grads = _reference_trajectory(p0, X, y, lr, False, 6)
    ref = _RefTraj(p0, traj, grads, lr)
    assert set(_traj_errors(traj, ref, "float64").values()) == {0.0}          # the reference itself: error 0
    for short in (traj[:-1], traj[:1], []):                                    # exact, but stopping early
        assert set(_traj_errors(short, ref, "float64").values()) == {math.inf}
        user = _Outputs(None, None, None, trainer=short, restart=traj, step_k=traj[-1])
        errs = _trainer_errors(user, ref, "float64")
        assert [errs[b] for b in cc.TRAINER_BLOCKS[:4]] == [math.inf] * 4
        assert errs["trainer_restart"] == 0.0 and errs["trainer_step_k"] == 0.0   # the other two are whole
