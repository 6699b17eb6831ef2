"""Figure scripts and text summaries, drawn from saved results only: the modules of the repository's ``analysis/``
folder, imported as ``refvit.analysis.<module>``.

An installed refvit (wheel or editable) holds those modules under this name: setup.cfg maps the package
``refvit.analysis`` to the folder ``analysis/``, so nothing is installed under the generic top-level name
``analysis``. This file only serves a source checkout that is not installed (the repository root on ``sys.path``):
it points the package at that folder. A wheel ships ``analysis/__init__.py`` in its place.
"""
from pathlib import Path

__path__ = [str(Path(__file__).resolve().parents[2] / "analysis")]
