"""Read back what a figure script drew: the matplotlib figure it would have saved, and every text on it."""
from pathlib import Path

import matplotlib.pyplot as plt


def capture(monkeypatch, module) -> list:
    """Make ``module.save_figure`` keep the figure instead of writing it; returns the list the figures go to."""
    figs = []

    def keep(fig, out, dpi=110):
        figs.append(fig)
        return Path(out)
    monkeypatch.setattr(module, "save_figure", keep)
    return figs


def texts(fig) -> list[str]:
    """The suptitle, and every axes' title, axis labels and legend entries."""
    out = [fig._suptitle.get_text()] if fig._suptitle else []
    for ax in fig.get_axes():
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        if ax.get_legend():
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    return [t for t in out if t]


def close(figs) -> None:
    for f in figs:
        plt.close(f)
