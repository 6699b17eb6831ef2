"""Studies beyond the paper's two figures, built on the sweep machinery: one module per study.

``optimizers`` (GD, SignGD, Adam, with rates from ``lr_rule``), ``labelnoise`` (training-label flips) and
``sharpness`` (the boundary's exponent and width against d and the data model) and ``phases`` (the three
phases of training, measured);
``common`` holds what they share. ``refvit study …`` runs them (``refvit.pipelines``).
"""
from .common import PRESETS, SUMMARY_COLUMNS, coords_for, group_stats, regime_of
from .labelnoise import LabelNoiseStudy, p_folder, run_label_noise, write_label_noise_tables
from .lr_rule import LR_RULES, choose_lr, lr_tag
from .phases import PhaseStudy, run_phases, write_phase_tables
from .sharpness import LR_SCALINGS, VARIANTS, SharpnessStudy, run_sharpness, write_sharpness_tables
from .optimizers import (PILOT_STREAM_TAG, OptimizerStudy, Setting, dynamics_optimizer_setting,
                         figure1_optimizer_setting, run_optimizers, write_optimizer_tables)

__all__ = ["PRESETS", "SUMMARY_COLUMNS", "coords_for", "group_stats", "regime_of", "LabelNoiseStudy",
           "p_folder", "run_label_noise", "write_label_noise_tables", "LR_RULES", "choose_lr", "lr_tag",
           "PILOT_STREAM_TAG", "OptimizerStudy", "Setting", "dynamics_optimizer_setting",
           "figure1_optimizer_setting", "run_optimizers", "write_optimizer_tables", "LR_SCALINGS", "VARIANTS",
           "SharpnessStudy", "run_sharpness", "write_sharpness_tables", "PhaseStudy", "run_phases",
           "write_phase_tables"]
