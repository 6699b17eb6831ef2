"""Figure scripts and text summaries, installed as ``refvit.analysis``: each reads saved results (never trains)
and draws into figures/. Run one as ``python -m refvit.analysis.fig_<name>``."""
