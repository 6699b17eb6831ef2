"""The pipelines the command line runs: compute into ``results/``, then draw from the saved results only.

This is the top layer of the package: the only place that imports ``refvit.analysis`` (the folder ``analysis/``: figures and text summaries).
Nothing in ``refvit`` imports this module but ``refvit.cli``.
"""
from __future__ import annotations

import inspect
import json
import sys
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable, NamedTuple

from .analysis import summaries
from .analysis.fig_coefficients import draw as draw_coefficients
from .analysis.fig_demo import demo_figure
from .analysis.fig_dynamics import figure3
from .analysis.fig_heatmap import figure1
from .analysis.fig_labelnoise import labelnoise_figure
from .analysis.fig_optimizers import optimizer_figures
from .analysis.fig_phases import phase_figures
from .analysis.fig_sharpness import sharpness_figures
from .analysis.fig_signgd import signgd_figures
from .analysis.fig_train import draw as draw_training
from .analysis.fig_singlehead import singlehead_figures

from .cells import plan_cell, train_cell
from .jiang2024 import dynamics as dyn
from .jiang2024.coefficients import SETTINGS as COEFFICIENT_CELLS, train_and_save, weights_and_save
from .jiang2024.config import figure1_setting
from .executors import available_cores
from .jiang2024.experiment import cell_key, run_cell
from .jiang2024.boundary import fit_sweep
from .config import default_backend
from .fit import describe
from .io import atomic_write, check_writable, load_json, save_json
from .results import save_history
from .runstore import quarantine_note
from .jiang2024.studies import (LabelNoiseStudy, OptimizerStudy, PhaseStudy, SharpnessStudy, run_label_noise,
                                run_optimizers, run_phases, run_sharpness)
from .jiang2024.studies.common import PRESETS as STUDY_PRESETS
from .li2025.experiment import run_study as run_signgd
from .li2025.study import SignGDStudy
from .magen2025.experiment import run_study as run_singlehead
from .magen2025.study import SingleHeadStudy
from .jiang2024.sweep import PRESETS, Sweep, SweepDone, resume_sweep, run_sweep, verified_table

DEMO_CELLS = (("benign", 20, 80.0), ("harmful", 4, 20.0))   # (name, N, ‖μ‖): either side of N·SNR² (math §10.1)


