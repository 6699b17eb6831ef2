"""What the study figure scripts share: their command line."""
from __future__ import annotations

import argparse


def study_figures_main(argv, doc: str, study: str, outs: tuple, draw) -> int:
    """``python -m refvit.analysis.fig_<study> STUDY_DIR [--out-<name> PNG ...] [--dpi N]``: draw every figure of a saved
    study with ``draw(study_dir, *out_paths, dpi=...)`` and print the paths written.

    outs : (name, default path, help) per figure, in the order ``draw`` takes them.
    """
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study_dir", help=f"folder written by `refvit study {study}`")
    for name, default, text in outs:
        p.add_argument(f"--out-{name}", default=default, help=text)
    p.add_argument("--dpi", type=int, default=110)
    a = p.parse_args(argv)
    for path in draw(a.study_dir, *(getattr(a, f"out_{name}") for name, _, _ in outs), dpi=a.dpi):
        print(f"wrote {path}")
    return 0
