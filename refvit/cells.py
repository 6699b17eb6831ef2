"""One training cell of any setting (``refvit train``): its data and init from the cell's streams, trained by the
setting's objective on the shared trainer (``refvit.trainer.run``), with the setting's own history.

A cell (setting, N, ‖μ‖, seed) draws ``streams(seed, *cell_key(N, ‖μ‖))``: the same data and init as repeat 0 of
that cell in the setting's sweeps and studies. Left out, N, ‖μ‖, the step size and the number of steps are the
setting's defaults (``DEFAULTS``).
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from .config import SETTINGS, TrainConfig, default_backend
from .streams import cell_key, streams
from .trainer import History, run

# setting -> (N, ‖μ‖, {optimizer: (step size, steps)}): the cell ``refvit train --setting S`` trains by default
DEFAULTS = {
    "jiang2024": (20, 80.0, {"gd": (0.1, 1000), "signgd": (1e-3, 1000), "adam": (1e-3, 1000)}),   # Figure 1's cell
    "li2025": (20, 0.02, {"gd": (0.5, 300), "signgd": (1e-3, 900), "adam": (1e-3, 900)}),  # its study's dynamics
    "magen2025": (40, 7.0, {opt: (None, 2) for opt in ("gd", "signgd", "adam")}),   # two steps, η = η₀·n (17.1)
}


class Cell(NamedTuple):
    """A validated cell: what ``train_cell`` trains (``plan_cell`` makes it; nothing is computed yet)."""
    setting: str
    N: int
    mu: float
    seed: int
    data: object            # the setting's data config, N and ‖μ‖ (ρ in the third setting) filled in
    train: TrainConfig


def _jiang_data(N, mu):
    from .jiang2024.config import figure1_setting
    return figure1_setting(N=N, mu_norm=mu)[0]


def _li_data(N, mu):
    from .li2025.config import LiDataConfig
    return LiDataConfig(N=N, mu_norm=mu)


def _magen_data(N, mu):
    from .magen2025.study import DATA
    return DATA.replace(N=N, rho=mu)


def _jiang(cell: Cell):
    from .jiang2024.config import figure1_setting
    from .jiang2024.experiment import run_cell
    cfg = figure1_setting()[2].replace(**{k: getattr(cell.train, k) for k in ("lr", "steps", "optimizer", "backend",
                                                                             "coords")})
    track = cfg.optimizer == "gd"           # the coefficients are sums of GD increments (docs/math.md §7)
    run = run_cell(cell.data, figure1_setting()[1], cfg, seed=cell.seed, key=cell_key(cell.N, cell.mu), track=track)
    extra = {}
    if track:
        h = run.tracker.history((run.data.mu_plus, run.data.mu_minus))
        extra = {"c_step": np.arange(len(h["gamma_plus"])), "c_gamma_plus": h["gamma_plus"],
                 "c_gamma_minus": h["gamma_minus"], "c_y_rho": run.data.y * h["rho"]}
    return run.history, extra


def _li(cell: Cell):
    from .li2025.config import LiModelConfig
    from .li2025.data import make_dataset
    from .li2025.model import init_params
    from .li2025.objective import make_objective
    rng, model = streams(cell.seed, *cell_key(cell.N, cell.mu)), LiModelConfig()
    data = make_dataset(cell.data, rng.data, rng.test)
    return run(make_objective(init_params(model, cell.data.d, rng.init), data, model, cell.train.backend),
               cell.train)[1], {}


def _magen(cell: Cell):
    from .magen2025.data import make_dataset
    from .magen2025.experiment import MODEL
    from .magen2025.model import init_params
    from .magen2025.objective import MagenObjective
    rng = streams(cell.seed, *cell_key(cell.N, cell.mu))
    data = make_dataset(cell.data, rng.data, rng.test)
    return run(MagenObjective(init_params(MODEL, cell.data.d), data, MODEL), cell.train)[1], {}


# setting -> (its data config of (N, ‖μ‖), its trainer of a Cell)
KINDS = {"jiang2024": (_jiang_data, _jiang), "li2025": (_li_data, _li), "magen2025": (_magen_data, _magen)}


def plan_cell(setting: str, N: int | None = None, mu: float | None = None, lr: float | None = None,
              steps: int | None = None, optimizer: str = "gd", seed: int = 0, backend: str | None = None,
              coords: str = "span") -> Cell:
    """The cell ``train_cell`` trains, every setting checked (a ValueError naming the bad one), nothing computed.

    coords : "span" (exact token coordinates, GD only) or "dense"; the first setting only: the others train their
        weights. backend None: ``refvit.config.default_backend``."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {', '.join(SETTINGS)}")
    N0, mu0, schedule = DEFAULTS[setting]
    N, mu = N0 if N is None else N, mu0 if mu is None else float(mu)
    if optimizer not in schedule:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(schedule)}")
    lr0, steps0 = schedule[optimizer]
    if lr0 is None:                  # the third setting's study: η = η₀·n (docs/math.md (17.1))
        from .magen2025.study import STEP_SIZE
        lr0 = STEP_SIZE * N
    coords = coords if setting == "jiang2024" else "dense"
    cfg = TrainConfig(lr=lr0 if lr is None else lr, steps=steps0 if steps is None else steps, optimizer=optimizer,
                      backend=default_backend(backend), coords=coords)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return Cell(setting, N, mu, seed, KINDS[setting][0](N, mu), cfg)


def train_cell(cell: Cell) -> tuple[History, dict, dict]:
    """Train a planned cell; returns (History, summary, extra arrays). The extra arrays are the first setting's
    tracked coefficients under GD: c_step (T,), c_gamma_plus, c_gamma_minus (T,), c_y_rho (T, N), y_i·ρ_i
    (docs/math.md (7.6))."""
    t0 = time.perf_counter()
    history, extra = KINDS[cell.setting][1](cell)
    cfg = cell.train
    summary = {"setting": cell.setting, "N": cell.N, "mu_norm": cell.mu, "seed": cell.seed,
               "optimizer": cfg.optimizer, "lr": cfg.lr, "max_steps": cfg.steps, "backend": cfg.backend,
               "coords": cfg.coords, "status": history.status, "steps": history.steps,
               "train_loss": history.final_train_loss, "test_loss": history.final_test_loss,
               "test_error": history.final_test_error, "message": history.message,
               "seconds": time.perf_counter() - t0}
    return history, summary, extra
