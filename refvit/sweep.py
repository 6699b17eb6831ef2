"""The Figure-1 sweep (PAPER §7.1): many independent training runs over a grid of (N, ‖μ‖, repeat), resumable.

Layout of a sweep folder (``results/sweep_<preset>/``):

    sweep.json   the settings that determine every run's numbers (configs, base seed); checked on resume
    runs/        one small JSON per finished run, ``N010_mu064_r003.json``, written atomically (``refvit.io``)
    table.csv    the tidy table, one row per run of the grid, sorted by (N, ‖μ‖, repeat); rebuilt from runs/

Reproducibility. Run (N, ‖μ‖, r) draws its data, test set and init from ``streams(seed, *cell_key(N, ‖μ‖, r))``
(``refvit.data.streams``), so any cell is reproducible alone and the order in which runs finish does not matter.
A killed sweep restarted on the same folder skips every run that has a file and computes only the rest; since each
finished run's row is stored once and never recomputed, the final table equals the uninterrupted one *in every
column except* the timing columns ``seconds`` and ``cpu_seconds`` (wall-clock and worker CPU time, recorded per run
but not reproducible by nature; they are the last two columns). ``table_rows(..., timing=False)`` drops them.

Parallelism. Runs execute on any ``concurrent.futures.Executor``: by default a ``ProcessPoolExecutor`` with the
"spawn" start method and one BLAS thread per worker (OPENBLAS/OMP/MKL/NUMBA_NUM_THREADS=1 are put in the workers'
environment before they start, i.e. before they import numpy), one worker per core. A dask.distributed cluster
works through ``client.get_executor()`` (see the README). The parent process writes the run files, so workers
need no shared file system.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import os
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from .config import DataConfig, ModelConfig, TrainConfig, figure1_setting
from .io import atomic_write, load_json, save_csv, save_json, write_manifest

# One row per run. Order = column order of table.csv. The timing columns come last and are the only ones that may
# differ between an interrupted-and-resumed sweep and an uninterrupted one: "seconds" is the run's wall-clock time,
# "cpu_seconds" the worker's CPU time for it (on a shared machine the wall clock also counts other processes).
COLUMNS = ("N", "mu_norm", "repeat", "seed", "snr", "snr_axis", "N_snr2", "N_snr_axis2", "steps", "status",
           "converged", "train_loss", "test_loss", "test_error", "attn_signal", "attn_noise", "seconds", "cpu_seconds")
TIMING_COLUMNS = ("seconds", "cpu_seconds")
_INT = {"N", "repeat", "seed", "steps"}
_STR = {"status"}
_BOOL = {"converged"}

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# ---------------------------------------------------------------------------------------------------------------
# The sweep definition
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sweep:
    """A grid of runs. ``data``/``model``/``train`` are templates: each run replaces data.N and data.mu_norm.

    Ns : training-set sizes (even, for balanced labels).   mu_norms : signal norms ‖μ‖ (integers: they key streams).
    repeats : runs per cell, repeat r ∈ [0, repeats).       seed : base seed of every stream.
    snr_axis_sigma : σ of the authors' plotted SNR axis (0.2, the weak tokens; PAPER §1.3); metadata for figures.
    """
    name: str
    Ns: tuple
    mu_norms: tuple
    repeats: int
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    snr_axis_sigma: float = 0.2
    stream_tag: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "Ns", tuple(int(n) for n in self.Ns))
        object.__setattr__(self, "stream_tag", tuple(int(t) for t in self.stream_tag))
        mus = []
        for mu in self.mu_norms:
            if float(mu) != int(mu) or int(mu) <= 0:
                raise ValueError(f"mu_norms must be positive integers (they are part of the stream key), got {mu!r}")
            mus.append(int(mu))
        object.__setattr__(self, "mu_norms", tuple(mus))
        if not self.Ns or not self.mu_norms:
            raise ValueError("Ns and mu_norms must be non-empty")
        if len(set(self.Ns)) != len(self.Ns) or len(set(self.mu_norms)) != len(self.mu_norms):
            raise ValueError("Ns and mu_norms must not repeat values")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats <= 0:
            raise ValueError(f"repeats must be a positive integer, got {self.repeats!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        for N in self.Ns:       # validate every cell's config now, not in a worker halfway through the sweep
            self.data.replace(N=N)
        # N and ‖μ‖ of the template are placeholders (each run replaces them): normalize so equal sweeps compare equal
        object.__setattr__(self, "data", self.data.replace(N=min(self.Ns), mu_norm=float(min(self.mu_norms))))

    # --- presets (named constructors) ---------------------------------------------------------------------------
    @classmethod
    def quick(cls, seed: int = 0, backend: str | None = None) -> "Sweep":
        """Coarse Figure-1 grid for the README's main command: 6 N × 10 ‖μ‖ × 2 seeds = 120 runs."""
        return cls._figure1("quick", (2, 4, 8, 12, 16, 20), tuple(range(10, 101, 10)), 2, seed, backend)

    @classmethod
    def paper(cls, seed: int = 0, backend: str | None = None) -> "Sweep":
        """The authors' full grid (PAPER §7.1): N ∈ {2,…,20} × ‖μ‖ ∈ {1,…,100} × 10 seeds = 10,000 runs."""
        return cls._figure1("paper", tuple(range(2, 21, 2)), tuple(range(1, 101)), 10, seed, backend)

    @classmethod
    def _figure1(cls, name, Ns, mus, repeats, seed, backend) -> "Sweep":
        data, model, train = figure1_setting()
        return cls(name, Ns, mus, repeats, seed, data, model,
                   train.replace(backend=backend or "span"))

    # --- derived ----------------------------------------------------------------------------------------------
    def specs(self) -> list[tuple[int, int, int]]:
        """Every run as (N, ‖μ‖, repeat), in table order."""
        return [(N, mu, r) for N in sorted(self.Ns) for mu in sorted(self.mu_norms) for r in range(self.repeats)]

    def settings(self) -> dict:
        """What determines the numbers of run (N, ‖μ‖, r): everything but the grid. Stored in sweep.json."""
        data = self.data.to_dict()
        for k in ("N", "mu_norm"):
            data.pop(k)
        out = {"seed": self.seed, "data": data, "model": self.model.to_dict(), "train": self.train.to_dict(),
               "snr_axis_sigma": self.snr_axis_sigma}
        if self.stream_tag:            # only when set, so untagged sweep folders keep their manifests
            out["stream_tag"] = list(self.stream_tag)
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "Ns": list(self.Ns), "mu_norms": list(self.mu_norms), "repeats": self.repeats,
                **self.settings()}

    @classmethod
    def from_dict(cls, d: dict) -> "Sweep":
        data = DataConfig.from_dict({**d["data"], "N": min(d["Ns"]), "mu_norm": float(min(d["mu_norms"]))})
        return cls(d["name"], tuple(d["Ns"]), tuple(d["mu_norms"]), d["repeats"], d["seed"], data,
                   ModelConfig.from_dict(d["model"]), TrainConfig.from_dict(d["train"]), d["snr_axis_sigma"],
                   tuple(d.get("stream_tag", ())))

    def cell_configs(self, N: int, mu: int) -> tuple[DataConfig, ModelConfig, TrainConfig]:
        return self.data.replace(N=N, mu_norm=float(mu)), self.model, self.train


