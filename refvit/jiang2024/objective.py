"""What the shared trainer needs of the first setting beyond a loss and a gradient: the quantities each step records,
which block stays frozen, and how an overflow on the test set is described. ``DenseObjective`` trains the weights
themselves; ``refvit.jiang2024.span.SpanObjective`` trains token coordinates and shares everything here."""
from __future__ import annotations

import numpy as np

from ..config import TrainConfig
from .model import Evaluation, Params, forward_cache, loss_grads_cache, overflow_scales, resolve_backend

# Quantities recorded at every step t, evaluated at the parameters *before* update t (math §6.1). Token 0 is the
# signal token, token 1 the noise token, token 2 the first "other" token (NaN when M = 2). "s0" = training sample 0,
# the sample the authors' dynamics script plots (a y = +1 sample under balanced labels).
HISTORY_KEYS = (
    "train_loss", "test_loss",
    "attn_signal", "attn_noise",            # mean over samples of ā_{i,0} and ā_{i,1}
    "attn_signal_s0", "attn_noise_s0",      # ā_{0,0}, ā_{0,1}
    "value_signal", "value_noise",          # mean over samples of y_i v_{i,0}, y_i v_{i,1} (signed value scores)
    "V_signal_s0", "V_noise_s0",            # v_{0,0} = μ_{y_0}ᵀ W_V w_O and v_{0,1} = ξ_0ᵀ W_V w_O
    "qk_sig_sig_s0", "qk_sig_noise_s0",     # μᵀ W_Q W_Kᵀ μ and μᵀ W_Q W_Kᵀ ξ for sample 0
    "qk_other_sig_s0", "qk_other_noise_s0",  # x₃ᵀ W_Q W_Kᵀ μ and x₃ᵀ W_Q W_Kᵀ ξ (x₃ = token 2 as the query)
    "min_margin",                           # min_i y_i f_i
)


class ViTObjective:
    """The parts of the ``refvit.trainer.Objective`` protocol that every objective of the first setting shares.

    Subclasses set ``X``, ``y``, ``X_test``, ``y_test`` and ``state0`` and define ``value_and_grad``,
    ``test_outputs`` and ``params``.
    """
    history_keys = HISTORY_KEYS

    def frozen(self, cfg: TrainConfig) -> set:
        """w_O stays at its init unless ``cfg.train_w_O`` (the authors' frozen head, math 6.1)."""
        return set() if cfg.train_w_O else {"w_O"}

    def record(self, loss: float, f: np.ndarray, cache) -> dict:
        """One history row (``HISTORY_KEYS`` but the test loss) from the forward ``Cache`` at the current state."""
        y = self.y
        M = cache.S.shape[1]
        abar, v, Z = cache.abar, cache.v, cache.Z
        nan = np.nan   # quantities of tokens an image does not have (M = 1: no noise token; M = 2: no other token)
        return {
            "train_loss": loss,
            "attn_signal": abar[:, 0].mean(), "attn_noise": abar[:, 1].mean() if M > 1 else nan,
            "attn_signal_s0": abar[0, 0], "attn_noise_s0": abar[0, 1] if M > 1 else nan,
            "value_signal": (y * v[:, 0]).mean(), "value_noise": (y * v[:, 1]).mean() if M > 1 else nan,
            "V_signal_s0": v[0, 0], "V_noise_s0": v[0, 1] if M > 1 else nan,
            "qk_sig_sig_s0": Z[0, 0, 0], "qk_sig_noise_s0": Z[0, 0, 1] if M > 1 else nan,
            "qk_other_sig_s0": Z[0, 2, 0] if M > 2 else nan, "qk_other_noise_s0": Z[0, 2, 1] if M > 2 else nan,
            "min_margin": (y * f).min(),
        }

    def test_overflow(self, state) -> str:
        """The scales that overflowed on the test set, from a dense forward pass at ``state``."""
        with np.errstate(over="ignore", invalid="ignore"):
            f_dense, cache_test = forward_cache(self.params(state), self.X_test)
        return overflow_scales(self.X_test, f_dense, cache_test)


class DenseObjective(ViTObjective):
    """Training state = ``Params``; gradients from the reference model with the chosen attention core."""

    def __init__(self, params: Params, X, y, X_test=None, y_test=None, backend: str = "numpy"):
        self.X, self.y, self.X_test, self.y_test = X, y, X_test, y_test
        self.backend = resolve_backend(backend)
        self.state0 = params

    def value_and_grad(self, state) -> Evaluation:
        return loss_grads_cache(Params(*state), self.X, self.y, self.backend)   # loss (math 3.3), gradients (math §4)

    def test_outputs(self, state) -> np.ndarray:
        return forward_cache(Params(*state), self.X_test, self.backend)[0]

    def params(self, state) -> Params:
        return Params(*state)
