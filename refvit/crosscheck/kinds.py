"""Kinds of case: the properties of the data a mistake may need to show (unbalanced labels, odd N, N = 1, M = 1,
one class, large logits), and the sentence saying that a set of failing cases are exactly of one kind."""
from __future__ import annotations

import numpy as np

from ..jiang2024.model import forward_cache

LARGE_LOGIT = 100.0     # |x_lᵀ W_Q W_Kᵀ x_j| above this: "saturated" (300) and "large_margin" (1e6); others ≤ 10

PROPERTIES = (            # (name in the sentence, test on (X, y, largest |logit|))
    ("N = 1", lambda X, y, z: len(y) == 1),
    ("M = 1", lambda X, y, z: X.shape[1] == 1),
    ("one class only", lambda X, y, z: abs(float(np.sum(y))) == len(y)),
    ("odd N", lambda X, y, z: len(y) % 2 == 1),
    ("unbalanced labels", lambda X, y, z: float(np.sum(y)) != 0.0),
    (f"large logits (|x_lᵀ W_Q W_Kᵀ x_j| > {LARGE_LOGIT:g})", lambda X, y, z: z > LARGE_LOGIT),
)


def case_properties(inputs, logits=None) -> set:
    """The names of ``PROPERTIES`` one case has; ``inputs`` (p0, X, y) as float64; ``logits``: (p0, X) -> the
    logits (n, L, L) of the setting's model (default: the first setting's)."""
    p0, X, y = inputs
    Z = forward_cache(p0, X)[1].Z if logits is None else logits(p0, X)
    with np.errstate(invalid="ignore"):
        z = float(np.max(np.abs(Z)))
    return {name for name, test in PROPERTIES if test(X, y, z)}


def only_on(cases: list, props: dict, passed: set) -> str | None:
    """"shows only on cases with odd N (4 of the 6 such cases fail; every other case passes)" when ``cases`` all
    share a property that some passing case lacks; the most specific such property (the fewest cases have it).
    None for a single case: it has many properties, and none of them is telling.

    ``props``: {case name: set of properties} for every case that ran; ``passed``: the names of the passing cases.
    """
    if len(cases) < 2:
        return None                                  # one case has many properties: none of them is telling
    best = None
    for name, _ in PROPERTIES:
        having = [c for c, ps in props.items() if name in ps]
        if all(name in props[c] for c in cases) and any(c in passed for c in props if c not in having):
            if best is None or len(having) < len(best[1]):
                best = (name, having)
    if best is None or len(best[1]) == len(props):
        return None
    name, having = best
    rest = "every case without it passes" if all(c in passed for c in props if c not in having) else \
        "other cases fail otherwise"
    return f"shows only on cases with {name} ({len(cases)} of the {len(having)} such cases; {rest})"
