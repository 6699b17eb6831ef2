"""The two settings the checker serves, each as one ``Setting``: the first (Jiang et al., ``refvit.jiang2024``) and
the second (Li et al., ``refvit.li2025``). ``get_setting(name)`` is how the runner, golden and the CLI find one."""
from __future__ import annotations

from ..jiang2024.model import Params, forward, forward_cache, loss_and_grads
from ..li2025.model import LiParams
from .cases import CASE_GROUPS, CaseSpec, DTYPES, build_case
from .compare import _reference_trajectory
from .li_cases import (LI_CASE_GROUPS, LiCaseSpec, build_li_case, li_extra_args, li_forward, li_fresh_step,
                       li_logits, li_loss_and_grads, li_trajectory)
from .li_mutants import LI_CATALOGUE
from .mutants import CATALOGUE, CAUSES, DESCRIPTIONS, SHAPE_MISTAKES
from .setting import Setting

JIANG = Setting(
    name="jiang2024", title="the first setting (Jiang et al.)", params=Params, dtypes=DTYPES, groups=CASE_GROUPS,
    case_type=CaseSpec, build_case=build_case,
    extra_args=lambda spec, kind: (spec.lr,) if kind in ("step", "trainer") else (),
    has_step=lambda spec: True,
    forward=lambda p, X, spec: forward(p, X),
    loss_and_grads=lambda p, X, y, spec: loss_and_grads(p, X, y),
    trajectory=lambda p0, X, y, spec, train_w_O, steps: _reference_trajectory(p0, X, y, spec.lr, train_w_O, steps),
    fresh_step=lambda p, X, y, spec, train_w_O: None,
    bind=lambda variant, spec: variant,
    catalogue=CATALOGUE, shape_mistakes=SHAPE_MISTAKES, descriptions=DESCRIPTIONS,
    logits=lambda p, X, spec: forward_cache(p, X)[1].Z, logit_text="x_lᵀ W_Q W_Kᵀ x_j",
    forward_contract="forward_fn(W_Q, W_K, W_V, w_O, X) -> f",
    first_setting_checks=True)

LI = Setting(
    name="li2025", title="the second setting (Li et al.)", params=LiParams, dtypes=("float64",),
    groups=LI_CASE_GROUPS, case_type=LiCaseSpec, build_case=build_li_case, extra_args=li_extra_args,
    has_step=lambda spec: spec.optimizer != "adam",
    forward=li_forward, loss_and_grads=li_loss_and_grads, trajectory=li_trajectory, fresh_step=li_fresh_step,
    bind=lambda variant, spec: variant.bind(spec),
    catalogue=LI_CATALOGUE, shape_mistakes=SHAPE_MISTAKES,
    descriptions={**{m.name: m.description for m in LI_CATALOGUE + SHAPE_MISTAKES}, **CAUSES},
    logits=li_logits, logit_text="⟨W_Q x_l, W_K x_m⟩", forward_contract="forward_fn(W_Q, W_K, W_V, X, c_L) -> f")

SETTINGS = {s.name: s for s in (JIANG, LI)}


def get_setting(setting) -> Setting:
    """A ``Setting`` from its name ("jiang2024", "li2025") or itself."""
    if isinstance(setting, Setting):
        return setting
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {sorted(SETTINGS)}, got {setting!r}")
    return SETTINGS[setting]
