"""The Figure-1 sweep (docs/math.md §10.1): many independent training runs over a grid of (N, ‖μ‖, repeat), resumable.

Layout of a sweep folder (``results/sweep_<preset>/``):

    sweep.json   the settings that determine every run's numbers (configs, base seed); checked on resume
    runs/        one small JSON per finished run, ``N010_mu064_r003.json`` (``results.sweep_run_file``), written atomically (``refvit.io``)
    table.csv    the tidy table, one row per run of the grid, sorted by (N, ‖μ‖, repeat); rebuilt from runs/

Reproducibility. Run (N, ‖μ‖, r) draws its data, test set and init from ``streams(seed, *cell_key(N, ‖μ‖, r))``
(``refvit.streams.streams``), so any cell is reproducible alone and the order in which runs finish does not matter.
A killed sweep restarted on the same folder skips every run that has a file and computes only the rest; since each
finished run's row is stored once and never recomputed, the final table equals the uninterrupted one *in every
column except* the timing columns ``seconds`` and ``cpu_seconds`` (wall-clock and worker CPU time, recorded per run
but not reproducible by nature; they are the last two columns). ``table_rows(..., timing=False)`` drops them.

Parallelism. Runs execute on any ``concurrent.futures.Executor`` (``refvit.executors``); the parent process writes
the run files, so workers need no shared file system. File names and columns are those of ``refvit.results``.

Verification. Nothing read from the folder is trusted. A sweep first checks the folder is writable (naming the path)
and claims it: it holds an exclusive ``fcntl`` lock on ``.sweep.lock`` for its whole duration (a second sweep on the
same folder is refused while the first runs) and compares ``sweep.json`` with its own settings, including
``settings_hash`` (a hash of ``Sweep.settings()``), which every run file also stores. Every run file is checked
before it is skipped or enters a table (``refvit.results.check_run_row``): it must be a JSON object with the columns
of ``COLUMNS`` and their types, the N, ‖μ‖ and repeat of its file name, the sweep's seed and settings hash, a known
status, and finite values where they are promised (losses and test error of "converged"/"max_steps" runs). A file
that fails — truncated, garbage, empty, ``{}``, ``[]``, another sweep's run, a wrong column — is named in a warning,
moved aside to ``quarantine/`` in the sweep folder (never deleted) and recomputed. Runs found in a folder without a
manifest are thus adopted only when they match. A run whose test loss is not finite has status "nonfinite_test";
the table keeps it and the fit counts it among the excluded runs (``refvit.fit``).
"""
from __future__ import annotations

import sys
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .config import PRESETS, DataConfig, ModelConfig, figure1_setting  # noqa: F401  (PRESETS: read from here)
from ..config import TrainConfig, default_backend
from ..executors import execute
from .data import dataset_bytes
from .experiment import cell_key, run_cell
from ..primitives import check_fits_in_memory
from ..io import FileProblem, atomic_write, check_writable, csv_text, load_json, save_csv, save_json
from ..results import COLUMNS, SETTINGS_HASH, TIMING_COLUMNS, check_run_row, sweep_run_file
from ..runstore import claim, quarantine, renew_manifest, settings_hash



def _whole_numbers(name: str, values, what: str) -> tuple:
    """``values`` as ints, refusing anything int() would round (2.9 is not 2) and booleans."""
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
            raise ValueError(f"{name} must be whole numbers ({what}), got {v!r}")
        out.append(int(v))
    return tuple(out)


# The Figure-1 protocol (docs/math.md §10.1) on exact span coordinates: the training of both presets, and the default
# of a custom grid, so that ``Sweep("mine", Ns=(2, 4, 8), mu_norms=(20, 40, 80), repeats=3)`` is the authors' protocol.
FIGURE1_TRAIN = figure1_setting()[2].replace(coords="span")


