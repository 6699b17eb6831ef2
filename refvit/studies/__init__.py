"""Studies beyond the paper's two figures, built on the sweep machinery: one module per study.

``optimizers`` (GD, SignGD, Adam, with rates from ``lr_rule``) and ``labelnoise`` (training-label flips);
``common`` holds what they share. ``refvit study …`` runs them (``refvit.pipelines``).
"""
from .common import PRESETS, SUMMARY_COLUMNS, coords_for, group_stats, regime_of
from .labelnoise import LabelNoiseStudy, p_folder, run_label_noise, write_label_noise_tables
from .lr_rule import LR_RULES, choose_lr, lr_tag
from .optimizers import (PILOT_STREAM_TAG, OptimizerStudy, Setting, dynamics_optimizer_setting,
                         figure1_optimizer_setting, run_optimizers, write_optimizer_tables)

STUDIES = ("optimizers", "label-noise")

__all__ = ["PRESETS", "SUMMARY_COLUMNS", "STUDIES", "coords_for", "group_stats", "regime_of", "LabelNoiseStudy",
           "p_folder", "run_label_noise", "write_label_noise_tables", "LR_RULES", "choose_lr", "lr_tag",
           "PILOT_STREAM_TAG", "OptimizerStudy", "Setting", "dynamics_optimizer_setting",
           "figure1_optimizer_setting", "run_optimizers", "write_optimizer_tables"]
