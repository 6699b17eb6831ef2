"""Figure-3 training dynamics (docs/math.md §10.2): repeated runs of the authors' dynamics setting, per-step
histories saved.

The authors' only known dynamics script is the harmful setting (``dynamics_setting(mu_norm=1.0)``: M=3, d=2048, N=10,
d_h=1024, d_v=512, init ÷32, σ=1/0.05, η=0.01, 500 steps, 10 runs, N·SNR² = 0.005). Figure 3 of the paper is "Training
Dynamics Under Benign Overfitting Regime" with settings the paper does not give (docs/math.md §10.2, first bullet); we
take the same script with ‖μ‖ = 30, the benign value of docs/math.md (10.3): N·SNR² = 10·30²/(1²·2048) = 4.4, above the
Figure-1 boundary N·SNR² ≈ 2.5 (docs/math.md (1.9)) yet close enough that the noise still competes early on.

Run (regime, r) draws from ``streams(seed, N, ‖μ‖, r)``, like a sweep run; each run is one history file in the
folder (``benign_mu030_r003.npz``, ``refvit.results``; for GD with the tracked coefficients ``c_<name>``, see
``run_one``), written atomically, so a killed run resumes by skipping the files already done.

Verification (``refvit.runstore``). Each file's summary stores its identity (regime, ‖μ‖, repeat, seed and
``settings_hash``, the hash of ``Dynamics.settings()``); a resumed run and the figure read a file only when it is
that run, whole (every series one row per step), with a known status and coefficient kind and finite final losses
where its status promises them. On resume a file that fails is moved to ``quarantine/`` in the folder and
recomputed; the figure refuses it, naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import DataConfig, ModelConfig, dynamics_setting
from ..config import TrainConfig, default_backend
from .experiment import cell_key, run_cell
from ..io import check_writable
from ..results import dynamics_run_file, history_arrays
from ..runstore import claim, compute_missing, renew_manifest
from .saved import CATEGORIES, SERIES, load_runs, run_identity  # noqa: F401 - load_runs: the reader, re-exported

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
    def quick(cls, seed: int = 0, backend: str | None = None, coords: str = "span") -> "Dynamics":
        """The authors' setting, 10 runs per regime, the test loss at every step (needs the span backend)."""
        return cls._setting("quick", 10, seed, backend, coords)

    @classmethod
    def paper(cls, seed: int = 0, backend: str | None = None, coords: str = "span") -> "Dynamics":
        """Same as quick: the authors' 10 runs are already the full experiment (docs/math.md §10.2)."""
        return cls._setting("paper", 10, seed, backend, coords)

    @classmethod
    def _setting(cls, name, runs, seed, backend, coords) -> "Dynamics":
        data, model, train = dynamics_setting()
        backend = default_backend(backend)
        return cls(name, REGIMES, runs, seed, data, model, train.replace(coords=coords, backend=backend, eval_every=1))

    def to_dict(self) -> dict:
        return {"name": self.name, "regimes": [list(r) for r in self.regimes], "runs": self.runs,
                "seed": self.seed, "data": self.data.to_dict(), "model": self.model.to_dict(),
                "train": self.train.to_dict()}

    def specs(self) -> list[tuple[str, int, int]]:
        return [(name, mu, r) for name, mu in self.regimes for r in range(self.runs)]

    def identity(self, name: str, mu: int, repeat: int) -> dict:
        """The identity fields of run (regime, ‖μ‖, repeat), as stored in its file's summary."""
        return run_identity(self.to_dict(), name, mu, repeat)


def run_one(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int, repeat: int,
            identity: dict | None = None) -> dict:
    """One dynamics run (executes in a worker). Returns the arrays of its history file, never the d×d_h weights.

    With GD, training runs under ``refvit.jiang2024.tracking.CoefficientTracker``, which replays the recursions of
    docs/math.md (7.5), (7.6) from each step's forward cache: c_gamma_plus, c_gamma_minus (steps+1,) and c_y_rho
    (steps+1, N) = y_i ρ_i. The trajectory is the same as without it (the tracker never changes a weight).
    ``identity`` (``Dynamics.identity``) is stored in the summary, so the file can be checked when read back.
    """
    track = train_cfg.optimizer == "gd"   # the recursions (math 7.5) hold for GD only
    run = run_cell(data_cfg, model_cfg, train_cfg, seed=seed, key=cell_key(data_cfg.N, data_cfg.mu_norm, repeat),
                   track=track)
    coeffs = {}
    if track:
        data = run.data
        h = run.tracker.history((data.mu_plus, data.mu_minus))
        coeffs = {"gamma_plus": h["gamma_plus"], "gamma_minus": h["gamma_minus"], "y_rho": h["rho"] * data.y}
    summary = {**run.summary, "repeat": repeat, "coefficients": "tracked" if coeffs else "none", **(identity or {})}
    return history_arrays(run.history, summary,
                          **{f"c_{k}": np.asarray(v, dtype=np.float64) for k, v in coeffs.items()})


def run_dynamics(spec: Dynamics, out, executor=None, workers: int | None = None, progress: bool = True) -> None:
    """Run every missing run of ``spec`` into folder ``out`` (one history file per run) on an executor
    (``refvit.executors.execute``). A file that is not its run, or not whole, is quarantined and recomputed."""
    out = check_writable(out)
    with claim(out, "dynamics run"):
        renew_manifest(out / "dynamics.json", spec.to_dict(), ignore=("name", "regimes", "runs"))
        jobs = [(out / dynamics_run_file(name, mu, r), spec.identity(name, mu, r), run_one,
                 (spec.data.replace(mu_norm=float(mu)), spec.model, spec.train, spec.seed, r,
                  spec.identity(name, mu, r))) for name, mu, r in spec.specs()]
        compute_missing(jobs, f"dynamics {spec.name}", executor, workers, progress, where=out, series=SERIES, home=out,
                        categories=CATEGORIES)


if __name__ == "__main__":    # a library module: say which command runs it rather than exit 0 having done nothing
    raise SystemExit("refvit.jiang2024.dynamics is a library module; run it with "
                     "`refvit reproduce --preset quick (the sweep, then these dynamics runs)` "
                     "(or `python -m refvit.cli …`); `refvit --help` lists the commands")
