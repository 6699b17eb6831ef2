"""Figure-3 training dynamics (PAPER §7.2): repeated runs of the authors' dynamics setting, per-step histories saved.

The authors' only known dynamics script is the harmful setting (``dynamics_setting(mu_norm=1.0)``: M=3, d=2048,
N=10, d_h=1024, d_v=512, init ÷32, σ=1/0.05, η=0.01, 500 steps, 10 runs, N·SNR² = 0.005). Figure 3 of the paper is
"Training Dynamics Under Benign Overfitting Regime" with unknown settings (PAPER §7.2 [NOT FOUND]); we take the
same script with ‖μ‖ = 30, the benign value PAPER §7.2 measured: N·SNR² = 10·30²/(1²·2048) = 4.4, above the
Figure-1 boundary N·SNR² ≈ 2.5 (PAPER §1.3) yet close enough that the noise still competes early on.

Run (regime, r) draws from ``streams(seed, N, ‖μ‖, r)``, like a sweep run; each run is one ``.npz`` in the
folder (``benign_mu030_r003.npz``: ``step``, ``h_<key>`` for every ``train.HISTORY_KEYS`` entry, ``summary`` as
JSON text, and for GD the decomposed coefficients ``c_<name>`` of ``refvit.decompose``, see ``run_one``),
written atomically, so a killed run resumes by skipping the files that exist.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import DataConfig, ModelConfig, TrainConfig, dynamics_setting
from .data import make_dataset, streams
from .decompose import track_train
from .experiment import cell_key
from .init import init_params
from .io import save_npz, write_manifest
from .train import train

REGIMES = (("harmful", 1), ("benign", 30))     # (name, ‖μ‖): the authors' setting and its benign counterpart


@dataclass(frozen=True)
class Dynamics:
    """Repeated runs of one setting at a few ‖μ‖. ``data``/``model``/``train`` are templates (mu_norm replaced)."""
    name: str
    regimes: tuple = REGIMES
    runs: int = 10
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        object.__setattr__(self, "regimes", tuple((str(n), int(mu)) for n, mu in self.regimes))
        if isinstance(self.runs, bool) or not isinstance(self.runs, int) or self.runs <= 0:
            raise ValueError(f"runs must be a positive integer, got {self.runs!r}")
        if any(mu <= 0 for _, mu in self.regimes):
            raise ValueError(f"every regime needs a positive integer ‖μ‖, got {self.regimes}")

    @classmethod
    def quick(cls, seed: int = 0, backend: str | None = None) -> "Dynamics":
        """The authors' setting, 10 runs per regime, the test loss at every step (needs the span backend)."""
        return cls._setting("quick", 10, seed, backend)

    @classmethod
    def paper(cls, seed: int = 0, backend: str | None = None) -> "Dynamics":
        """Same as quick: the authors' 10 runs are already the full experiment (PAPER §7.2)."""
        return cls._setting("paper", 10, seed, backend)

    @classmethod
    def _setting(cls, name, runs, seed, backend) -> "Dynamics":
        data, model, train = dynamics_setting()
        return cls(name, REGIMES, runs, seed, data, model, train.replace(backend=backend or "span", eval_every=1))

    def to_dict(self) -> dict:
        return {"name": self.name, "regimes": [list(r) for r in self.regimes], "runs": self.runs,
                "seed": self.seed, "data": self.data.to_dict(), "model": self.model.to_dict(),
                "train": self.train.to_dict()}

    def specs(self) -> list[tuple[str, int, int]]:
        return [(name, mu, r) for name, mu in self.regimes for r in range(self.runs)]


def run_filename(regime: str, mu: int, rep: int) -> str:
    return f"{regime}_mu{mu:03d}_r{rep:03d}.npz"


def run_one(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int, repeat: int) -> dict:
    """One dynamics run (executes in a worker). Returns the arrays to save: small, never the d×d_h parameters.

    With GD, training runs under ``refvit.decompose.CoefficientTracker``, which replays the recursions of PAPER §5.2 from each step's forward cache: c_gamma_plus, c_gamma_minus (steps+1,) and
    c_y_rho (steps+1, N) = y_i ρ_i. The trajectory is the same as without it (the tracker never changes a weight).
    """
    t0 = time.perf_counter()
    key = cell_key(data_cfg.N, data_cfg.mu_norm, repeat)
    rng = streams(seed, *key)
    data = make_dataset(data_cfg, rng.data, rng.test)
    params0 = init_params(model_cfg, data_cfg.d, rng.init)
    signals = (data.mu_plus, data.mu_minus)
    coeffs = {}
    if train_cfg.optimizer == "gd":   # the recursions of PAPER §5.2 hold for GD only
        _, hist, tracker = track_train(params0, data.X, data.y, config=train_cfg, X_test=data.X_test, y_test=data.y_test,
                                 signals=signals)
        h = tracker.history(signals)
        coeffs = {"gamma_plus": h["gamma_plus"], "gamma_minus": h["gamma_minus"], "y_rho": h["rho"] * data.y}
    else:
        _, hist = train(params0, data.X, data.y, X_test=data.X_test, y_test=data.y_test, config=train_cfg)
    summary = {"N": data_cfg.N, "mu_norm": float(data_cfg.mu_norm), "snr": data_cfg.snr,
               "N_snr2": data_cfg.N * data_cfg.snr ** 2, "seed": seed, "key": list(key), "repeat": repeat,
               "steps": hist.steps, "status": hist.status, "train_loss": hist.final_train_loss,
               "test_loss": hist.final_test_loss, "test_error": hist.final_test_error,
               "coefficients": "tracked" if coeffs else "none", "seconds": time.perf_counter() - t0}
    arrays = {"step": hist.step, "summary": np.array(json.dumps(summary))}
    arrays.update({f"h_{k}": v for k, v in hist.values.items()})
    arrays.update({f"c_{k}": np.asarray(v, dtype=np.float64) for k, v in coeffs.items()})
    return arrays


def run_dynamics(spec: Dynamics, out, executor=None, workers: int | None = None, progress: bool = True) -> None:
    """Run every missing run of ``spec`` into folder ``out`` (one .npz per run) on an executor (see sweep.execute)."""
    from .sweep import execute
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out / "dynamics.json", spec.to_dict(), ignore=("name", "regimes", "runs"))
    tasks = [(run_one, (spec.data.replace(mu_norm=float(mu)), spec.model, spec.train, spec.seed, r),
              run_filename(name, mu, r))
             for name, mu, r in spec.specs() if not (out / run_filename(name, mu, r)).exists()]
    execute(tasks, lambda fname, arrays: save_npz(out / fname, **arrays), executor, workers,
            desc=f"dynamics {spec.name}", progress=progress, total=len(spec.specs()))
