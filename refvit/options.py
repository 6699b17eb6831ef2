"""The command line's shared options, each defined once: its flag, choices, default and help.

Every command of ``refvit`` that takes one of these options adds it from ``OPTIONS`` (``add``), so an option has the
same name, choices, default and help wherever it appears (tests/test_cli_options.py walks every command's parser and
checks it). ``Formatter`` shows each default once: a help text that states its default keeps its own wording.
"""
from __future__ import annotations

import argparse
import re
import textwrap

from .config import BACKENDS, COORDS, SETTINGS


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number >= 1, got 0")
    return value


# name -> (flag, add_argument keywords). The name is the argparse dest. Commands defined outside refvit.cli
# (crosscheck, golden) take theirs with ``options.add(parser, "setting", ...)`` too.
OPTIONS = {
    "setting": ("--setting", dict(choices=SETTINGS, default=SETTINGS[0],
                                  help="jiang2024: the vision transformer of Jiang et al. (the first setting); "
                                       "li2025: the two-token transformer of Li et al.; magen2025: the single-head "
                                       "attention of Magen et al.")),
    "seed": ("--seed", dict(type=non_negative_int, default=0,
                            help="base seed of every random stream (data, test set, init, bootstrap)")),
    "backend": ("--backend", dict(choices=BACKENDS, default=None,
                                  help="attention core: numpy (the reference), numba, or auto (numba if usable); "
                                       "default: auto")),
    "coords": ("--coords", dict(choices=COORDS, default="span",
                                help="train exact token coordinates (span, GD only) or the dense weights")),
    "results": ("--results", dict(default="results", metavar="DIR", help="folder for saved runs and results files")),
    "figures": ("--figures", dict(default="results/figures", metavar="DIR",
                                  help="folder for figures and text summaries")),
    "workers": ("--workers", dict(type=non_negative_int, default=None,
                                  help="worker processes (default: one per core; 0: serial in this process)")),
    "no_progress": ("--no-progress", dict(action="store_true",
                                          help="no progress bars: one line per stage instead")),
    "n_boot": ("--n-boot", dict(type=non_negative_int, default=None,
                                help="bootstrap resamples of the boundary fit (default: 200 for the quick preset's "
                                     "sweep, 1000 for any other; 0: no intervals)")),
    "figure": ("--out", dict(default=None, metavar="PNG",
                             help="figure path (default: FIGURES/<name of what is drawn>.png)")),
}


def add(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the shared options ``names`` (keys of ``OPTIONS``) to ``parser``."""
    for name in names:
        flag, kw = OPTIONS[name]
        parser.add_argument(flag, dest=name, **kw)


def comma_list(kind, what: str):
    """argparse type: "10,20,30" -> (10, 20, 30), each converted by ``kind``; ``what`` names the values."""
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
        return values
    return parse


_STATES_DEFAULT = re.compile(r"\bdefault\b", re.IGNORECASE)


class Formatter(argparse.HelpFormatter):
    """Each option's default shown once: appended as "(default: X)" unless the help already says what it is, or it
    is None or False (nothing to show). Paragraphs of descriptions and epilogs are wrapped, indented lines kept."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) and action.option_strings
        if shown and not _STATES_DEFAULT.search(text) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text

    def _fill_text(self, text, width, indent):
        paragraphs = []
        for par in text.strip("\n").split("\n\n"):
            lines = par.splitlines()
            if any(line.startswith(" ") for line in lines):      # a table or a list: kept as written
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(textwrap.fill(" ".join(line.strip() for line in lines), width,
                                                initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(paragraphs)