def _write_text(path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def _stage(progress: bool, text: str) -> None:
    """Without progress bars, one line on stderr per finished stage of a long command."""
    if not progress:
        print(text, file=sys.stderr)


def demo(results="results", figures="results/figures", seed: int = 0, backend: str | None = None,
         coords: str = "span") -> list[dict]:
    """Train one benign and one harmful Figure-1 cell, save their histories and draw ``figures/demo.png``."""
    out = Path(results)
    rows = []
    for name, N, mu in DEMO_CELLS:
        data_cfg, model_cfg, train_cfg = figure1_setting(N=N, mu_norm=mu)
        train_cfg = train_cfg.replace(backend=default_backend(backend), coords=coords)
        run = run_cell(data_cfg, model_cfg, train_cfg, seed=seed,
                       key=cell_key(N, mu))   # the same draw as repeat 0 of this cell in the sweep
        save_history(out / f"demo_{name}.npz", run.history, run.summary)
        rows.append({"cell": name, **run.summary})
        s = run.summary
        print(f"{name:8s} N={N:3d} |mu|={mu:5.1f} N*SNR^2={s['N_snr2']:6.3f} (axis {s['N_snr_axis2']:7.1f})  "
              f"steps={s['steps']:4d} {s['status']:9s} train={s['train_loss']:.4f} test={s['test_loss']:.4f} "
              f"err={s['test_error']:.2f}  {s['seconds']:.2f}s")
    save_json(out / "demo_summary.json", rows)
    print(f"wrote {demo_figure(out, Path(figures) / 'demo.png')}")
    return rows


def reproduce(preset: str, results="results", figures="results/figures", seed: int = 0, backend: str | None = None,
              coords: str = "span", workers: int | None = None, executor: Executor | None = None, progress: bool = True,
              n_boot: int | None = None, dynamics: bool = True) -> dict:
    """Run the preset's Figure-1 sweep and Figure-3 dynamics, fit the boundary, draw the figures, write a summary.

    The summary (``figures/summary_<preset>.txt``) holds only what the saved results determine; the wall-clock
    timings of this run go to ``results/timing_<preset>.json``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    results, figures = check_writable(results), check_writable(figures)    # before the work, not after it
    t_start = time.perf_counter()
    timing = {}
    sweep = getattr(Sweep, preset)(seed=seed, backend=backend, coords=coords)
    sweep_dir = results / f"sweep_{preset}"
    t0 = time.perf_counter()
    rows = run_sweep(sweep, sweep_dir, executor=executor, workers=workers, progress=progress)
    timing["sweep_seconds"] = time.perf_counter() - t0
    timing["sweep_run_seconds_sum"] = sum(r["seconds"] for r in rows)
    timing["sweep_run_cpu_seconds_sum"] = sum(r["cpu_seconds"] for r in rows)

    t0 = time.perf_counter()
    fit = fit_sweep(sweep_dir, n_boot=n_boot, seed=seed)      # n_boot None: 200 for quick, 1000 for paper
    timing["fit_seconds"] = time.perf_counter() - t0
    _stage(progress, describe(fit))

    dyn_dir = results / f"dynamics_{preset}"
    if dynamics:
        t0 = time.perf_counter()
        dyn.run_dynamics(getattr(dyn.Dynamics, preset)(seed=seed, backend=backend, coords=coords), dyn_dir, executor=executor,
                         workers=workers, progress=progress)
        timing["dynamics_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    drawn = [figure1(sweep_dir, figures / f"figure1_{preset}.png")]
    if dynamics:
        drawn.append(figure3(dyn_dir, figures / f"figure3_{preset}.png"))
    timing["figures_seconds"] = time.perf_counter() - t0
    _stage(progress, f"figures: {len(drawn)} drawn into {figures}")
    timing["total_seconds"] = time.perf_counter() - t_start
    timing["workers"] = workers if workers is not None else available_cores()

    text = summaries.reproduce_summary(sweep_dir) + (quarantine_note(dyn_dir) if dynamics else "")
    drawn.append(_write_text(figures / f"summary_{preset}.txt", text))
    save_json(results / f"timing_{preset}.json", timing)
    print(text, end="")
    print(summaries.timing_line(timing))
    for path in drawn:
        print(f"wrote {path}")
    return {"timing": timing, "fit": fit}


def sweep(out, preset: str | None = None, spec=None, grid: tuple | None = None, seed: int = 0,
          backend: str | None = None, coords: str = "span", workers: int | None = None,
          progress: bool = True) -> SweepDone:
    """Run (or resume) one sweep into ``out`` and say what it did: a preset (default "quick"), the sweep a saved
    ``sweep.json`` (``spec``) describes, or a grid (Ns, mu_norms, repeats) on the presets' Figure-1 protocol."""
    given = [what for what, v in (("--preset", preset), ("--spec", spec), ("--Ns/--mu-norms", grid)) if v]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} each name a sweep: give one of them")
    if spec:
        if seed != 0 or backend is not None or coords != "span":
            raise ValueError(f"--spec {spec} runs with the seed, backend and coordinates of its sweep.json: leave out "
                             "--seed, --backend and --coords")
        sw = Sweep.from_dict(load_json(spec, expect=dict))
    elif grid:
        try:
            sw = Sweep.grid(Path(out).resolve().name, *grid, seed=seed, backend=backend, coords=coords)
        except ValueError as e:          # name the options the values came from
            Ns, mus, repeats = (",".join(map(str, v)) if isinstance(v, tuple) else v for v in grid)
            raise ValueError(f"--Ns {Ns} --mu-norms {mus} --repeats {repeats}: {e}") from None
    else:
        sw = getattr(Sweep, preset or "quick")(seed=seed, backend=backend, coords=coords)
    done = resume_sweep(sw, out, workers=workers, progress=progress)
    print(done.describe(out))
    print(f"next: `refvit fit {out}` (the boundary), `refvit heatmap {out}` (its figure)")
    return done


def heatmap(sweep_dir, figures="results/figures", out=None, snr: str = "axis") -> Path:
    """Draw the Figure-1 heatmaps of any sweep folder (its run files verified first, ``verified_table``) into
    ``out`` (default FIGURES/heatmap_<folder>.png), with the fitted boundary when the folder has a fit.json."""
    sweep_dir = Path(sweep_dir)
    verified_table(sweep_dir)           # table.csv rebuilt from the checked run files if it differs from them
    path = figure1(sweep_dir, out or Path(figures) / f"heatmap_{sweep_dir.resolve().name}.png", snr=snr)
    if not (sweep_dir / "fit.json").exists():
        print(f"no fit.json in {sweep_dir}: run `refvit fit {sweep_dir}` to draw the fitted boundary too")
    print(f"wrote {path}")
    return path