def run_filename(N: int, mu: int, rep: int) -> str:
    return f"N{N:03d}_mu{mu:03d}_r{rep:03d}.json"


def run_one(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int, repeat: int,
            snr_axis_sigma: float = 0.2, stream_tag: tuple = ()) -> dict:
    """One sweep run (executes in a worker): streams(seed, *cell_key(N, ‖μ‖, repeat), *stream_tag), train, and
    return its table row. A non-empty ``stream_tag`` (e.g. the studies' pilot runs) gives streams that no untagged
    run of any seed can draw."""
    from .experiment import cell_key, run_cell
    cpu0 = time.process_time()
    key = cell_key(data_cfg.N, data_cfg.mu_norm, repeat) + tuple(stream_tag)
    s = run_cell(data_cfg, model_cfg, train_cfg, seed=seed, key=key).summary
    snr_axis = data_cfg.snr_axis(snr_axis_sigma)
    row = {k: s[k] for k in ("N", "mu_norm", "seed", "snr", "steps", "status", "converged", "train_loss",
                             "test_loss", "test_error", "attn_signal", "attn_noise", "seconds")}
    row.update(repeat=repeat, snr_axis=snr_axis, N_snr2=data_cfg.N * data_cfg.snr ** 2,
               N_snr_axis2=data_cfg.N * snr_axis ** 2, cpu_seconds=time.process_time() - cpu0)
    return {k: row[k] for k in COLUMNS}


