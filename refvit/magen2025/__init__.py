"""The third setting: single-head prompt attention of Magen et al., benign after two steps of GD.

Configs (``MagenDataConfig``, ``MagenModelConfig``), the data law (``make_dataset``, ``sample``, ``signals``), the
reference model (``MagenParams``, ``MagenQKParams``, ``init_params``, ``forward``, ``loss_and_grads``), the second
derivation of its gradients (``formulas.gradients``) and training through the shared trainer (``train``,
``MagenObjective``). Every formula is derived in docs/math.md §16.
"""
from . import formulas
from .config import MagenDataConfig, MagenModelConfig
from .data import MagenDataset, MagenSample, make_dataset, sample, signals
from .model import MagenCache, MagenParams, MagenQKParams, forward, init_params, loss_and_grads
from .objective import HISTORY_KEYS, MagenObjective, signal_attention, train

__all__ = ["MagenDataConfig", "MagenModelConfig", "MagenDataset", "MagenSample", "make_dataset", "sample", "signals",
           "MagenParams", "MagenQKParams", "MagenCache", "init_params", "forward", "loss_and_grads", "formulas",
           "HISTORY_KEYS", "MagenObjective", "signal_attention", "train"]
