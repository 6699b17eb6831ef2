"""Shared helpers of the second setting's tests: the three regimes every gradient check of it runs in."""
import numpy as np

from refvit.streams import streams
from refvit.li2025 import LiDataConfig, LiModelConfig, init_params, loss_and_grads, make_dataset

DATA = LiDataConfig(N=6, d=12, s=3, sigma_p=1.0, mu_norm=1.5, n_test=2, signal_position="random", alpha=0.2)


def problem(model_cfg: LiModelConfig, data_cfg: LiDataConfig = DATA, seed: int = 0):
    """(params, X, y, model_cfg) drawn from the data law and the N(0, σ₀²) init with streams(seed)."""
    rng = streams(seed)
    ds = make_dataset(data_cfg, rng.data, rng.test)
    return init_params(model_cfg, data_cfg.d, rng.init), ds.X, ds.y, model_cfg


def after_signgd(steps: int = 5, lr: float = 0.05):
    """A characteristic point after a few SignGD steps (math 13.28) from an O(1) init: logits and margins moved."""
    params, X, y, cfg = problem(LiModelConfig(m_k=3, m_v=2, sigma0=0.3, logit_scale=1.3))
    for _ in range(steps):
        _, g = loss_and_grads(params, X, y, cfg)
        params = type(params)(*(p - lr * np.sign(gp) for p, gp in zip(params, g)))
    return params, X, y, cfg


REGIMES = {
    "tiny_init": lambda: problem(LiModelConfig(m_k=3, m_v=2)),                          # σ₀ = 1e-3, S ≈ 1/2
    "O1_logits": lambda: problem(LiModelConfig(m_k=3, m_v=2, sigma0=0.6, c_L="mean", logit_scale=1.5), seed=1),
    "after_signgd": after_signgd,
}
