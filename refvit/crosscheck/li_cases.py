"""The second setting's cases (Li et al., ``refvit.li2025``) and its reference: f, loss, gradients and training by
GD, SignGD or Adam (docs/math.md (13.10), (13.12), (13.27)–(13.29)).

Each case fixes, besides the data and the init, the switches your functions receive: c_L ("sum" or "mean",
docs/math.md (13.9)), the optimizer, the step size and the trained blocks (docs/math.md §13.7). Everything is
deterministic: a ``LiCaseSpec`` always builds the same arrays (``build_li_case``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..config import TrainConfig
from ..li2025.config import BLOCKS, LiDataConfig, LiModelConfig
from ..li2025.data import sample
from ..li2025.model import LiParams, forward_cache, init_params, loss_grads_cache
from ..optimizers import Optimizer
from ..streams import streams
from .cases import CASE_KINDS, LABEL_PATTERNS, Case
from .setting import case_groups, select_from

OPTIMIZERS = ("gd", "signgd", "adam")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8      # TrainConfig's defaults, which every Adam case uses


@dataclass(frozen=True)
class LiCaseSpec:
    """One case of the second setting: data (docs/math.md §13.1; the labels of ``LABEL_PATTERNS``, the signal
    token following them), widths and N(0, σ₀²) init (docs/math.md (13.11)), the switches c_L, optimizer, lr and
    trained, and the seed. λ = 1 (no temperature) in every case."""
    name: str
    description: str
    N: int
    d: int
    s: int
    m_k: int
    m_v: int
    mu_norm: float
    sigma_p: float
    sigma0: float
    optimizer: str = "gd"
    lr: float = 0.1
    c_L: str = "sum"
    trained: tuple = BLOCKS
    seed: int = 0
    labels: str = "balanced"
    signal_position: str = "random"
    steps: int = 0               # trajectory length of this case; 0: the ``steps`` of ``crosscheck`` (20)
    kind: str = "correctness"    # see CASE_KINDS

    def __post_init__(self):
        if self.kind not in CASE_KINDS:
            raise ValueError(f"kind must be one of {sorted(CASE_KINDS)}, got {self.kind!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.labels not in LABEL_PATTERNS:
            raise ValueError(f"labels must be one of {sorted(LABEL_PATTERNS)}, got {self.labels!r}")
        self.model()                               # c_L and trained validated by LiModelConfig
        object.__setattr__(self, "trained", tuple(self.trained))

    def model(self) -> LiModelConfig:
        return LiModelConfig(m_k=self.m_k, m_v=self.m_v, sigma0=self.sigma0, c_L=self.c_L, trained=self.trained)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["trained"] = list(self.trained)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "LiCaseSpec":
        return cls(**{**d, "trained": tuple(d.get("trained", BLOCKS))})


def _case(name, description, **kw) -> LiCaseSpec:
    base = dict(N=6, d=24, s=3, m_k=4, m_v=3, mu_norm=2.0, sigma_p=1.0, sigma0=0.3)
    return LiCaseSpec(name, description, **{**base, **kw})


LI_SMALL_CASES = (
    _case("gd_o1", "GD from an O(1) init: attention far from uniform, c_L = 1 (sum)", seed=101),
    _case("signgd_sparse", "SignGD, d = 40 with sparse noise: most gradient entries are exactly 0, so sgn(0) "
          "shows", d=40, sigma0=0.2, optimizer="signgd", lr=0.01, seed=102),
    _case("adam_mean", "Adam from a small init (gradient entries ~1e-4, where ε matters), c_L = 1/L (mean)",
          sigma0=0.01, optimizer="adam", lr=0.01, c_L="mean", seed=103),
    _case("gd_mean", "GD with c_L = 1/L (mean), m_k = 5 ≠ m_v = 2", m_k=5, m_v=2, sigma0=0.5, c_L="mean",
          seed=104),
    _case("signgd_frozen_V", "SignGD training W_Q and W_K only: W_V stays at its init", optimizer="signgd",
          lr=0.02, trained=("W_Q", "W_K"), seed=105),
)

LI_EDGE_CASES = (
    _case("square", "N = d = m_k = m_v = 5, labels in blocks (+ + + − −): every transpose has the right shape",
          N=5, d=5, s=2, m_k=5, m_v=5, sigma0=0.4, labels="blocks", seed=111),
    _case("one_class", "every label −1 (the positive class absent), N = 3, SignGD", N=3, optimizer="signgd",
          lr=0.02, labels="negative_only", seed=112),
    _case("N1", "a single sample (N = 1, label +1), Adam: catches a squeeze() of the sample axis", N=1,
          optimizer="adam", lr=0.01, labels="positive_only", seed=113),
    _case("unbalanced_odd", "odd N = 7, labels 5:2, Adam training W_Q only, c_L = 1/L", N=7, d=13, m_k=3, m_v=4,
          optimizer="adam", lr=0.02, c_L="mean", trained=("W_Q",), labels="unbalanced", seed=114),
    _case("large_margin", "|f| ~ 1e3, margins down to ≈ −1e3, logits ~ 1e5: overflows a literal log(1 + e^{−y f}) "
          "or a softmax without the max shift", N=6, d=12, s=3, mu_norm=400.0, sigma_p=20.0, sigma0=3.0,
          lr=1e-4, labels="blocks", seed=129, kind="robustness"),
    _case("long", "150 Adam steps at O(1) logits: slow drifts (bias correction, ε) add up", N=5, d=16,
          optimizer="adam", lr=0.01, labels="unbalanced", steps=150, seed=117),
)

LI_CASE_GROUPS = case_groups(LI_SMALL_CASES, LI_EDGE_CASES, ())


def select_li_cases(cases="all") -> tuple:
    """The second setting's cases of a group or a list of names, groups or ``LiCaseSpec``."""
    return select_from(LI_CASE_GROUPS, LiCaseSpec, cases, "the second setting")


