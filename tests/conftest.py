"""Hypothesis profiles. A registered profile does nothing until loaded, so load one here.

deadline=None: the first example of a test that touches a numba kernel includes its compilation time, which would
fail Hypothesis's default 200 ms deadline at random. The "ci" profile (selected by CI=true) also derandomizes, so a
CI failure reproduces exactly.
"""
import os

from hypothesis import settings

settings.register_profile("dev", deadline=None, max_examples=100)
settings.register_profile("ci", deadline=None, max_examples=100, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
