"""refvit: the reference implementation of the two-layer vision transformer of Jiang et al. (NeurIPS 2024).

Public API (stable): ``Params``, ``forward``, ``loss_and_grads``, ``train``, ``gradcheck``, the config dataclasses
and the data model. See README.md for the glossary mapping each symbol of the paper to its name here.
"""
from . import gradcheck
from .jiang2024.config import DataConfig, ModelConfig, dynamics_setting, figure1_setting, snr
from .config import TrainConfig
from .jiang2024.data import Dataset, make_dataset, sample
from .streams import streams
from .jiang2024.init import init_params
from .jiang2024.model import Params, forward, loss_and_grads
from .trainer import History
from .jiang2024.train import train

__version__ = "0.1.0"

__all__ = [
    "Params", "forward", "loss_and_grads", "train", "History", "gradcheck",
    "DataConfig", "ModelConfig", "TrainConfig", "figure1_setting", "dynamics_setting", "snr",
    "Dataset", "make_dataset", "sample", "streams", "init_params", "__version__",
]