def build_li_case(spec: LiCaseSpec) -> Case:
    """The float64 arrays of one case: ``Case(spec, LiParams, X (N, 2, d), y (N,))``."""
    rng = streams(spec.seed)
    cfg = LiDataConfig(N=spec.N, d=spec.d, s=spec.s, sigma_p=spec.sigma_p, mu_norm=spec.mu_norm,
                       signal_position=spec.signal_position, n_test=2)
    X, y, pos, _ = sample(cfg, spec.N, rng.data)
    pattern = LABEL_PATTERNS[spec.labels]
    y = np.where(np.arange(spec.N) % 2 == 0, 1.0, -1.0) if pattern is None else \
        np.resize(np.array(pattern, dtype=np.float64), spec.N)
    rows = np.arange(spec.N)
    X[rows, pos] = 0.0
    X[rows, pos, 0] = y * spec.mu_norm          # the signal token y·μ follows the label (docs/math.md (13.1))
    return Case(spec, init_params(spec.model(), spec.d, rng.init), X, y)


def li_extra_args(spec: LiCaseSpec, kind: str) -> tuple:
    """What your functions receive after (W_Q, W_K, W_V, X) or (…, X, y): c_L; for a step or a trainer also lr,
    the optimizer and the trained blocks."""
    return (spec.c_L,) if kind in ("forward", "grad") else (spec.c_L, spec.lr, spec.optimizer, spec.trained)


def li_forward(p, X, spec: LiCaseSpec) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return forward_cache(LiParams(*p), X, spec.model())[0]


def li_loss_and_grads(p, X, y, spec: LiCaseSpec):
    loss, grads, _, _ = loss_grads_cache(LiParams(*p), X, y, spec.model())
    return loss, grads


def li_logits(p, X, spec: LiCaseSpec) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return forward_cache(LiParams(*p), X, spec.model())[1].Z


def li_trajectory(p0, X, y, spec: LiCaseSpec, train_w_O: bool, steps: int):
    """θ_1 … θ_T and g_0 … g_{T−1} of the reference: ``refvit.optimizers.Optimizer`` (the trainer's update rules,
    docs/math.md (13.27)–(13.29)) on the trained blocks."""
    cfg = TrainConfig(optimizer=spec.optimizer, lr=spec.lr, adam_betas=ADAM_BETAS, adam_eps=ADAM_EPS)
    state = [np.array(a, dtype=np.float64) for a in p0]
    opt = Optimizer(cfg, state)
    trainable = [k in spec.trained for k in LiParams._fields]
    traj, grads = [], []
    for t in range(steps):
        _, g = li_loss_and_grads(LiParams(*state), X, y, spec)
        grads.append(g)
        opt.step(state, g, trainable, t)
        traj.append(LiParams(*(a.copy() for a in state)))
    return traj, grads


def li_fresh_step(p, X, y, spec: LiCaseSpec, train_w_O: bool):
    """One step of a newly created optimizer at p: Adam's first step differs from a later one (its moments start
    at 0); GD and SignGD keep no state (None: the trajectory's next iterate)."""
    return li_trajectory(p, X, y, spec, train_w_O, 1)[0][0] if spec.optimizer == "adam" else None