def train(out, setting: str = "jiang2024", **cell) -> Path:
    """``refvit train OUT``: train one cell of a setting (``refvit.cells``), save its history to OUT/history.npz
    (columns: docs/usage.md) and draw OUT/training.png. ``cell``: the options of ``refvit.cells.plan_cell``."""
    planned = plan_cell(setting, **cell)                  # every option checked before anything is written
    out = check_writable(out)
    history, summary, extra = train_cell(planned)
    saved = save_history(out / "history.npz", history, summary, **extra)
    s = summary
    print(f"{setting} N={s['N']} |mu|={s['mu_norm']:g} {s['optimizer']} lr={s['lr']:g}: {s['steps']} steps "
          f"{s['status']}, train loss {s['train_loss']:.4g}, test loss {s['test_loss']:.4g}, test error "
          f"{s['test_error']:.3g}  {s['seconds']:.1f}s")
    print(f"wrote {saved}")
    print(f"wrote {draw_training(saved, out / 'training.png')}")
    return saved


class _Study(NamedTuple):
    """What ``refvit study KIND`` needs to know of one study."""
    presets: type           # the study class; its ``quick``/``full`` constructors take ``seed`` (and ``option``)
    run: Callable           # run(study, folder, executor, workers, progress)
    draw: Callable          # draw(folder, *figure paths)
    figures: tuple          # suffixes of the figure files, <tag>_<suffix>.png; () for one figure, <tag>.png
    summary: Callable       # summary(folder, command) -> text
    option: tuple = ()      # (name, default) of the study's own option, passed to its preset constructor


STUDY_KINDS = {
    "optimizers": _Study(OptimizerStudy, run_optimizers, optimizer_figures, ("heatmaps", "dynamics"),
                         summaries.optimizer_summary, ("lr_rule", "heldout")),
    "label-noise": _Study(LabelNoiseStudy, run_label_noise, labelnoise_figure, (), summaries.label_noise_summary),
    "sharpness": _Study(SharpnessStudy, run_sharpness, sharpness_figures, ("fit", "curves"),
                        summaries.sharpness_summary, ("lr_scaling", "inverse_d")),
    "phases": _Study(PhaseStudy, run_phases, phase_figures, ("runs", "lengths"), summaries.phase_summary),
    "signgd": _Study(SignGDStudy, run_signgd, signgd_figures, ("dynamics", "optimizers", "beyond"),
                     summaries.signgd_summary),
    "single-head": _Study(SingleHeadStudy, run_singlehead, singlehead_figures,
                          ("twostep", "maxmargin", "longrun", "tokens", "query"), summaries.singlehead_summary),
}
STUDIES = tuple(STUDY_KINDS)


def _option(kind: str, options: dict) -> tuple:
    """(name, value) of the study's own option when it differs from its default, else ()."""
    opt = STUDY_KINDS[kind].option
    return (opt[0], options[opt[0]]) if opt and options[opt[0]] != opt[1] else ()


def study_tag(kind: str, preset: str, lr_rule: str = "heldout", lr_scaling: str = "inverse_d") -> str:
    """Name of a study run: "optimizers_quick", "labelnoise_full", "optimizers_quick_largest_stable",
    "sharpness_quick_fixed", …"""
    opt = _option(kind, {"lr_rule": lr_rule, "lr_scaling": lr_scaling})
    return f"{kind.replace('-', '')}_{preset}" + (f"_{opt[1]}" if opt else "")


def draw_study(kind: str, tag: str, results="results", figures="results/figures") -> list[Path]:
    """Draw a study's figures from its saved results (results/study_<tag>/) into figures/; returns the PNGs."""
    k, figures = STUDY_KINDS[kind], Path(figures)
    d = Path(results) / f"study_{tag}"
    if not k.figures:
        return [k.draw(d, figures / f"{tag}.png")]
    return k.draw(d, *(figures / f"{tag}_{suffix}.png" for suffix in k.figures))


