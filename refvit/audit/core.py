"""The audit's ground: tolerances with their reasons, rows and the report, the independent reference forward pass,
finite differences, and the instances every family runs on."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import scipy.special

from .. import gradcheck
from ..jiang2024 import config, data, init
from ..jiang2024.model import Params

# ---------------------------------------------------------------------------------------------------------------
# Tolerances. Every one says why it has that size.
# ---------------------------------------------------------------------------------------------------------------

# Two float64 code paths of the same arithmetic (different summation order or association): each differs by
# ~1e-16 per operation times the number of terms summed (≤ ~1e4 here) and the conditioning; 1e-11 leaves margin.
TOL_ROUND = 1e-11
TWO_PATHS = TOL_ROUND, "two float64 code paths: summation order only"   # (tolerance, reason) of a row
# A few float64 operations on exact inputs (a sqrt, a division): ~1e-16 each.
ARITHMETIC = 1e-14, "a few float64 operations (sqrt, division): ~1e-16 each"   # (tolerance, reason) of a row
# Central differences with h = 1e-5 in float64: truncation h^2·|f'''|/6 and rounding ε·|L|/h are both ~1e-10
# relative on O(1) problems. Saturated attention (logits ~10) and large margins (w_O scaled ×~30) raise the third
# derivatives by (h·|∂z/∂θ|)² and reach ~1e-6, so allow 1e-5; every deliberate break gives errors of order one.
TOL_FD = 1e-5
# The FD of a loss L_S resolves a gradient block to TOL_FD only if its largest entry is ≥ ~2e-4·L_S (rounding
# ε·L_S/h ≈ 2e-11·L_S): blocks below FD_RESOLVES·L_S are checked another way (or left out) by the settings' audits.
FD_RESOLVES = 1e-3
H_FD = 1e-5
# Directional differences on the paper-size blocks, error relative to ‖grad‖ (the largest possible directional
# derivative along a unit direction): FD rounding ε·|L|/h ≈ 1e-11 against ‖grad‖ ≥ ~1e-5 at the tiny init.
TOL_DIR = 1e-6
# The paper-form loops of ``formulas`` cost O(N M² d d_h) in Python: run them on the paper setting with M = 3
# (dynamics) and skip them for M = 16 (Figure 1), which would take tens of seconds on a loaded machine.
PAPER_FORM_MAX_M = 3
# Exact identities: no rounding can enter (a product with an exact zero, a count, an exact sign of each increment).
TOL_EXACT = 0.0
# Trajectories compared over a few GD steps (span vs dense, tracker vs recovery): per-step rounding ~1e-15 amplified
# by the steps and by the condition number of the token matrix (≤ ~1e3 here) on top of the cancellation in ΔW.
TOL_TRAJ = 1e-8
# Sampling statistics of the initialisation: the sample variance of n i.i.d. entries has relative std
# ≈ sqrt(Var(w²))/E(w²)/√n (0.89/√n uniform, 1.41/√n Gaussian); allow six of those (n ≥ 1e3 here).
STAT_SIGMAS = 6.0


@dataclass
class Row:
    """One audited claim. ``worst`` is the largest error over the instances (inf when non-finite)."""
    eq: str
    statement: str
    code: str
    check: str
    worst: float
    tol: float
    tol_reason: str
    ok: bool
    note: str = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["worst"], d["tol"] = _json_number(self.worst), _json_number(self.tol)
        return d


@dataclass
class Report:
    """All rows of one audit; ``passed`` is True when every row holds."""
    rows: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.rows)

    def failed(self) -> list:
        """The rows that do not hold."""
        return [r for r in self.rows if not r.ok]

    def to_dict(self) -> dict:
        """Strict JSON-able dict: non-finite numbers are the strings "nan", "inf", "-inf"."""
        return {"passed": self.passed, "seconds": _json_number(self.seconds), "n_rows": len(self.rows),
                "n_failed": len(self.failed()), "rows": [r.to_dict() for r in self.rows]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def format(self) -> str:
        """Aligned text table: eq, statement, code, check, worst error, tolerance, ok."""
        head = ("eq", "statement", "code", "check", "worst error", "tolerance", "ok")
        body = [(r.eq, r.statement, r.code, r.check, f"{r.worst:.2e}", f"{r.tol:.0e}" if r.tol else "0",
                 "ok" if r.ok else "FAIL") for r in self.rows]
        widths = [max(len(str(x[k])) for x in [head, *body]) for k in range(len(head))]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
        out = [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
        n_bad = len(self.failed())
        out.append(f"{len(self.rows)} rows, {n_bad} failed, {self.seconds:.1f} s: "
                   + ("every claim holds" if n_bad == 0 else "SOME CLAIMS DO NOT HOLD"))
        return "\n".join(out)


def _json_number(x):
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _row(eq, statement, code, check, errors, tol, reason, extra_ok=True, note="") -> Row:
    """A Row from a list of errors (one per instance); a non-finite error counts as inf and fails."""
    errs = [float(e) if np.isfinite(e) else math.inf for e in errors]
    worst = max(errs) if errs else math.inf
    return Row(eq, statement, code, check, worst, tol, reason, bool(worst <= tol and extra_ok), note)


err = gradcheck.compare_error   # max|a − b| / max(max|a|, max|b|); inf on non-finite or shape mismatch


# ---------------------------------------------------------------------------------------------------------------
# The independent side: this module's own forward, loss and finite differences (never the code under audit)
# ---------------------------------------------------------------------------------------------------------------

class Ref(NamedTuple):
    """Independent forward intermediates: Q, K (n, M, d_h), v (n, M), Z, S (n, M, M), abar (n, M), f (n,)."""
    Q: np.ndarray
    K: np.ndarray
    v: np.ndarray
    Z: np.ndarray
    S: np.ndarray
    abar: np.ndarray
    f: np.ndarray


def ref_core(Q, K, v) -> Ref:
    """(2.3)-(2.6) from Q, K (n, M, d_h) and v (n, M) with einsum and scipy's softmax."""
    M = Q.shape[1]
    Z = np.einsum("nla,nja->nlj", Q, K)
    S = scipy.special.softmax(Z, axis=-1)
    abar = np.einsum("nlj->nj", S) / M
    f = np.einsum("nlj,nj->n", S, v) / M
    return Ref(Q, K, v, Z, S, abar, f)


