"""The update rules of full-batch training (docs/math.md §6.1), shared by every setting: GD (6.1), SignGD (6.2) and
Adam with bias correction (6.3). Each acts entrywise on every trained array of the state, in place."""
from __future__ import annotations

import numpy as np

from .config import TrainConfig


class Optimizer:
    """The update rule of ``cfg.optimizer`` with its state (Adam's moments), for the arrays of one training state.

    ``step(state, grads, trainable, t)`` updates ``state[k]`` in place for every k with ``trainable[k]``; t is the
    0-based number of the update (Adam's bias correction uses t + 1).
    """

    def __init__(self, cfg: TrainConfig, state: list):
        self.cfg = cfg
        adam = cfg.optimizer == "adam"
        self.m = [np.zeros_like(a) for a in state] if adam else None   # first moments
        self.s = [np.zeros_like(a) for a in state] if adam else None   # second moments

    def step(self, state: list, grads, trainable: list, t: int) -> None:
        cfg = self.cfg
        b1, b2 = cfg.adam_betas
        for k in range(len(state)):
            if not trainable[k]:
                continue
            g = grads[k]
            if cfg.optimizer == "gd":
                state[k] -= cfg.lr * g                     # (math 6.1)
            elif cfg.optimizer == "signgd":
                state[k] -= cfg.lr * np.sign(g)            # sgn(0) = 0, entrywise (math 6.2)
            else:  # Adam with bias correction (Kingma & Ba 2015, Algorithm 1) (math 6.3)
                self.m[k] = b1 * self.m[k] + (1 - b1) * g
                self.s[k] = b2 * self.s[k] + (1 - b2) * g * g
                m_hat = self.m[k] / (1 - b1 ** (t + 1))
                s_hat = self.s[k] / (1 - b2 ** (t + 1))
                state[k] -= cfg.lr * m_hat / (np.sqrt(s_hat) + cfg.adam_eps)
