"""Parameter initialization (docs/math.md (3.6)–(3.8)): the authors' scaled torch default, or a small Gaussian."""
from __future__ import annotations

import math

import numpy as np

from .config import ModelConfig
from .model import Params


def init_params(cfg: ModelConfig, d: int, rng: np.random.Generator) -> Params:
    """Draw (W_Q, W_K, W_V, w_O) with shapes (d, d_h), (d, d_h), (d, d_v), (d_v,).

    "torch_uniform_scaled": torch's ``nn.Linear(d, ·)`` default U(±1/√d) divided by ``init_scale``;
    "gaussian": i.i.d. N(0, sigma0²). w_O ~ U(±1/√d_v) in both, the authors' frozen head (docs/math.md (3.8)).
    Draw order is W_Q, W_K, W_V, w_O, so a seed always gives the same parameters.
    """
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    shapes = ((d, cfg.d_h), (d, cfg.d_h), (d, cfg.d_v))
    if cfg.init == "torch_uniform_scaled":
        bound = 1.0 / math.sqrt(d)
        W = [rng.uniform(-bound, bound, size=s) for s in shapes]
        for w in W:
            w /= cfg.init_scale                                           # in place; (math 3.6)
    else:
        W = [cfg.sigma0 * rng.standard_normal(s) for s in shapes]   # (math 3.7)
    bound_o = 1.0 / math.sqrt(cfg.d_v)
    return Params(*W, rng.uniform(-bound_o, bound_o, size=cfg.d_v))   # w_O (math 3.8)