@dataclass(frozen=True)
class Sweep:
    """A grid of runs. ``data``/``model``/``train`` are templates: each run replaces data.N and data.mu_norm; their
    defaults are the Figure-1 setting and protocol (``figure1_setting``, ``FIGURE1_TRAIN``: η = 0.1, at most 1000
    steps, stop below training loss 0.01 by the authors' rule, span coordinates).

    Ns : training-set sizes (even, for balanced labels).   mu_norms : signal norms ‖μ‖ (integers: they key streams).
    repeats : runs per cell, repeat r ∈ [0, repeats).       seed : base seed of every stream.
    stream_tag : extra stream-key entries; a non-empty tag (e.g. the studies' pilot runs) gives streams that no
        untagged run of any seed can draw.
    """
    name: str
    Ns: tuple
    mu_norms: tuple
    repeats: int
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = FIGURE1_TRAIN
    stream_tag: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "Ns", _whole_numbers("Ns", self.Ns, "training-set sizes"))
        object.__setattr__(self, "stream_tag", _whole_numbers("stream_tag", self.stream_tag, "stream keys"))
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
            cfg = self.data.replace(N=N)
            check_fits_in_memory(dataset_bytes(cfg), f"the run at N={N} (n_test={cfg.n_test}, M={cfg.M}, "
                                 f"d={cfg.d})", "reduce N, n_test, M or d")
        # N and ‖μ‖ of the template are placeholders (each run replaces them): normalize so equal sweeps compare equal
        object.__setattr__(self, "data", self.data.replace(N=min(self.Ns), mu_norm=float(min(self.mu_norms))))

    # --- presets (named constructors) ---------------------------------------------------------------------------
    @classmethod
    def quick(cls, seed: int = 0, backend: str | None = None, coords: str = "span") -> "Sweep":
        """Coarse Figure-1 grid for the README's main command: 6 N × 10 ‖μ‖ × 2 seeds = 120 runs."""
        return cls.grid("quick", (2, 4, 8, 12, 16, 20), tuple(range(10, 101, 10)), 2, seed, backend, coords)

    @classmethod
    def paper(cls, seed: int = 0, backend: str | None = None, coords: str = "span") -> "Sweep":
        """The authors' full grid (docs/math.md (10.2)): N ∈ {2,…,20} × ‖μ‖ ∈ {1,…,100} × 10 seeds = 10,000 runs."""
        return cls.grid("paper", tuple(range(2, 21, 2)), tuple(range(1, 101)), 10, seed, backend, coords)

    @classmethod
    def grid(cls, name: str, Ns, mu_norms, repeats: int, seed: int = 0, backend: str | None = None,
             coords: str = "span") -> "Sweep":
        """Any grid on the presets' Figure-1 setting and protocol (``refvit sweep OUT --Ns … --mu-norms …``);
        backend None: ``refvit.config.default_backend``."""
        data, model, train = figure1_setting()
        train = train.replace(coords=coords, backend=default_backend(backend))
        return cls(name, tuple(Ns), tuple(mu_norms), repeats, seed, data, model, train)

    # --- derived ----------------------------------------------------------------------------------------------
    def specs(self) -> list[tuple[int, int, int]]:
        """Every run as (N, ‖μ‖, repeat), in table order."""
        return [(N, mu, r) for N in sorted(self.Ns) for mu in sorted(self.mu_norms) for r in range(self.repeats)]

    def settings(self) -> dict:
        """What determines the numbers of run (N, ‖μ‖, r): everything but the grid. Stored in sweep.json."""
        data = self.data.to_dict()
        for k in ("N", "mu_norm"):
            data.pop(k)
        out = {"seed": self.seed, "data": data, "model": self.model.to_dict(), "train": self.train.to_dict()}
        if self.stream_tag:            # only when set, so untagged sweep folders keep their manifests
            out["stream_tag"] = list(self.stream_tag)
        return out

    def settings_hash(self) -> str:
        """A hash of ``settings()``: stored in sweep.json and in every run file, and checked on every read (of
        each of the 10,000 files of the paper's sweep: so computed once per sweep, which is immutable)."""
        known = self.__dict__.get("_settings_hash")
        if known is None:
            known = settings_hash(self.settings())
            object.__setattr__(self, "_settings_hash", known)   # a cache, not a field: not compared, not saved
        return known

    def to_dict(self) -> dict:
        return {"name": self.name, "Ns": list(self.Ns), "mu_norms": list(self.mu_norms), "repeats": self.repeats,
                **self.settings(), SETTINGS_HASH: self.settings_hash()}

    @classmethod
    def from_dict(cls, d: dict) -> "Sweep":
        if not isinstance(d, dict):
            raise ValueError(f"a sweep spec is a JSON object, got {type(d).__name__}")
        d = dict(d)
        stored = d.pop(SETTINGS_HASH, None)
        lacking = [k for k in ("name", "Ns", "mu_norms", "repeats", "seed", "data", "model", "train") if k not in d]
        if lacking:
            raise ValueError(f"a sweep spec needs {lacking}")
        sweep = cls._from_fields(d)
        if stored is not None and stored != sweep.settings_hash():
            raise ValueError(f"the spec's settings_hash {stored!r} does not match its settings "
                             f"({sweep.settings_hash()!r}): it was edited or damaged")
        return sweep

    @classmethod
    def _from_fields(cls, d: dict) -> "Sweep":
        data = DataConfig.from_dict({**d["data"], "N": min(d["Ns"]), "mu_norm": float(min(d["mu_norms"]))})
        return cls(d["name"], tuple(d["Ns"]), tuple(d["mu_norms"]), d["repeats"], d["seed"], data,
                   ModelConfig.from_dict(d["model"]), TrainConfig.from_dict(d["train"]), tuple(d.get("stream_tag", ())))

    def cell_configs(self, N: int, mu: int) -> tuple[DataConfig, ModelConfig, TrainConfig]:
        return self.data.replace(N=N, mu_norm=float(mu)), self.model, self.train


