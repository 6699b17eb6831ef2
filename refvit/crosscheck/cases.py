"""The battery of cases, the tolerances (with the reasons for their sizes) and the reference's GD step.

Everything here is deterministic: a ``CaseSpec`` always builds the same arrays (``build_case``), so the cases are
the same on every machine and can be written out as golden files (``refvit.golden``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..config import DataConfig, ModelConfig
from ..data import sample, streams
from ..init import init_params
from ..model import Params, loss_and_grads

DTYPES = ("float64", "float32")
GRAD_BLOCKS = ("dW_Q", "dW_K", "dW_V", "dw_O")
TRAJ_BLOCKS = ("traj_W_Q", "traj_W_K", "traj_W_V", "traj_w_O")
BLOCKS = ("f", "loss") + GRAD_BLOCKS + TRAJ_BLOCKS

# Tolerances on the relative error of ``block_error`` / ``trajectory_error``, per dtype and kind of block.
# Measured maxima over all seven cases (docs/crosscheck.md, "Tolerances"): correct float64
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
    """The tolerance of ``TOLERANCES`` for one block ("f", "loss", a name of ``GRAD_BLOCKS`` or ``TRAJ_BLOCKS``)."""
    kind = "grad" if block in GRAD_BLOCKS else "traj" if block in TRAJ_BLOCKS else block
    return TOLERANCES[dtype][kind]


# ---------------------------------------------------------------------------------------------------------------
# The battery of cases
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaseSpec:
    """One check case: data (docs/math.md §1.1, authors' isotropic noise), widths, init (docs/math.md (3.6)–(3.8)),
    step size and seed.

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
    CaseSpec("figure1", "the authors' Figure-1 cell (docs/math.md §10.1) at ‖μ‖ = 64, N shrunk from 20 to 4",
             N=4, M=16, d=1024, d_h=512, d_v=512, mu_norm=64.0, sigma_p=4.0, sigma_w=0.2,
             init="torch_uniform_scaled", init_scale=16.0, lr=0.1, seed=6),
    CaseSpec("dynamics", "the authors' dynamics script (docs/math.md §10.2) at ‖μ‖ = 1, N shrunk from 10 to 4",
             N=4, M=3, d=2048, d_h=1024, d_v=512, mu_norm=1.0, sigma_p=1.0, sigma_w=0.05,
             init="torch_uniform_scaled", init_scale=32.0, lr=0.01, seed=7),
)

CASES = SMALL_CASES + AUTHOR_CASES


class Case(NamedTuple):
    """The float64 arrays of one case (``build_case``)."""
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
    """One GD step of the reference (docs/math.md (6.1)): θ − lr ∇L, w_O only if ``train_w_O``."""
    _, g = loss_and_grads(params, X, y)
    return Params(params.W_Q - lr * g.W_Q, params.W_K - lr * g.W_K, params.W_V - lr * g.W_V,
                  params.w_O - lr * g.w_O if train_w_O else params.w_O.copy())