def ref_forward(p, X) -> Ref:
    """(2.1)-(2.7) for params p and X (n, M, d); the value path forms X W_V first (the other association)."""
    Q = np.einsum("nld,da->nla", X, p[0])
    K = np.einsum("nld,da->nla", X, p[1])
    v = np.einsum("nlb,b->nl", np.einsum("nld,db->nlb", X, p[2]), p[3])
    return ref_core(Q, K, v)


def ref_loss(f, y) -> float:
    """(3.3) mean logistic loss, by logaddexp."""
    return float(np.mean(np.logaddexp(0.0, -y * f)))


def ref_lprime(z):
    """ℓ'(z) = −1/(1 + e^z), written as −exp(−logaddexp(0, z)) (not the code's expit)."""
    return -np.exp(-np.logaddexp(0.0, z))


def ref_G(r: Ref):
    """(4.8) G (n, M, M) = (1/M) s_lj (v_j − Σ_k s_lk v_k) from independent intermediates."""
    M = r.S.shape[1]
    return r.S * (r.v[:, None, :] - np.einsum("nlk,nk->nl", r.S, r.v)[:, :, None]) / M


def _with(p, k, a):
    return Params(*(a if i == k else b for i, b in enumerate(p)))


def fd_loss_grads(p, X, y) -> Params:
    """Central-difference gradient of the independent L_S for every block (small shapes only)."""
    out = []
    for k in range(4):
        x = np.array(p[k], dtype=np.float64, copy=True)
        out.append(gradcheck.numerical_grad(lambda a, k=k: ref_loss(ref_forward(_with(p, k, a), X).f, y), x, H_FD))
    return Params(*out)


def fd_cotangent_grads(p, X, df) -> Params:
    """Central-difference gradient of Σ_n df_n f_n (independent f) for every block (small shapes only)."""
    out = []
    for k in range(4):
        x = np.array(p[k], dtype=np.float64, copy=True)
        out.append(gradcheck.numerical_grad(lambda a, k=k: float(df @ ref_forward(_with(p, k, a), X).f), x, H_FD))
    return Params(*out)


def dir_error(fun: Callable, grad, x, rng) -> float:
    """``gradcheck.directional_check`` along one random unit direction, error relative to max(‖grad‖, |numeric|)."""
    a, n = gradcheck.directional_check(fun, np.asarray(grad), np.array(x, dtype=np.float64), rng, H_FD)
    if not (np.isfinite(a) and np.isfinite(n)):
        return math.inf
    scale = max(float(np.linalg.norm(grad)), abs(n), 1e-300)
    return abs(a - n) / scale