def run_one(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int, repeat: int,
            stream_tag: tuple = ()) -> dict:
    """One sweep run (executes in a worker): ``run_cell`` keyed by (N, ‖μ‖, repeat, *stream_tag); its table row."""
    key = cell_key(data_cfg.N, data_cfg.mu_norm, repeat) + tuple(stream_tag)
    row = {**run_cell(data_cfg, model_cfg, train_cfg, seed=seed, key=key).summary, "repeat": repeat}
    return {k: row[k] for k in COLUMNS}


# ---------------------------------------------------------------------------------------------------------------
# Running a sweep and assembling its table
# ---------------------------------------------------------------------------------------------------------------

class SweepDone(NamedTuple):
    """What ``resume_sweep`` did: the table rows and how many runs it found, computed and set aside."""
    rows: list          # the table's rows (``write_table``)
    on_disk: int        # runs found saved and verified: skipped
    computed: int       # runs computed now (the missing ones and the quarantined ones)
    quarantined: int    # run files that failed their check, moved to quarantine/ and recomputed

    def describe(self, out) -> str:
        """One line: "sweep OUT: 120 runs, 100 computed, 20 already saved (skipped); wrote OUT/table.csv"."""
        damaged = f", {self.quarantined} damaged files quarantined and recomputed" if self.quarantined else ""
        return (f"sweep {out}: {len(self.rows)} runs, {self.computed} computed, {self.on_disk} already saved "
                f"(skipped){damaged}; wrote {Path(out) / 'table.csv'}")


def run_sweep(sweep: Sweep, out, executor: Executor | None = None, workers: int | None = None,
              progress: bool = True) -> list[dict]:
    """Run every missing run of ``sweep`` into folder ``out`` and write out/table.csv. Returns the table rows.

    executor : any ``concurrent.futures.Executor`` (e.g. dask's ``client.get_executor()``); default: a spawn
        process pool with ``workers`` single-threaded workers (default: one per core; 0: serial in this process),
        see ``refvit.executors``.
    """
    return resume_sweep(sweep, out, executor, workers, progress).rows


