"""Hypothesis strategies: small shapes drawn directly, bulk values from a drawn seed fed to default_rng."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from refvit.model import Params

shapes = st.fixed_dictionaries({
    "n": st.integers(1, 4), "M": st.integers(2, 5), "d": st.integers(2, 6),
    "d_h": st.integers(1, 4), "d_v": st.integers(1, 4),
})
seeds = st.integers(0, 2**32 - 1)
scales = st.sampled_from([0.05, 0.5, 1.0])   # tiny, moderate and O(1)-logit parameter scales


def random_problem(shape: dict, seed: int, scale: float = 0.5):
    """Params (scaled by ``scale``), X (n, M, d) with N(0,1) entries and labels y in {±1}."""
    rng = np.random.default_rng(seed)
    n, M, d, d_h, d_v = (shape[k] for k in ("n", "M", "d", "d_h", "d_v"))
    params = Params(scale * rng.standard_normal((d, d_h)), scale * rng.standard_normal((d, d_h)),
                    rng.standard_normal((d, d_v)), rng.standard_normal(d_v))
    X = rng.standard_normal((n, M, d))
    y = rng.choice([-1.0, 1.0], size=n)
    return params, X, y


problems = st.builds(random_problem, shapes, seeds, scales)
