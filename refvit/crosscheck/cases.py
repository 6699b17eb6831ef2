"""The battery of cases, the tolerances (with the reasons for their sizes) and the reference's GD step.

Everything here is deterministic: a ``CaseSpec`` always builds the same arrays (``build_case``), so the cases are
the same on every machine and can be written out as golden files (``refvit.golden``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..jiang2024.config import DataConfig, ModelConfig
from ..jiang2024.data import default_signals, sample
from ..streams import streams
from ..jiang2024.init import init_params
from ..jiang2024.model import Params, loss_and_grads
from .setting import case_groups, select_from

DTYPES = ("float64", "float32")
GRAD_BLOCKS = ("dW_Q", "dW_K", "dW_V", "dw_O")
TRAJ_BLOCKS = ("traj_W_Q", "traj_W_K", "traj_W_V", "traj_w_O")
# The trainer protocol: persistent trainer per block, a trainer recreated at every step, step(T) in one call.
TRAINER_BLOCKS = ("trainer_W_Q", "trainer_W_K", "trainer_W_V", "trainer_w_O", "trainer_restart", "trainer_step_k")
BLOCKS = ("f", "loss") + GRAD_BLOCKS + TRAJ_BLOCKS + TRAINER_BLOCKS

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
        # Trajectories in float32 are measured in rounding budgets (``rounding_budget``, derivation in
        # docs/crosscheck.md): correct float32 code stays ≤ 0.6 budget over every case (≤ 150 steps); a step
        # size off by 0.1 % is ≥ 14 budgets. 4 leaves 6× for amplification by the dynamics and is 3.5× below that.
        "traj": 4.0,
    },
}

# Trajectories are compared by their displacement from the start (so a wrong step size is not hidden under the
# initial weights), with a floor of TRAJ_FLOOR × max|B(t)|: a block that barely moves (W_Q at the paper's tiny
# init) is then not judged on float32 storage rounding, 20 steps × 6e-8 ≈ 1e-6 of |B|, 100× below the floor.
TRAJ_FLOOR = 1e-4
STEPS = 20

# float32 trajectories are judged against the rounding an exact float32 update accumulates (docs/crosscheck.md,
# "The float32 trajectory tolerance"): per step, one rounding of every stored parameter (F32_UNIT = 2⁻²⁴ of its
# largest entry) plus the float32 error of the gradient, F32_GRAD_ROUNDING of lr·max|g| (the largest float32
# gradient error measured, 3.9e-6 for JAX, rounded up to 1e-5).
F32_UNIT = 2.0 ** -24
F32_GRAD_ROUNDING = 1e-5


def tolerance(dtype: str, block: str) -> float:
    """The tolerance of ``TOLERANCES`` for one block ("f", "loss", a name of ``GRAD_BLOCKS`` or ``TRAJ_BLOCKS``)."""
    kind = "grad" if block in GRAD_BLOCKS else "traj" if block in TRAJ_BLOCKS + TRAINER_BLOCKS else block
    return TOLERANCES[dtype][kind]


# ---------------------------------------------------------------------------------------------------------------
# The battery of cases
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaseSpec:
    """One check case: data (docs/math.md §1.1, authors' isotropic noise), widths, init (docs/math.md (3.6)–(3.8)),
    step size and seed.

    M = 1 is built directly (one token μ_y + σ_p·noise per image), since ``DataConfig`` needs a signal and a noise
    token; everything else uses ``refvit.jiang2024.data.sample`` with balanced labels. ``init`` and its scale are those of
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
    labels: str = "balanced"     # see LABEL_PATTERNS
    steps: int = 0               # trajectory length of this case; 0: the ``steps`` of ``crosscheck`` (20)
    kind: str = "correctness"    # see CASE_KINDS

    def __post_init__(self):
        if self.kind not in CASE_KINDS:
            raise ValueError(f"kind must be one of {sorted(CASE_KINDS)}, got {self.kind!r}")

    def to_dict(self) -> dict:
        """The settings; ``labels`` and ``steps`` only when not at their defaults (older manifests stay valid)."""
        out = dataclasses.asdict(self)
        for key, default in (("labels", "balanced"), ("steps", 0), ("kind", "correctness")):
            if out[key] == default:
                del out[key]
        return out


# What a case checks. "correctness": the model at ordinary scales, where every correct implementation agrees with
# the reference whatever formulas it uses. "robustness": extreme scales (margins y·f ≈ −1e3, logits ≈ 1e6) where
# only numerically careful formulas stay finite; a correct formula written literally (PyTorch's SoftMarginLoss)
# fails there and nowhere else. The two verdicts are reported apart, with their own exit statuses.
CASE_KINDS = {"correctness": "ordinary scales", "robustness": "extreme margins and logits, where literal formulas "
                                                             "overflow"}


# Label patterns (first N entries of the pattern, repeated): implementations that assume alternating or balanced
# labels, or both classes in every batch, fail on the others. All are legal inputs of the loss (docs/math.md (3.3)).
LABEL_PATTERNS = {
    "balanced": None,                                   # +1, −1, +1, … (the authors' code, refvit.jiang2024.data)
    "unbalanced": (1, 1, -1, 1, 1, -1, 1),              # 5 of 7 positive, not alternating
    "blocks": (1, 1, 1, -1, -1, -1),                    # all positives first
    "negative_only": (-1,),                             # one class absent from the batch
    "positive_only": (1,),
}


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

EDGE_CASES = (
    CaseSpec("unbalanced_odd", "odd N = 7, labels 5:2 and not alternating; d, d_h, d_v, M, N all different",
             N=7, M=4, d=13, d_h=5, d_v=9, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3,
             init="gaussian", sigma0=0.3, lr=0.1, seed=11, labels="unbalanced"),
    CaseSpec("unbalanced_even", "even N = 6 with labels 4:2: unbalanced labels apart from odd N (the other "
             "unbalanced cases have odd N)", N=6, M=3, d=10, d_h=4, d_v=6, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3,
             init="gaussian", sigma0=0.3, lr=0.1, seed=18, labels="unbalanced"),
    CaseSpec("one_class", "every label −1 (the positive class absent from the batch), N = 3",
             N=3, M=3, d=10, d_h=4, d_v=6, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3,
             init="gaussian", sigma0=0.3, lr=0.1, seed=12, labels="negative_only"),
    CaseSpec("N1", "a single sample (N = 1, label +1): catches a squeeze() that drops the sample axis",
             N=1, M=3, d=9, d_h=4, d_v=7, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3,
             init="gaussian", sigma0=0.3, lr=0.1, seed=13, labels="positive_only"),
    CaseSpec("N1_M1", "N = 1 and M = 1 together: every batch and token axis has size 1",
             N=1, M=1, d=7, d_h=3, d_v=4, mu_norm=2.0, sigma_p=1.0, sigma_w=0.0,
             init="gaussian", sigma0=0.3, lr=0.1, seed=14, labels="positive_only"),
    CaseSpec("square", "N = M = d = d_h = d_v = 5: every transpose has the right shape, so only the numbers "
             "catch it", N=5, M=5, d=5, d_h=5, d_v=5, mu_norm=2.0, sigma_p=1.0, sigma_w=0.5,
             init="gaussian", sigma0=0.4, lr=0.1, seed=15, labels="blocks"),
    CaseSpec("large_margin", "|f| ~ 1e3, margins down to ≈ −1e3, logits ~ 1e6 (one-hot attention): overflows a "
             "naive log(1 + exp(−y f)) or a softmax without the max shift",
             N=6, M=3, d=12, d_h=4, d_v=6, mu_norm=200.0, sigma_p=30.0, sigma_w=30.0,
             init="gaussian", sigma0=10.0, lr=1e-3, seed=29, labels="blocks", kind="robustness"),
    CaseSpec("long", "150 GD steps at O(1) logits: slow drifts (a step size off by 0.1 %, decay, momentum) add up",
             N=5, M=3, d=10, d_h=4, d_v=6, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3,
             init="gaussian", sigma0=0.3, lr=0.1, seed=17, labels="unbalanced", steps=150),
)

CASES = SMALL_CASES + EDGE_CASES + AUTHOR_CASES


class Case(NamedTuple):
    """The float64 arrays of one case (``build_case``)."""
    spec: CaseSpec
    params: Params     # float64: W_Q, W_K (d, d_h), W_V (d, d_v), w_O (d_v,)
    X: np.ndarray      # (N, M, d)
    y: np.ndarray      # (N,) in {±1}


def build_case(spec: CaseSpec) -> Case:
    """The float64 arrays of one case. Only RNG draws and exact scalings: the same on every machine."""
    rng = streams(spec.seed)
    pattern = LABEL_PATTERNS[spec.labels]
    if spec.M >= 2:
        cfg = DataConfig(N=spec.N + spec.N % 2, M=spec.M, d=spec.d, mu_norm=spec.mu_norm, sigma_p=spec.sigma_p,
                         sigma_w=spec.sigma_w, n_test=2)
        X, y = sample(cfg, cfg.N, rng.data)
        X, y = X[:spec.N], y[:spec.N]
        if pattern is not None:
            y = np.resize(np.array(pattern, dtype=np.float64), spec.N)
            mu_plus, mu_minus = default_signals(cfg)
            X[:, 0] = np.where(y[:, None] > 0, mu_plus, mu_minus)      # the signal token follows the label
    else:
        y = np.where(np.arange(spec.N) % 2 == 0, 1.0, -1.0)
        if pattern is not None:
            y = np.resize(np.array(pattern, dtype=np.float64), spec.N)
        X = spec.sigma_p * rng.data.standard_normal((spec.N, 1, spec.d))
        X[y > 0, 0, 0] += spec.mu_norm            # μ₊ = ‖μ‖e₁, μ₋ = ‖μ‖e₂ as in refvit.jiang2024.data
        X[y < 0, 0, 1] += spec.mu_norm
    model = ModelConfig(d_h=spec.d_h, d_v=spec.d_v, init=spec.init, init_scale=spec.init_scale, sigma0=spec.sigma0)
    return Case(spec, init_params(model, spec.d, rng.init), X, y)


CASE_GROUPS = case_groups(SMALL_CASES, EDGE_CASES, AUTHOR_CASES)   # the groups' meaning: GROUP_MEANINGS


def select_cases(cases="all") -> tuple[CaseSpec, ...]:
    """A group ("all"; "small": the five golden cases; "edge": labels, sizes, margins, the long trajectory;
    "quick": small + edge; "authors"), or a sequence of case names, groups or ``CaseSpec``."""
    return select_from(CASE_GROUPS, CaseSpec, cases, "the first setting")


# ---------------------------------------------------------------------------------------------------------------
# Reference: refvit.jiang2024.model in float64
# ---------------------------------------------------------------------------------------------------------------

def reference_step(params: Params, X, y, lr: float, train_w_O: bool) -> Params:
    """One GD step of the reference (docs/math.md (6.1)): θ − lr ∇L, w_O only if ``train_w_O``."""
    _, g = loss_and_grads(params, X, y)
    return Params(params.W_Q - lr * g.W_Q, params.W_K - lr * g.W_K, params.W_V - lr * g.W_V,
                  params.w_O - lr * g.w_O if train_w_O else params.w_O.copy())