def resume_sweep(sweep: Sweep, out, executor: Executor | None = None, workers: int | None = None,
                 progress: bool = True) -> SweepDone:
    """``run_sweep``, also saying how many runs were already saved, computed and quarantined (``SweepDone``)."""
    out = Path(out)
    runs = check_writable(check_writable(out) / "runs")     # before any work: nothing computed is lost to a write
    with claim(out):
        renew_manifest(out / "sweep.json", sweep.to_dict(), ignore=("name", "Ns", "mu_norms", "repeats"))
        specs = sweep.specs()
        present = sum((runs / sweep_run_file(*spec)).exists() for spec in specs)
        good = {spec for spec in specs if verified_run(sweep, out, *spec) is not None}
        tasks = [(run_one, (*sweep.cell_configs(N, mu), sweep.seed, r, sweep.stream_tag), (N, mu, r))
                 for N, mu, r in specs if (N, mu, r) not in good]
        stamp = {SETTINGS_HASH: sweep.settings_hash()}
        execute(tasks, lambda tag, row: save_json(runs / sweep_run_file(*tag), {**row, **stamp}), executor, workers,
                desc=f"sweep {sweep.name}", progress=progress, total=len(specs), where=out)
        return SweepDone(write_table(sweep, out), len(good), len(tasks), present - len(good))


def verified_run(sweep: Sweep, out, N: int, mu: int, r: int) -> dict | None:
    """The checked row of run (N, ‖μ‖, r), None when it has no file; a file that fails the checks is quarantined
    (then None)."""
    path = Path(out) / "runs" / sweep_run_file(N, mu, r)
    if not path.exists():
        return None
    expect = {"N": N, "mu_norm": float(mu), "repeat": r, "seed": sweep.seed, SETTINGS_HASH: sweep.settings_hash()}
    try:
        return check_run_row(path, load_json(path), expect)
    except FileProblem as e:
        quarantine(path, str(e))
        return None


def table_rows(sweep: Sweep, out, timing: bool = True) -> list[dict]:
    """The rows of the grid's runs from out/runs/, sorted by (N, ‖μ‖, repeat); ``timing=False`` drops seconds.

    Every run file is checked (``verified_run``); one that fails is quarantined and counted as missing."""
    runs = Path(out) / "runs"
    rows, missing = [], []
    for N, mu, r in sweep.specs():
        row = verified_run(sweep, out, N, mu, r)
        if row is None:
            missing.append(sweep_run_file(N, mu, r))
            continue
        rows.append({k: row[k] for k in COLUMNS if timing or k not in TIMING_COLUMNS})
    if missing:
        raise ValueError(f"{len(missing)} runs missing in {runs} (e.g. {missing[0]}); run the sweep to finish them")
    return rows


def write_table(sweep: Sweep, out) -> list[dict]:
    """Assemble out/table.csv from the run files (deterministic: fixed column order, sorted rows)."""
    rows = table_rows(sweep, out)
    save_csv(Path(out) / "table.csv", rows, COLUMNS)
    return rows


def verified_table(sweep_dir) -> tuple[dict, list[dict]]:
    """(manifest, rows) of a finished sweep folder, the rows rebuilt from its run files, each checked against
    sweep.json (``table_rows``): what reads a sweep folder back (the fit, the studies) never trusts table.csv. A
    table.csv that differs from the verified rows is rewritten, with a warning, so figures drawn from it agree."""
    sweep_dir = Path(sweep_dir)
    meta = load_json(sweep_dir / "sweep.json", expect=dict)
    try:
        sweep = Sweep.from_dict(meta)
    except (KeyError, TypeError, ValueError) as e:
        raise FileProblem(sweep_dir / "sweep.json", f"not a usable sweep manifest ({e})") from None
    rows = table_rows(sweep, sweep_dir)
    text, table = csv_text(rows, COLUMNS).encode(), sweep_dir / "table.csv"
    if not table.is_file() or table.read_bytes() != text:
        if table.exists():
            print(f"refvit: warning: {table} does not match the verified run files of {sweep_dir}; rebuilt from "
                  "them", file=sys.stderr)
        atomic_write(table, lambda fh: fh.write(text))
    return meta, rows


if __name__ == "__main__":    # a library module: say which command runs it rather than exit 0 having done nothing
    raise SystemExit("refvit.jiang2024.sweep is a library module; run it with "
                     "`refvit sweep OUT [--preset quick|paper | --spec sweep.json | --Ns 2,4 --mu-norms 20,40] "
                     "[--workers K]` "
                     "(or `python -m refvit.cli …`); `refvit --help` lists the commands")
