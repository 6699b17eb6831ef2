"""The second setting: the two-token transformer of Li et al. (ICLR 2025), trained by SignGD, Adam or GD.

Configs (``LiDataConfig``, ``LiModelConfig``), the data law (``make_dataset``, ``sample``), the reference model
(``LiParams``, ``init_params``, ``forward``, ``loss_and_grads``) and the second derivation of its gradients
(``formulas.gradients``), training through the shared trainer (``train``, ``LiObjective``), what the proofs track
(``tracking``), the four stages (``stages``) and the study (``study``, ``experiment``, ``tables``). Every formula is
derived in docs/math.md §13–§15.
"""
from . import formulas
from .config import LiDataConfig, LiModelConfig
from .data import LiDataset, LiSample, make_dataset, sample, signal
from .model import LiCache, LiParams, forward, init_params, loss_and_grads
from .objective import HISTORY_KEYS, LiObjective, train

__all__ = ["LiDataConfig", "LiModelConfig", "LiDataset", "LiSample", "make_dataset", "sample", "signal",
           "LiParams", "LiCache", "init_params", "forward", "loss_and_grads", "formulas", "HISTORY_KEYS", "LiObjective",
           "train"]
