"""Figure scripts and text summaries, drawn from saved results only: the modules of the repository's ``analysis/``
folder, imported as ``refvit.analysis.<module>``.

setup.cfg maps the package ``refvit.analysis`` to the folder ``analysis/``, so an installed refvit holds those
modules under this name and nothing is installed under the generic top-level name ``analysis``. In a source
checkout (installed editable, or only on ``sys.path``) Python finds this file first, and it points the package at
that folder; a wheel ships ``analysis/__init__.py`` in its place.
"""
from pathlib import Path

__path__ = [str(Path(__file__).resolve().parents[2] / "analysis")]