# ---------------------------------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------------------------------

class SerialExecutor(Executor):
    """Runs each task at submit time in this process (``workers=0``; tests and debugging)."""

    def submit(self, fn, /, *args, **kwargs):
        fut = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - handed to the caller through the future, like a real executor
            fut.set_exception(e)   # KeyboardInterrupt and SystemExit are not caught: they stop the sweep at once
        return fut


@contextlib.contextmanager
def single_thread_env():
    """Put ``X_NUM_THREADS=1`` in os.environ while workers are spawned (they inherit it before importing numpy)."""
    old = {k: os.environ.get(k) for k in BLAS_ENV}
    os.environ.update({k: "1" for k in BLAS_ENV})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def default_executor(workers: int | None = None):
    """A spawn-context process pool with single-threaded BLAS workers (``workers=0``: run serially here)."""
    workers = available_cores() if workers is None else workers
    if workers == 0:
        yield SerialExecutor()
        return
    import multiprocessing
    with single_thread_env():
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            yield ex
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def executor_context(executor: Executor | None = None, workers: int | None = None):
    """``executor`` as a context that does not shut it down, or a new ``default_executor(workers)``."""
    return contextlib.nullcontext(executor) if executor is not None else default_executor(workers)


def execute(tasks: list, save, executor: Executor | None = None, workers: int | None = None,
            desc: str = "runs", progress: bool = True, total: int | None = None, window: int = 256) -> None:
    """Submit ``tasks`` [(fn, args, tag)] and call ``save(tag, result)`` in this process as each one finishes.

    At most ``window`` tasks are submitted ahead of the saved ones (1 for the serial executor, which runs a task as
    it is submitted), so killing the sweep loses at most the runs in flight: every computed run is saved first.
    """
    from tqdm.auto import tqdm
    total = len(tasks) if total is None else total
    bar = tqdm(total=total, initial=total - len(tasks), desc=desc, unit="run", disable=not progress,
               dynamic_ncols=True)
    with executor_context(executor, workers) as ex:
        limit = 1 if isinstance(ex, SerialExecutor) else window
        todo, pending = iter(tasks), {}
        try:
            while True:
                for fn, args, tag in itertools.islice(todo, limit - len(pending)):
                    pending[ex.submit(fn, *args)] = tag
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    save(pending.pop(fut), fut.result())
                    bar.update(1)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        finally:
            bar.close()


# ---------------------------------------------------------------------------------------------------------------
# Running a sweep and assembling its table
# ---------------------------------------------------------------------------------------------------------------

