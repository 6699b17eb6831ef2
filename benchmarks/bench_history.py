"""Bytes per recorded history step on the Figure-1 cell (docs/usage.md, ``TrainConfig.history_every``).

    python benchmarks/bench_history.py [--steps 1000]

Trains the Figure-1 cell (N=20, ‖μ‖=80, span coordinates, no early stop) with history_every = 1 and 0 and reports
(a) the peak Python heap of the run (tracemalloc) difference divided by the rows not kept, i.e. what one recorded
row costs while training, and (b) the bytes per row of the returned History arrays.
"""
import argparse
import tracemalloc

from refvit.jiang2024.config import figure1_setting
from refvit.jiang2024.experiment import run_cell


def peak_bytes(every: int, steps: int):
    data, model, train = figure1_setting()
    cfg = train.replace(coords="span", backend="numpy", loss_threshold=None, steps=steps, history_every=every)
    tracemalloc.start()
    run = run_cell(data, model, cfg, seed=0, key=(20, 80, 0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, run.history


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    steps = p.parse_args().steps
    full_peak, full = peak_bytes(1, steps)
    thin_peak, thin = peak_bytes(0, steps)
    rows = len(full.step) - len(thin.step)
    arrays = sum(a.nbytes for a in full.values.values()) + full.step.nbytes
    print(f"{steps} steps: {len(full.step)} rows (history_every=1) vs {len(thin.step)} (history_every=0)")
    print(f"peak heap while training: {(full_peak - thin_peak) / rows:.0f} bytes per recorded step")
    print(f"returned History arrays: {arrays / len(full.step):.0f} bytes per recorded step")


if __name__ == "__main__":
    main()