def run_study(kind: str, preset: str, results="results", figures="results/figures", seed: int = 0, workers=None,
              executor=None, progress: bool = True, lr_rule: str = "heldout", figures_only: bool = False,
              lr_scaling: str = "inverse_d") -> str:
    """Run (or resume) one study preset, write its tables, figures and a text summary; return the summary."""
    if kind not in STUDIES:
        raise ValueError(f"unknown study {kind!r}; choose one of {', '.join(STUDIES)} or 'all'")
    if preset not in STUDY_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(STUDY_PRESETS)}")
    k = STUDY_KINDS[kind]
    check_writable(figures)                                           # before the work, not after it
    options = {"lr_rule": lr_rule, "lr_scaling": lr_scaling}
    tag = study_tag(kind, preset, lr_rule, lr_scaling)
    d = Path(results) / f"study_{tag}"
    t0 = time.perf_counter()
    if not figures_only:
        extra = {k.option[0]: options[k.option[0]]} if k.option else {}
        k.run(getattr(k.presets, preset)(seed=seed, **extra), d, executor, workers, progress)
        save_json(d / "timing.json", {"runs_seconds": time.perf_counter() - t0})
        _stage(progress, f"study {kind} {preset}: every run saved in {d}, {time.perf_counter() - t0:.1f} s")
    elif not (d / "study.json").exists():
        raise ValueError(f"no saved study in {d}; run `refvit study {kind} --preset {preset}` first")
    drawn = draw_study(kind, tag, results, figures)
    opt = _option(kind, options)
    cmd = f"refvit study {kind} --preset {preset}" + (f" --seed {seed}" if seed else "") + \
        (f" --{opt[0].replace('_', '-')} {opt[1]}" if opt else "")
    text = k.summary(d, cmd) + quarantine_note(d)      # counts every quarantine/ folder of the study
    _write_text(d / "summary.txt", text)
    drawn.append(_write_text(Path(figures) / f"{tag}_summary.txt", text))
    print(text, end="")
    if (d / "timing.json").exists():
        print(f"wall clock of the runs that made these results: "
              f"{json.loads((d / 'timing.json').read_text())['runs_seconds']:.1f} s")
    for path in drawn:
        print(f"wrote {path}")
    return text


def coefficients(mode: str, *, file=None, results="results", figures="results/figures", out=None,
                 draw: bool = True, results_file=None, save_weights: bool = False, setting: str = "figure1",
                 N: int | None = None, mu: float | None = None, seed: int = 0, steps: int | None = None,
                 train_w_O: bool = False, coords: str = "span", backend: str | None = None) -> Path:
    """``refvit coefficients train|weights|draw``: compute and save (``refvit.jiang2024.coefficients``), then draw.
    setting : the cell, "figure1" or "dynamics"; mu None: that cell's ‖μ‖; backend None: ``default_backend``."""
    if mode == "train":
        if setting not in COEFFICIENT_CELLS:
            raise ValueError(f"unknown cell {setting!r}; choose one of {sorted(COEFFICIENT_CELLS)}")
        mu = inspect.signature(COEFFICIENT_CELLS[setting]).parameters["mu_norm"].default if mu is None else mu
        backend = default_backend(backend)
        name = f"coefficients_{setting}{f'_N{N}' if N is not None else ''}_mu{mu:g}{'_wO' if train_w_O else ''}"
        saved = Path(results) / f"{name}.npz" if results_file is None else Path(results_file)
        weights = Path(results) / f"{name}_weights.npz" if save_weights else None
        train_and_save(saved, setting, N, mu, seed, steps, train_w_O, coords, backend, weights)
        print(f"wrote {saved}" + (f" and {weights}" if weights else ""))
    elif mode == "weights":
        saved = Path(results) / f"decomposed_{Path(file).stem}.npz"
        weights_and_save(file, saved)
        print(f"wrote {saved}")
    else:
        saved = Path(file)
    if mode == "draw" or draw:
        print(f"wrote {draw_coefficients(saved, out or Path(figures) / f'{saved.stem}.png')}")
    return saved


if __name__ == "__main__":    # a library module: say which command runs it rather than exit 0 having done nothing
    raise SystemExit("refvit.pipelines is a library module; run it with "
                     "`refvit demo|reproduce|sweep|study|coefficients …` "
                     "(or `python -m refvit.cli …`); `refvit --help` lists the commands")