def run_sweep(sweep: Sweep, out, executor: Executor | None = None, workers: int | None = None,
              progress: bool = True) -> list[dict]:
    """Run every missing run of ``sweep`` into folder ``out`` and write out/table.csv. Returns the table rows.

    executor : any ``concurrent.futures.Executor`` (e.g. dask's ``client.get_executor()``); default: a spawn
        process pool with ``workers`` single-threaded workers (default: one per core; 0: serial in this process).
    """
    out = Path(out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    write_manifest(out / "sweep.json", sweep.to_dict(), ignore=("name", "Ns", "mu_norms", "repeats"))
    specs = sweep.specs()
    tasks = [(run_one, (*sweep.cell_configs(N, mu), sweep.seed, r, sweep.snr_axis_sigma, sweep.stream_tag), (N, mu, r))
             for N, mu, r in specs if not (runs / run_filename(N, mu, r)).exists()]
    execute(tasks, lambda tag, row: save_json(runs / run_filename(*tag), row), executor, workers,
            desc=f"sweep {sweep.name}", progress=progress, total=len(specs))
    return write_table(sweep, out)


def table_rows(sweep: Sweep, out, timing: bool = True) -> list[dict]:
    """The rows of the grid's runs from out/runs/, sorted by (N, ‖μ‖, repeat); ``timing=False`` drops seconds."""
    runs = Path(out) / "runs"
    rows, missing = [], []
    for N, mu, r in sweep.specs():
        path = runs / run_filename(N, mu, r)
        if not path.exists():
            missing.append(path.name)
            continue
        row = load_json(path)
        row.setdefault("cpu_seconds", float("nan"))        # runs saved before that column existed
        rows.append({k: row[k] for k in COLUMNS if timing or k not in TIMING_COLUMNS})
    if missing:
        raise ValueError(f"{len(missing)} runs missing in {runs} (e.g. {missing[0]}); run the sweep to finish them")
    return rows


def write_table(sweep: Sweep, out) -> list[dict]:
    """Assemble out/table.csv from the run files (deterministic: fixed column order, sorted rows)."""
    rows = table_rows(sweep, out)
    save_csv(Path(out) / "table.csv", rows, COLUMNS)
    return rows


def load_table(path) -> dict:
    """Read a table.csv into columns: {name: numpy array} with ints, floats, bools and strings typed."""
    import numpy as np
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path} has no rows")
    cols = {}
    for k in reader.fieldnames:
        vals = [r[k] for r in rows]
        if k in _INT:
            cols[k] = np.array([int(v) for v in vals])
        elif k in _BOOL:
            cols[k] = np.array([v == "True" for v in vals])
        elif k in _STR:
            cols[k] = np.array(vals)
        else:
            cols[k] = np.array([float(v) for v in vals])
    return cols


# ---------------------------------------------------------------------------------------------------------------
# `refvit reproduce`: sweep + fit + dynamics + figures + summary
# ---------------------------------------------------------------------------------------------------------------

PRESETS = ("quick", "paper")


