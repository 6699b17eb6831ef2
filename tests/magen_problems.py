"""Shared helpers of the third setting's tests: the regimes every gradient check of it runs in."""
import numpy as np

from refvit.magen2025 import MagenDataConfig, MagenModelConfig, init_params, loss_and_grads, make_dataset
from refvit.streams import streams

DATA = MagenDataConfig(N=6, d=12, rho=1.5, sigma=1.0, n_test=2, flip_rate=0.34, flips="exact")


def problem(model_cfg: MagenModelConfig, data_cfg: MagenDataConfig = DATA, seed: int = 0, scale: float = 1.0):
    """(params, X, y, model_cfg) from the data law and the init with streams(seed); params scaled by ``scale``."""
    rng = streams(seed)
    ds = make_dataset(data_cfg, rng.data, rng.test)
    params = init_params(model_cfg, data_cfg.d, rng.init)
    return type(params)(*(scale * a for a in params)), ds.X, ds.y, model_cfg


def after_gd(steps: int = 4, lr: float = 2.0):
    """A characteristic point after a few GD steps from zero (the paper's start): p and v have moved."""
    cfg = MagenModelConfig()
    params, X, y, _ = problem(cfg, seed=2)
    for _ in range(steps):
        _, g = loss_and_grads(params, X, y, cfg)
        params = type(params)(*(a - lr * b for a, b in zip(params, g)))
    return params, X, y, cfg


GAUSS = MagenModelConfig(init="gaussian", sigma0=0.5)
QUERY = MagenModelConfig(form="query", init="gaussian", sigma0=0.6, d_h=3, trained=("W_Q", "W_K", "q", "v"))

REGIMES = {
    "O1_scores": lambda: problem(GAUSS, seed=1),                                       # |Z| of order 1
    "after_gd": after_gd,
    "M3_tokens": lambda: problem(GAUSS, DATA.replace(M=3), seed=3),
    "query_form": lambda: problem(QUERY, seed=4),
    "query_M4_tokens": lambda: problem(QUERY, DATA.replace(M=4), seed=5),     # the study's two switches at once
}
