"""The update rules of full-batch training (docs/math.md §6.1), shared by every setting: GD (6.1), SignGD (6.2) and
Adam with bias correction (6.3). Each acts entrywise on every trained array of the state, in place."""
from __future__ import annotations

import numpy as np

from .config import TrainConfig
from .primitives import halves_of_one


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
        self._scratch = {}   # shape -> a buffer for η·g (GD, SignGD): no new array of the state's size per step

    def step(self, state: list, grads, trainable: list, t: int) -> None:
        cfg = self.cfg
        b1, b2 = cfg.adam_betas
        if cfg.optimizer != "adam":                        # entrywise and stateless: by blocks (``_blocks``)
            for s, g in _blocks(state, grads, trainable):
                step = self._scratch.get(s.shape)
                if step is None:
                    step = self._scratch[s.shape] = np.empty(s.shape)
                if cfg.optimizer == "gd":
                    np.multiply(cfg.lr, g, out=step)       # η g (math 6.1)
                else:
                    np.multiply(cfg.lr, np.sign(g, out=step), out=step)   # η sgn(g), sgn(0) = 0 (math 6.2)
                s -= step
            return
        for k in range(len(state)):   # Adam with bias correction (Kingma & Ba 2015, Algorithm 1) (math 6.3)
            if not trainable[k]:
                continue
            g = grads[k]
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.s[k] = b2 * self.s[k] + (1 - b2) * g * g
            m_hat = self.m[k] / (1 - b1 ** (t + 1))
            s_hat = self.s[k] / (1 - b2 ** (t + 1))
            state[k] -= cfg.lr * m_hat / (np.sqrt(s_hat) + cfg.adam_eps)


def _blocks(state: list, grads, trainable: list):
    """(state array, gradient array) of every trained field; two trained neighbours that are the halves of one
    buffer in the state and in the gradient alike come as the two buffers (one pass instead of two strided ones)."""
    k = 0
    while k < len(state):
        if trainable[k] and k + 1 < len(state) and trainable[k + 1]:
            s2, g2 = halves_of_one(state[k], state[k + 1]), halves_of_one(grads[k], grads[k + 1])
            if s2 is not None and g2 is not None:
                yield s2, g2
                k += 2
                continue
        if trainable[k]:
            yield state[k], grads[k]
        k += 1