def reproduce(preset: str, results="results", figures="figures", seed: int = 0, backend: str | None = None,
              workers: int | None = None, executor: Executor | None = None, progress: bool = True,
              n_boot: int | None = None, dynamics: bool = True) -> dict:
    """Run the preset's Figure-1 sweep and Figure-3 dynamics, fit the boundary, draw the figures, write a summary."""
    from . import dynamics as dyn
    from . import fit as fitmod
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    results, figures = Path(results), Path(figures)
    t_start = time.perf_counter()
    timing = {}
    sweep = getattr(Sweep, preset)(seed=seed, backend=backend)
    sweep_dir = results / f"sweep_{preset}"
    t0 = time.perf_counter()
    rows = run_sweep(sweep, sweep_dir, executor=executor, workers=workers, progress=progress)
    timing["sweep_seconds"] = time.perf_counter() - t0
    timing["sweep_run_seconds_sum"] = sum(r["seconds"] for r in rows)
    timing["sweep_run_cpu_seconds_sum"] = sum(r["cpu_seconds"] for r in rows)

    t0 = time.perf_counter()
    boot = n_boot if n_boot is not None else (200 if preset == "quick" else 1000)
    fit = fitmod.fit_sweep(sweep_dir, n_boot=boot, seed=seed)
    timing["fit_seconds"] = time.perf_counter() - t0

    dyn_dir = results / f"dynamics_{preset}"
    if dynamics:
        t0 = time.perf_counter()
        dspec = getattr(dyn.Dynamics, preset)(seed=seed, backend=backend)
        dyn.run_dynamics(dspec, dyn_dir, executor=executor, workers=workers, progress=progress)
        timing["dynamics_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    from analysis import fig_heatmap
    fig_heatmap.main([str(sweep_dir), "--out", str(figures / f"figure1_{preset}.png")])
    if dynamics:
        from analysis import fig_dynamics
        fig_dynamics.main([str(dyn_dir), "--out", str(figures / f"figure3_{preset}.png")])
    timing["figures_seconds"] = time.perf_counter() - t0
    timing["total_seconds"] = time.perf_counter() - t_start

    summary = _summary_text(preset, sweep, rows, fit, timing, workers)
    figures.mkdir(parents=True, exist_ok=True)
    atomic_write(figures / f"summary_{preset}.txt", lambda fh: fh.write(summary.encode()))
    print(summary)
    return {"timing": timing, "fit": fit}


def _summary_text(preset, sweep, rows, fit, timing, workers) -> str:
    from .fit import describe
    n_conv = sum(r["converged"] for r in rows)
    lines = [
        f"refvit reproduce --preset {preset}",
        f"Figure 1 sweep: {len(sweep.Ns)} N x {len(sweep.mu_norms)} |mu| x {sweep.repeats} seeds = {len(rows)} runs "
        f"(backend {sweep.train.backend}, base seed {sweep.seed}); converged {n_conv}/{len(rows)}",
        describe(fit),
        "timing (wall clock, seconds): " + ", ".join(f"{k.replace('_seconds', '')} {v:.1f}"
                                                     for k, v in timing.items() if k.endswith("_seconds")),
        f"  sweep runs: sum of wall-clock seconds {timing['sweep_run_seconds_sum']:.1f}, of worker CPU seconds "
        f"{timing['sweep_run_cpu_seconds_sum']:.1f}, on {workers if workers is not None else available_cores()} "
        "worker(s)",
    ]
    return "\n".join(lines) + "\n"


def cmd_reproduce(args) -> int:
    reproduce(args.preset, args.results, args.figures, seed=args.seed, backend=args.backend, workers=args.workers,
              progress=not args.no_progress, n_boot=args.n_boot, dynamics=not args.no_dynamics)
    return 0


def add_subcommand(sub) -> None:
    p = sub.add_parser("reproduce", help="run the Figure-1 sweep and Figure-3 dynamics, fit the boundary, draw",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Run a preset's experiments into RESULTS (resumable: rerun to finish a killed "
                                   "run) and draw the figures and a text summary into FIGURES.")
    p.add_argument("--preset", choices=PRESETS, default="quick",
                   help="quick: 120-run coarse grid + the 20 dynamics runs (< 3 min on 2 cores); paper: the full "
                        "10,000-run grid (PAPER §7.1) + the same dynamics")
    p.add_argument("--seed", type=int, default=0, help="base seed of every random stream")
    p.add_argument("--backend", default=None, choices=["auto", "numpy", "numba", "span"],
                   help="training backend (default: span if available, else auto)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core; 0: serial)")
    p.add_argument("--results", default="results", help="folder for saved runs")
    p.add_argument("--figures", default="figures", help="folder for figures and the summary")
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples of the fit (default 200/1000)")
    p.add_argument("--no-dynamics", action="store_true", help="skip the Figure-3 dynamics runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)


def main(argv=None) -> int:
    """``python -m refvit.sweep``: run one sweep preset into a folder (no figures)."""
    p = argparse.ArgumentParser(description="Run a Figure-1 sweep preset (resumable).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out", help="sweep folder")
    p.add_argument("--preset", choices=PRESETS, default="quick")
    p.add_argument("--spec", default=None, help="a sweep.json to run instead of a preset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, choices=["auto", "numpy", "numba", "span"])
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core; 0: serial)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    sweep = Sweep.from_dict(load_json(a.spec)) if a.spec else getattr(Sweep, a.preset)(seed=a.seed, backend=a.backend)
    run_sweep(sweep, a.out, workers=a.workers, progress=not a.no_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