# ---------------------------------------------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------------------------------------------

class Instance(NamedTuple):
    """One problem: params, X (n, M, d), y (n,), a test set, and for paper settings the configs and signals."""
    name: str
    p: Params
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    small: bool              # small enough for full finite differences and the paper-form loops
    signals: tuple | None = None
    lr: float = 0.1


def _random_instance(name, seed, n, M, d, d_h, d_v, qk_scale=1.0, out_scale=1.0) -> Instance:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, M, d))
    y = rng.choice(np.array([1.0, -1.0]), size=n)
    p = Params(qk_scale * rng.standard_normal((d, d_h)) / math.sqrt(d),
               qk_scale * rng.standard_normal((d, d_h)) / math.sqrt(d),
               rng.standard_normal((d, d_v)) / math.sqrt(d), out_scale * rng.standard_normal(d_v) / math.sqrt(d_v))
    Xt = rng.standard_normal((4, M, d))
    yt = rng.choice(np.array([1.0, -1.0]), size=4)
    return Instance(name, p, X, y, Xt, yt, True)


def small_instances() -> list:
    """Small random shapes: M = 1, odd n, d_h ≠ d_v, saturated attention, large margins, square K (d_h = M)."""
    out = [
        _random_instance("M=1", 1, n=3, M=1, d=4, d_h=3, d_v=2),
        _random_instance("odd", 2, n=5, M=3, d=7, d_h=3, d_v=4),
        _random_instance("dh=M", 3, n=3, M=4, d=6, d_h=4, d_v=5),
        _random_instance("saturated", 4, n=2, M=4, d=5, d_h=3, d_v=2, qk_scale=3.0),
        _random_instance("margin", 5, n=4, M=3, d=5, d_h=2, d_v=3),
        _random_instance("dh=d", 6, n=3, M=3, d=4, d_h=4, d_v=3),
    ]
    # large margins: rescale w_O so that every y_i f_i is about +25 (ℓ' ~ 1e-11)
    m = out[4]
    f = ref_forward(m.p, m.X).f
    p = m.p._replace(w_O=m.p.w_O * 25.0 / np.min(np.abs(f)))
    out[4] = m._replace(p=p, y=np.sign(ref_forward(p, m.X).f))
    return out


def paper_instances() -> list:
    """The paper's two settings with N = 4 (n_test = 8), at their initialisation and after 3 GD steps."""
    out = []
    for name, (dc, mc, tc), seed in (("figure1", config.figure1_setting(N=4), 11),
                                     ("dynamics", config.dynamics_setting(), 12)):
        dc = dc.replace(N=4, n_test=8)
        ds = data.make_dataset(dc, np.random.default_rng(seed), np.random.default_rng(seed + 100))
        p0 = init.init_params(mc, dc.d, np.random.default_rng(seed + 200))
        inst = Instance(f"{name} init", p0, ds.X, ds.y, ds.X_test, ds.y_test, False,
                        (ds.mu_plus, ds.mu_minus), tc.lr)
        p3 = _gd_independent(p0, ds.X, ds.y, tc.lr, 3)
        out += [inst, inst._replace(name=f"{name} 3 steps", p=p3)]
    return out


def _gd_independent(p, X, y, lr, steps) -> Params:
    """A few GD steps with the paper-form gradients' twin: the closed forms (4.12)-(4.14) on ``ref_forward``.

    Used only to move the paper settings off their initialisation (w_O frozen); independent of the code under audit.
    """
    for _ in range(steps):
        r = ref_forward(p, X)
        c = ref_lprime(y * r.f) * y / X.shape[0]
        A = np.einsum("n,nla,nlj,njb->ab", c, X, ref_G(r), X, optimize=True)       # (4.12)
        g = np.einsum("n,nj,njd->d", c, r.abar, X)                                  # Σ c_i X_iᵀ ā_i
        p = Params(p.W_Q - lr * A @ p.W_K, p.W_K - lr * A.T @ p.W_Q, p.W_V - lr * np.outer(g, p.w_O), p.w_O)
    return p




def cotangent(inst, seed) -> np.ndarray:
    """A random cotangent df (n,) for the backward checks (never all ones: the softmax JVP of 𝟙 is zero)."""
    return np.random.default_rng(seed).standard_normal(inst.X.shape[0])
