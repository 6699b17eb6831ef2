"""Check another implementation of the model (PyTorch, JAX, another numpy) against this reference, and name the
known mistake a mismatch matches.

Your functions are plain callables on numpy arrays; wrap a framework model in a few lines (see the adapters in the
README). The contracts, with the dimension letters of ``refvit.model`` (n samples, M tokens, d token dimension,
d_h query/key width, d_v value width):

``forward_fn(W_Q, W_K, W_V, w_O, X) -> f``
    W_Q, W_K (d, d_h), W_V (d, d_v), w_O (d_v,), X (n, M, d). Returns the model output f (n,) of PAPER §2.1,
    f_i = (1/M) Σ_l Σ_j softmax_j(x_lᵀ W_Q W_Kᵀ x_j) x_jᵀ W_V w_O (softmax over keys j, no 1/√d_h).

``grad_fn(W_Q, W_K, W_V, w_O, X, y) -> (loss, dW_Q, dW_K, dW_V, dw_O)``
    y (n,) in {±1}. loss is the *mean* logistic loss L = (1/n) Σ_i log(1 + exp(-y_i f_i)) (PAPER §3), a scalar;
    the four gradients of L have the shapes of the parameters. dw_O is always returned, even when training
    freezes w_O.

``gd_step_fn(W_Q, W_K, W_V, w_O, X, y, lr) -> (W_Q, W_K, W_V, w_O)``
    One full-batch gradient-descent step θ ← θ − lr ∇L(θ), lr a Python float. w_O is frozen by default (the
    authors' code and the PAPER §2.2 default), so the returned w_O must equal the one passed in; call
    ``crosscheck(..., train_w_O=True)`` if your implementation trains w_O, and the checker then expects
    w_O ← w_O − lr ∇_{w_O} L. The checker iterates your step 20 times from each case's start (a trajectory).

Every array you receive is a fresh C-contiguous copy in the checked dtype ("float64" or "float32"; y too), so
in-place updates cannot disturb the checker. Return anything ``np.asarray`` accepts (convert framework tensors
with ``.detach().cpu().numpy()``). An exception or a wrong shape is reported for that case, not raised.

How the comparison works: in each case the reference evaluates *the same* inputs your functions receive (in
float32 mode, the float32-rounded inputs) in float64 with ``refvit.model``. Each block gets one relative error,
max|yours − ref| / max(max|yours|, max|ref|) (see ``block_error``), compared with a tolerance for the dtype
(``TOLERANCES``). When something fails, every known mistake of ``CATALOGUE`` is run as a variant of the model
(a "mutant") on the same inputs; a mistake is named when your outputs match the mutant within tolerance on every
block of every case while the reference does not match.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import math
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from scipy.special import expit

from .config import DataConfig, ModelConfig
from .data import sample, streams
from .init import init_params
from .model import Params, loss_and_grads, forward

DTYPES = ("float64", "float32")
GRAD_BLOCKS = ("dW_Q", "dW_K", "dW_V", "dw_O")
TRAJ_BLOCKS = ("traj_W_Q", "traj_W_K", "traj_W_V", "traj_w_O")
BLOCKS = ("f", "loss") + GRAD_BLOCKS + TRAJ_BLOCKS

# Tolerances on the relative error of ``block_error`` / ``trajectory_error``, per dtype and kind of block.
# Measured maxima over all seven cases (README section "Checking another implementation"): correct float64
# implementations (numba backend, torch autograd, ``Variant()``, the per-sample sums of formulas.py) differ from
# the reference by ≤ 3.4e-15 in f, ≤ 1.3e-15 in the loss, ≤ 7.2e-15 in gradients and ≤ 3.4e-13 over the 20-step
# trajectory; correct float32 ones (our model on float32 arrays, torch float32) by ≤ 4.5e-7, 1.9e-7, 7.9e-7 and
# 2.1e-4, and JAX float32 (measured once, not in CI) by ≤ 1.8e-6, 6.0e-7, 3.9e-6 and 2.1e-4 (its worst: the
# saturated case). Every catalogued mistake differs by ≥ 0.9 on some block of some case, in both modes.
TOLERANCES = {
    "float64": {
        # Only the summation order differs (1e-16 × a conditioning factor, largest in the saturated case where
        # v_j − Σ_k s_k v_k cancels). 1e-9 leaves > 5 decades for other libraries and hardware, and is 60× below
        # float32 roundoff (6e-8), so float32 arithmetic passed float64 inputs fails it.
        "f": 1e-9, "loss": 1e-9, "grad": 1e-9,
        # 20 GD steps compound the step errors (GD amplifies them where attention sharpens): measured 3.4e-13.
        "traj": 1e-8,
    },
    "float32": {
        # float32 roundoff 6e-8 summed over M·d terms: measured ≤ 3.9e-6 (JAX), ≤ 7.9e-7 (numpy, torch); 1e-4
        # leaves 25×. (TF32 matmuls on a GPU round to 1e-3 and fail, as they should: that is not float32.)
        "f": 1e-4, "loss": 1e-4, "grad": 1e-4,
        # One float32 rounding of every parameter per step on top of the gradient errors, measured against the
        # displacement floor below: ≤ 2.1e-4; 1e-2 leaves 50×.
        "traj": 1e-2,
    },
}

# Trajectories are compared by their displacement from the start (so a wrong step size is not hidden under the
# initial weights), with a floor of TRAJ_FLOOR × max|B(t)|: a block that barely moves (W_Q at the paper's tiny
# init) is then not judged on float32 storage rounding, 20 steps × 6e-8 ≈ 1e-6 of |B|, 100× below the floor.
TRAJ_FLOOR = 1e-4
STEPS = 20


def tolerance(dtype: str, block: str) -> float:
    kind = "grad" if block in GRAD_BLOCKS else "traj" if block in TRAJ_BLOCKS else block
    return TOLERANCES[dtype][kind]


# ---------------------------------------------------------------------------------------------------------------
# The battery of cases
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaseSpec:
    """One check case: data (PAPER §1.2, authors' isotropic noise), widths, init (PAPER §3), step size and seed.

    M = 1 is built directly (one token μ_y + σ_p·noise per image), since ``DataConfig`` needs a signal and a noise
    token; everything else uses ``refvit.data.sample`` with balanced labels. ``init`` and its scale are those of
    ``ModelConfig``. The same spec always gives the same arrays (``streams(seed)``).
    """
    name: str
    description: str
    N: int
    M: int
    d: int
    d_h: int
    d_v: int
    mu_norm: float
    sigma_p: float
    sigma_w: float
    init: str
    init_scale: float = 16.0
    sigma0: float = 1e-3
    lr: float = 0.1
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SMALL_CASES = (
    CaseSpec("tiny_init", "the authors' U(±1/√d)/16 init: logits ≈ 0, attention ≈ uniform",
             N=6, M=4, d=24, d_h=8, d_v=8, mu_norm=3.0, sigma_p=1.0, sigma_w=0.05,
             init="torch_uniform_scaled", init_scale=16.0, lr=0.1, seed=1),
    CaseSpec("o1_logits", "Gaussian init scaled so that logits and f are O(1): attention far from uniform",
             N=6, M=5, d=24, d_h=8, d_v=8, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3,
             init="gaussian", sigma0=0.2, lr=0.1, seed=2),
    CaseSpec("saturated", "‖μ‖ = 100, strong other tokens, unscaled init: logits up to ~300, most softmax rows "
             "one-hot", N=6, M=3, d=24, d_h=8, d_v=8, mu_norm=100.0, sigma_p=4.0, sigma_w=4.0,
             init="torch_uniform_scaled", init_scale=1.0, lr=0.001, seed=3),
    CaseSpec("M1", "a single token per image: softmax ≡ 1, so dW_Q = dW_K = 0 exactly",
             N=6, M=1, d=16, d_h=6, d_v=5, mu_norm=2.0, sigma_p=1.0, sigma_w=0.0,
             init="gaussian", sigma0=0.3, lr=0.1, seed=4),
    CaseSpec("dh_ne_dv", "d_h = 3 ≠ d_v = 11 with O(1) logits: catches swapped widths and transposes",
             N=4, M=3, d=20, d_h=3, d_v=11, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3,
             init="gaussian", sigma0=0.3, lr=0.1, seed=5),
)

AUTHOR_CASES = (
    CaseSpec("figure1", "the authors' Figure-1 cell (PAPER §7.1) at ‖μ‖ = 64, N shrunk from 20 to 4",
             N=4, M=16, d=1024, d_h=512, d_v=512, mu_norm=64.0, sigma_p=4.0, sigma_w=0.2,
             init="torch_uniform_scaled", init_scale=16.0, lr=0.1, seed=6),
    CaseSpec("dynamics", "the authors' dynamics script (PAPER §7.2) at ‖μ‖ = 1, N shrunk from 10 to 4",
             N=4, M=3, d=2048, d_h=1024, d_v=512, mu_norm=1.0, sigma_p=1.0, sigma_w=0.05,
             init="torch_uniform_scaled", init_scale=32.0, lr=0.01, seed=7),
)

CASES = SMALL_CASES + AUTHOR_CASES


class Case(NamedTuple):
    spec: CaseSpec
    params: Params     # float64: W_Q, W_K (d, d_h), W_V (d, d_v), w_O (d_v,)
    X: np.ndarray      # (N, M, d)
    y: np.ndarray      # (N,) in {±1}


def build_case(spec: CaseSpec) -> Case:
    """The float64 arrays of one case. Only RNG draws and exact scalings: the same on every machine."""
    rng = streams(spec.seed)
    if spec.M >= 2:
        cfg = DataConfig(N=spec.N, M=spec.M, d=spec.d, mu_norm=spec.mu_norm, sigma_p=spec.sigma_p,
                         sigma_w=spec.sigma_w, n_test=2)
        X, y = sample(cfg, spec.N, rng.data)
    else:
        y = np.where(np.arange(spec.N) % 2 == 0, 1.0, -1.0)
        X = spec.sigma_p * rng.data.standard_normal((spec.N, 1, spec.d))
        X[y > 0, 0, 0] += spec.mu_norm            # μ₊ = ‖μ‖e₁, μ₋ = ‖μ‖e₂ as in refvit.data
        X[y < 0, 0, 1] += spec.mu_norm
    model = ModelConfig(d_h=spec.d_h, d_v=spec.d_v, init=spec.init, init_scale=spec.init_scale, sigma0=spec.sigma0)
    return Case(spec, init_params(model, spec.d, rng.init), X, y)


def select_cases(cases="all") -> tuple[CaseSpec, ...]:
    """"all", "small" (fast, no author settings), "authors", or a sequence of case names / ``CaseSpec``."""
    named = {"all": CASES, "small": SMALL_CASES, "authors": AUTHOR_CASES}
    if isinstance(cases, str):
        if cases not in named:
            raise ValueError(f"unknown cases {cases!r}; choose 'all', 'small', 'authors' or a list of case names")
        return named[cases]
    by_name = {c.name: c for c in CASES}
    out = []
    for c in cases:
        if isinstance(c, CaseSpec):
            out.append(c)
        elif c in by_name:
            out.append(by_name[c])
        else:
            raise ValueError(f"unknown case {c!r}; known cases are {sorted(by_name)}")
    if not out:
        raise ValueError("no cases selected")
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------------
# Reference: refvit.model in float64
# ---------------------------------------------------------------------------------------------------------------

def reference_step(params: Params, X, y, lr: float, train_w_O: bool) -> Params:
    """One GD step of the reference (PAPER §3): θ − lr ∇L, w_O only if ``train_w_O``."""
    _, g = loss_and_grads(params, X, y)
    return Params(params.W_Q - lr * g.W_Q, params.W_K - lr * g.W_K, params.W_V - lr * g.W_V,
                  params.w_O - lr * g.w_O if train_w_O else params.w_O.copy())


# ---------------------------------------------------------------------------------------------------------------
# The catalogue of known mistakes: one small dtype-generic model with a switch per mistake
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """The model of PAPER §2-3 with switches; ``Variant()`` is the reference itself (in ``dtype``).

    temperature: logits divided by √d_h.      softmax_over: "keys" (correct) or "queries".
    mean_over_queries: the 1/M of f.          mean_over_samples: the 1/n of the loss.
    loss: "logistic" (correct) or "exponential" exp(−y f).
    query_weight: "W_Q" (correct) or "W_K" (queries computed with W_K).
    transpose_logits: Z[l, j] = x_jᵀ W_Q W_Kᵀ x_l instead of x_lᵀ W_Q W_Kᵀ x_j.
    step_scale: the GD step is θ − step_scale·lr·∇L.
    flip_w_O: train w_O when it should be frozen, or vice versa.
    dtype: arithmetic precision.
    """
    temperature: bool = False
    softmax_over: str = "keys"
    mean_over_queries: bool = True
    mean_over_samples: bool = True
    loss: str = "logistic"
    query_weight: str = "W_Q"
    transpose_logits: bool = False
    step_scale: float = 1.0
    flip_w_O: bool = False
    dtype: str = "float64"

    def _cast(self, params, X):
        dt = np.dtype(self.dtype)
        return Params(*(np.asarray(a, dtype=dt) for a in params)), np.asarray(X, dtype=dt)

    def forward(self, params, X):
        """f (n,) and what the backward needs."""
        (W_Q, W_K, W_V, w_O), X = self._cast(params, X)
        M, d_h = X.shape[1], W_Q.shape[1]
        Q = X @ (W_K if self.query_weight == "W_K" else W_Q)           # (n, M, d_h)
        K = X @ W_K                                                     # (n, M, d_h)
        tau = X.dtype.type(1.0 / math.sqrt(d_h) if self.temperature else 1.0)
        Z = tau * (Q @ K.transpose(0, 2, 1))                            # (n, M, M) Z[l, j] = q_l·k_j
        if self.transpose_logits:
            Z = Z.transpose(0, 2, 1)                                    # Z[l, j] = q_j·k_l
        axis = -1 if self.softmax_over == "keys" else -2
        E = np.exp(Z - Z.max(axis=axis, keepdims=True))
        S = E / E.sum(axis=axis, keepdims=True)
        m = M if self.mean_over_queries else 1
        abar = S.sum(axis=1) / X.dtype.type(m)                          # (n, M)
        v = X @ (W_V @ w_O)                                             # (n, M)
        return (abar * v).sum(axis=1), (Q, K, S, v, tau, axis, abar, m)

    def loss_and_grads(self, params, X, y):
        """(loss, Params of gradients) by the chain rule through ``forward``."""
        f, (Q, K, S, v, tau, axis, abar, m) = self.forward(params, X)
        (W_Q, W_K, W_V, w_O), X = self._cast(params, X)
        y = np.asarray(y, dtype=X.dtype)
        n, M, d = X.shape
        margins = y * f
        if self.loss == "logistic":
            losses, dl = np.logaddexp(0, -margins), -expit(-margins)
        else:
            losses = np.exp(-margins)
            dl = -losses
        k = n if self.mean_over_samples else 1
        loss = losses.sum() / X.dtype.type(k)
        df = dl * y / X.dtype.type(k)                                   # (n,)
        dv = df[:, None] * abar                                         # (n, M)
        dS = np.broadcast_to((df[:, None] * v / X.dtype.type(m))[:, None, :], S.shape)
        dZ = S * (dS - (S * dS).sum(axis=axis, keepdims=True))          # softmax VJP along its axis
        if self.transpose_logits:
            dZ = dZ.transpose(0, 2, 1)
        dZ = tau * dZ
        dQ, dK = dZ @ K, dZ.transpose(0, 2, 1) @ Q                     # (n, M, d_h)
        Xf = X.reshape(n * M, d)
        dW_Q, dW_K = Xf.T @ dQ.reshape(n * M, -1), Xf.T @ dK.reshape(n * M, -1)
        if self.query_weight == "W_K":
            dW_Q, dW_K = np.zeros_like(dW_Q), dW_K + dW_Q
        du = Xf.T @ dv.reshape(n * M)                                   # (d,)
        return loss, Params(dW_Q, dW_K, np.outer(du, w_O), W_V.T @ du)

    def step(self, params, X, y, lr: float, train_w_O: bool) -> Params:
        """One GD step with this variant's gradient, step size and w_O rule."""
        _, g = self.loss_and_grads(params, X, y)
        p, _ = self._cast(params, X)
        eta = p.W_Q.dtype.type(self.step_scale * lr)
        train = train_w_O != self.flip_w_O
        return Params(p.W_Q - eta * g.W_Q, p.W_K - eta * g.W_K, p.W_V - eta * g.W_V,
                      p.w_O - eta * g.w_O if train else p.w_O.copy())


@dataclass(frozen=True)
class Mistake:
    name: str
    description: str
    variant: Variant
    applies: Callable[[str, bool], bool] = lambda dtype, train_w_O: True   # (checked dtype, train_w_O) -> bool


CATALOGUE = (
    Mistake("sqrt_dh_temperature", "logits divided by √d_h (the usual transformer scaling; this model has none, "
            "PAPER §2.1)", Variant(temperature=True)),
    Mistake("softmax_over_queries", "softmax normalized over the queries l instead of the keys j; then Σ_l s_lj = 1 "
            "and f collapses to the mean value score (PAPER §2.1)", Variant(softmax_over="queries")),
    Mistake("missing_1_over_M", "the 1/M average over the M query rows is missing: f is M times too large "
            "(PAPER §2.1)", Variant(mean_over_queries=False)),
    Mistake("missing_1_over_N", "the loss is summed over samples instead of averaged: loss and gradients are n "
            "times too large (PAPER §3)", Variant(mean_over_samples=False)),
    Mistake("exponential_loss", "exp(−y f) instead of the logistic loss log(1 + exp(−y f)) (PAPER §3)",
            Variant(loss="exponential")),
    Mistake("W_K_as_W_Q", "W_K used in place of W_Q: logits x_lᵀ W_K W_Kᵀ x_j (PAPER §2.1)",
            Variant(query_weight="W_K")),
    Mistake("transposed_logits", "transposed attention matrix W = W_Q W_Kᵀ: logits x_jᵀ W_Q W_Kᵀ x_l, i.e. Zᵀ, "
            "or W_Q and W_K swapped (PAPER §2.1)", Variant(transpose_logits=True)),
    Mistake("doubled_step", "the GD step is 2·lr·∇L (update applied twice, or the gradient accumulated twice)",
            Variant(step_scale=2.0)),
    Mistake("w_O_trained", "the GD step updates w_O although it is frozen in this setting (PAPER §2.2); pass "
            "train_w_O=True (--train-w-O) if you train it on purpose", Variant(flip_w_O=True),
            lambda dtype, train_w_O: not train_w_O),
    Mistake("w_O_frozen", "the GD step leaves w_O unchanged although train_w_O=True was asked for "
            "(e.g. requires_grad False)", Variant(flip_w_O=True), lambda dtype, train_w_O: train_w_O),
    Mistake("float32_accumulation", "arithmetic in float32 although float64 inputs were passed (a float32 tensor, "
            "default dtype, or accumulator): errors at the float32 level, matched with the float32 tolerances",
            Variant(dtype="float32"), lambda dtype, train_w_O: dtype == "float64"),
)
MISTAKES = {m.name: m for m in CATALOGUE}


# ---------------------------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------------------------

def block_error(yours, ref, zero: float = 0.0) -> float:
    """max|yours − ref| / max(max|yours|, max|ref|); inf on NaN, inf or a shape mismatch.

    Relative to the block's largest entry, so a near-zero entry does not dominate. When both blocks are zero up to
    ``zero`` (every entry |·| ≤ zero, e.g. dW_Q at M = 1 computed as rounding noise) the error is 0.
    """
    a = np.asarray(yours, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.inf
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
    if scale <= zero:
        return 0.0
    return float(np.max(np.abs(a - b))) / scale


def _grad_zero(dtype: str, *grads: Params) -> float:
    """The zero level of a gradient block: 100 ulps of the largest entry of any gradient block. A block that is
    exactly 0 mathematically (dW_Q at M = 1, or under a softmax over queries) comes out as rounding noise of the
    intermediate terms, measured ≤ 1e-16 × that entry. Even in float32 the level (1.2e-5 of the largest block)
    stays ≥ 60× below every block that is not exactly zero (smallest: dW_Q in "tiny_init", 8e-4 of the largest)."""
    return 100 * float(np.finfo(dtype).eps) * max(float(np.max(np.abs(b))) for g in grads for b in g)


def trajectory_error(yours: np.ndarray, ref: np.ndarray, start: np.ndarray) -> float:
    """Displacement-relative error of one parameter block at one step (see ``TRAJ_FLOOR``)."""
    a, b, s = (np.asarray(x, dtype=np.float64) for x in (yours, ref, start))
    if a.shape != b.shape or not np.all(np.isfinite(a)):
        return math.inf
    diff = float(np.max(np.abs(a - b), initial=0.0))
    if diff == 0.0:
        return 0.0
    scale = max(float(np.max(np.abs(a - s))), float(np.max(np.abs(b - s))), TRAJ_FLOOR * float(np.max(np.abs(b))))
    return diff / scale


@dataclass
class BlockResult:
    case: str
    block: str
    error: float        # max relative error against the reference (inf: NaN, inf or wrong shape)
    tol: float
    passed: bool


@dataclass
class CaseResult:
    name: str
    description: str
    settings: dict
    blocks: list = field(default_factory=list)      # BlockResult
    error: str | None = None                         # an exception raised by your function, if any
    diagnosis: list = field(default_factory=list)   # names of catalogue mistakes matching this case

    @property
    def passed(self) -> bool:
        return self.error is None and all(b.passed for b in self.blocks)


@dataclass
class Report:
    """What ``crosscheck`` found. ``passed``: every block of every case within tolerance, no exception.

    ``diagnosis``: catalogue mistakes (names of ``CATALOGUE``) that match your outputs on every case while the
    reference does not; ``rows()`` gives one dict per (case, block) for a DataFrame or JSON.
    """
    dtype: str
    train_w_O: bool
    cases: list
    diagnosis: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    def rows(self) -> list[dict]:
        return [dataclasses.asdict(b) for c in self.cases for b in c.blocks]

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "train_w_O": self.train_w_O, "passed": self.passed,
                "diagnosis": list(self.diagnosis), "cases": [dataclasses.asdict(c) for c in self.cases]}

    def format(self) -> str:
        blocks = [b for b in BLOCKS if any(r.block == b for c in self.cases for r in c.blocks)]
        w = max([len(c.name) for c in self.cases] + [8])
        lines = [f"refvit crosscheck: dtype {self.dtype}, w_O {'trained' if self.train_w_O else 'frozen'}, "
                 f"{len(self.cases)} cases; max relative error per block (! = above tolerance)",
                 " " * w + "".join(f"{b:>10s}" for b in blocks),
                 f"{'tol':<{w}s}" + "".join(f"{tolerance(self.dtype, b):>10.0e}" for b in blocks)]
        for c in self.cases:
            by = {r.block: r for r in c.blocks}
            cells = []
            for b in blocks:
                r = by.get(b)
                cells.append(f"{'-':>10s}" if r is None else f"{r.error:>9.1e}{' ' if r.passed else '!'}")
            lines.append(f"{c.name:<{w}s}" + "".join(cells) + ("  ok" if c.passed else "  FAIL"))
            if c.error:
                lines.append(f"{'':<{w}s}  error: {c.error}")
            elif c.diagnosis:
                lines.append(f"{'':<{w}s}  matches: {', '.join(c.diagnosis)}")
        lines.append("PASS: every block within tolerance." if self.passed else "FAIL.")
        if not self.passed:
            if self.diagnosis:
                lines.append("Diagnosis: your outputs match these known mistakes on every case:")
                lines += [f"  - {n}: {MISTAKES[n].description}" for n in self.diagnosis]
            else:
                lines.append("Diagnosis: no catalogued mistake matches all cases "
                             "(a per-case 'matches:' line above may still point to one).")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Running one case
# ---------------------------------------------------------------------------------------------------------------

def _call(fn, args, dtype):
    """Call a user function with fresh copies of its arrays in ``dtype``."""
    dt = np.dtype(dtype)
    return fn(*[np.array(a, dtype=dt, order="C", copy=True) if isinstance(a, np.ndarray) else a for a in args])


def _as_params(out, like: Params, what: str) -> Params:
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        raise ValueError(f"{what} must return 4 arrays (W_Q, W_K, W_V, w_O), got {type(out).__name__}")
    p = Params(*(np.asarray(a, dtype=np.float64) for a in out))
    for name, a, b in zip(Params._fields, p, like):
        if a.shape != b.shape:
            raise ValueError(f"{what} returned {name} of shape {a.shape}, expected {b.shape}")
    return p


class _Outputs(NamedTuple):
    """One implementation's numbers on one case, all as float64 arrays (absent blocks are None)."""
    f: np.ndarray | None
    loss: float | None
    grads: Params | None


def _user_outputs(case: Case, p0: Params, X, y, fns, dtype) -> _Outputs:
    forward_fn, grad_fn, _ = fns
    f = np.asarray(_call(forward_fn, (*p0, X), dtype), dtype=np.float64)
    if f.shape != y.shape:
        raise ValueError(f"forward_fn returned shape {f.shape}, expected (n,) = {y.shape}")
    loss = grads = None
    if grad_fn is not None:
        out = _call(grad_fn, (*p0, X, y), dtype)
        if not isinstance(out, (tuple, list)) or len(out) != 5:
            raise ValueError("grad_fn must return (loss, dW_Q, dW_K, dW_V, dw_O)")
        loss = float(np.asarray(out[0]).reshape(()))
        grads = _as_params(out[1:], p0, "grad_fn")
    return _Outputs(f, loss, grads)


def _model_outputs(model, p0, X, y, want_grads: bool) -> _Outputs:
    """``model``: None for the reference (refvit.model), else a ``Variant``."""
    if model is None:
        f = forward(p0, X)
        loss, grads = loss_and_grads(p0, X, y) if want_grads else (None, None)
    else:
        f = model.forward(p0, X)[0]
        loss, grads = model.loss_and_grads(p0, X, y) if want_grads else (None, None)
    cast = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    return _Outputs(cast(f), None if loss is None else float(loss),
                    None if grads is None else Params(*map(cast, grads)))


def _compare(user: _Outputs, other: _Outputs, dtype: str, ref: _Outputs) -> dict:
    """Errors of the non-trajectory blocks, {block: error}; ``ref`` (the reference) sets the gradients' zero level."""
    err = {"f": block_error(user.f, other.f)}
    if user.grads is not None:
        err["loss"] = block_error(user.loss, other.loss)
        zero = _grad_zero(dtype, ref.grads, other.grads)
        for name, a, b in zip(GRAD_BLOCKS, user.grads, other.grads):
            err[name] = block_error(a, b, zero)
    return err


def _trajectories(case: Case, p0: Params, X, y, step_fn, dtype, models, train_w_O, steps) -> list[dict]:
    """Iterate your step ``steps`` times and each model's in lockstep; max trajectory error per block per model.

    ``models``: list of None (the reference) or ``Variant``. Your iterates are fed back in ``dtype``; the reference
    runs in float64 from the same (rounded) start. Returns one {traj_block: max error over steps} per model.
    """
    lr = case.spec.lr
    dt = np.dtype(dtype)
    mine = p0
    theirs = [p0] * len(models)
    errs = [dict.fromkeys(TRAJ_BLOCKS, 0.0) for _ in models]
    for _ in range(steps):
        mine = _as_params(_call(step_fn, (*(a.astype(dt) for a in mine), X, y, lr), dtype), p0, "gd_step_fn")
        for k, model in enumerate(models):
            if model is None:
                theirs[k] = reference_step(theirs[k], X, y, lr, train_w_O)
            else:
                theirs[k] = Params(*(np.asarray(a, np.float64) for a in model.step(theirs[k], X, y, lr, train_w_O)))
            for name, a, b, s in zip(TRAJ_BLOCKS, mine, theirs[k], p0):
                errs[k][name] = max(errs[k][name], trajectory_error(a, b, s))
        if not all(np.all(np.isfinite(a)) for a in mine):
            for e in errs:
                e.update(dict.fromkeys(TRAJ_BLOCKS, math.inf))
            break
    return errs


def _within(errs: dict, dtype: str) -> bool:
    return all(e <= tolerance(dtype, b) for b, e in errs.items())


def _mistake_matches(mistake: Mistake, case: Case, inputs, user: _Outputs, ref: _Outputs, fns, dtype, train_w_O,
                     steps) -> bool:
    """Do your outputs match this mutant on every block of the case (within the mutant's dtype tolerance)?"""
    p0, X, y = inputs
    match_dtype = mistake.variant.dtype if dtype == "float64" else dtype
    other = _model_outputs(mistake.variant, p0, X, y, user.grads is not None)
    if not _within(_compare(user, other, match_dtype, ref), match_dtype):
        return False
    if fns[2] is None:
        return True
    errs = _trajectories(case, p0, X, y, fns[2], dtype, [mistake.variant], train_w_O, steps)[0]
    return _within(errs, match_dtype)


def _run_case(spec: CaseSpec, fns, dtype, train_w_O, steps):
    """Compare your functions with the reference on one case. Returns (CaseResult, state for the diagnosis)."""
    case = build_case(spec)
    dt = np.dtype(dtype)
    # What your functions receive, and what the reference evaluates: the case rounded to dtype, held as float64.
    p0 = Params(*(a.astype(dt).astype(np.float64) for a in case.params))
    X = case.X.astype(dt).astype(np.float64)
    y = case.y.copy()
    result = CaseResult(spec.name, spec.description, spec.to_dict())
    try:
        user = _user_outputs(case, p0, X, y, fns, dtype)
        ref = _model_outputs(None, p0, X, y, user.grads is not None)
        errs = _compare(user, ref, dtype, ref)
        if fns[2] is not None:
            errs.update(_trajectories(case, p0, X, y, fns[2], dtype, [None], train_w_O, steps)[0])
    except Exception as e:  # your function failed: report it for this case and go on
        result.error = f"{type(e).__name__}: {e} ({traceback.extract_tb(e.__traceback__)[-1].name})"
        return result, None
    result.blocks = [BlockResult(spec.name, b, float(e), tolerance(dtype, b), bool(e <= tolerance(dtype, b)))
                     for b, e in errs.items()]
    return result, (case, (p0, X, y), user, ref)


def crosscheck(forward_fn: Callable, grad_fn: Callable | None = None, gd_step_fn: Callable | None = None,
               dtype: str = "float64", *, train_w_O: bool = False, cases="all", steps: int = STEPS,
               verbose: bool = True) -> Report:
    """Compare your implementation with the reference on a battery of cases and diagnose mismatches.

    Parameters
    ----------
    forward_fn, grad_fn, gd_step_fn : your callables, with the contracts in this module's docstring. Only
        forward_fn is required; the loss and gradient blocks need grad_fn, the trajectory blocks gd_step_fn.
    dtype : "float64" or "float32": the dtype of every array passed to your functions, and which tolerances apply.
    train_w_O : whether your GD step trains w_O (default False: frozen, PAPER §2.2).
    cases : "all" (default: 5 small cases + the authors' two settings), "small", "authors", or a list of names.
    steps : length of the GD trajectory (20).
    verbose : print the report.

    Returns
    -------
    Report, with one ``CaseResult`` per case holding one ``BlockResult`` per block (f, loss, dW_Q, dW_K, dW_V,
    dw_O, traj_W_Q, traj_W_K, traj_W_V, traj_w_O) and the names of matching catalogue mistakes.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if not callable(forward_fn):
        raise ValueError("forward_fn must be callable: forward_fn(W_Q, W_K, W_V, w_O, X) -> f")
    for name, fn in (("grad_fn", grad_fn), ("gd_step_fn", gd_step_fn)):
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be callable or None")
    if not isinstance(train_w_O, bool):
        raise ValueError(f"train_w_O must be True or False, got {train_w_O!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    fns = (forward_fn, grad_fn, gd_step_fn)
    runs = [_run_case(spec, fns, dtype, train_w_O, steps) for spec in select_cases(cases)]
    results = [r for r, _ in runs]
    report = Report(dtype, train_w_O, results)
    if not report.passed:
        report.diagnosis = _diagnose(runs, fns, dtype, train_w_O, steps)
    if verbose:
        print(report.format())
    return report


def _diagnose(runs, fns, dtype, train_w_O, steps) -> list[str]:
    """Name the catalogue mistakes your outputs match on every case, while the reference fails somewhere.

    Each failing case lists the mutants it matches; the overall diagnosis keeps those matching every failing case,
    then checks them on the passing cases too (a mistake that the passing cases contradict is not named).
    Mutants are evaluated lazily (the trajectory only after f, loss and gradients match), so this costs little.
    """
    candidates = [m for m in CATALOGUE if m.applies(dtype, train_w_O)]
    failing = [(r, s) for r, s in runs if not r.passed]
    if any(s is None for _, s in failing):          # an exception: nothing to compare on that case
        candidates_all = None
    else:
        candidates_all = list(candidates)
    for r, s in failing:
        if s is None:
            continue
        r.diagnosis = [m.name for m in candidates if _mistake_matches(m, *s, fns, dtype, train_w_O, steps)]
        if candidates_all is not None:
            candidates_all = [m for m in candidates_all if m.name in r.diagnosis]
    if not candidates_all:
        return []
    for r, s in runs:
        if r.passed:
            candidates_all = [m for m in candidates_all if _mistake_matches(m, *s, fns, dtype, train_w_O, steps)]
    return [m.name for m in candidates_all]


# ---------------------------------------------------------------------------------------------------------------
# Command line: refvit crosscheck module:function [--grad module:function] [--step module:function]
# ---------------------------------------------------------------------------------------------------------------

def load_callable(ref: str) -> Callable:
    """"package.module:function" or "path/to/file.py:function" -> the function (the current folder is importable)."""
    mod_name, sep, attr = ref.rpartition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"expected module:function or file.py:function, got {ref!r}")
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.is_file():
            raise ValueError(f"no such file {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise ValueError(f"cannot import {mod_name!r}: {e}") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{mod_name} has no function {attr!r}")
    return fn


def cmd_crosscheck(args) -> int:
    report = crosscheck(load_callable(args.forward),
                        load_callable(args.grad) if args.grad else None,
                        load_callable(args.step) if args.step else None,
                        dtype=args.dtype, train_w_O=args.train_w_O, cases=args.cases, steps=args.steps)
    if args.json:
        from .io import save_json
        save_json(args.json, report.to_dict())
    return 0 if report.passed else 1


def add_subcommand(sub) -> None:
    p = sub.add_parser("crosscheck", help="check your implementation (forward, gradient, GD step) against refvit",
                       description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("forward", help="your forward: module:function or file.py:function, "
                                   "forward(W_Q, W_K, W_V, w_O, X) -> f (n,)")
    p.add_argument("--grad", help="grad(W_Q, W_K, W_V, w_O, X, y) -> (loss, dW_Q, dW_K, dW_V, dw_O)")
    p.add_argument("--step", help="step(W_Q, W_K, W_V, w_O, X, y, lr) -> (W_Q, W_K, W_V, w_O), one GD step")
    p.add_argument("--dtype", default="float64", choices=DTYPES, help="dtype of the arrays passed to you")
    p.add_argument("--train-w-O", dest="train_w_O", action="store_true",
                   help="your step trains w_O (default: frozen, PAPER §2.2)")
    p.add_argument("--cases", default="all", choices=["all", "small", "authors"])
    p.add_argument("--steps", type=int, default=STEPS, help="GD trajectory length")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=cmd_crosscheck)
