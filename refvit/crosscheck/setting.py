"""What the checker needs of one setting (``Setting``), and the one definition of the case groups.

The runner, the comparison, the diagnosis and the report are shared; each setting contributes a ``Setting``: its
parameter blocks, the extra arguments your functions receive, its reference (f, loss, gradients, one training
trajectory), its cases and its catalogue of mistakes. ``refvit.crosscheck.settings.SETTINGS`` holds both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# The case groups, one definition for `refvit crosscheck --cases` and `refvit golden --cases`, in every setting:
# name -> what it holds. ``case_groups`` builds them from a setting's three tuples of cases.
GROUP_MEANINGS = {
    "small": "a few fast cases at ordinary scales (the committed golden set)",
    "edge": "labels, sizes, margins, the long trajectory",
    "quick": "small + edge",
    "authors": "the authors' settings at full width (seconds each; none in the second setting)",
    "all": "quick + authors",
}


def case_groups(small: tuple, edge: tuple, authors: tuple) -> dict:
    """{group name: cases} of ``GROUP_MEANINGS`` for one setting."""
    return {"small": small, "edge": edge, "quick": small + edge, "authors": authors, "all": small + edge + authors}


def groups_help() -> str:
    """"small (…), edge (…), …": the groups and their meaning, for help texts."""
    return "; ".join(f"{k}: {v}" for k, v in GROUP_MEANINGS.items())


def select_from(groups: dict, case_type: type, cases="all", title: str = "this setting") -> tuple:
    """The cases of a group name, or of a sequence of case names, groups or ``case_type`` instances."""
    if isinstance(cases, str):
        if cases not in groups:
            raise ValueError(f"unknown cases {cases!r}; choose one of {sorted(groups)} or a list of case names")
        if not groups[cases]:
            raise ValueError(f"{title} has no cases in the group {cases!r}")
        return groups[cases]
    by_name = {c.name: c for c in groups["all"]}
    out = []
    for c in cases:
        if isinstance(c, case_type):
            out.append(c)
        elif isinstance(c, str) and c in groups:
            out.extend(x for x in groups[c] if x not in out)
        elif isinstance(c, str) and c in by_name:
            out.append(by_name[c])
        else:
            raise ValueError(f"unknown case {c!r}; known cases are {sorted(by_name)} and the groups "
                             f"{sorted(groups)}")
    if not out:
        raise ValueError("no cases selected")
    return tuple(out)


@dataclass(frozen=True)
class Setting:
    """One setting as the checker sees it.

    name, title : "li2025", "the second setting (Li et al.)".
    params : the NamedTuple of the parameter blocks (its fields name the blocks: W_Q, W_K, …).
    dtypes : the dtypes a check may pass your functions.
    groups : ``case_groups(small, edge, authors)``; groups["all"] is every case.
    case_type : the frozen dataclass of one case's settings (``CaseSpec`` of the first setting).
    build_case : spec -> ``Case`` (spec, params, X, y), float64.
    extra_args : (spec, kind) -> the arguments after (params, X) for kind "forward", after (params, X, y) for
        "grad", "step" and "trainer" (the first setting: lr for a step; the second: c_L, lr, optimizer, trained).
    has_step : spec -> whether your step function is checked on this case (no stateless step exists for Adam).
    forward, loss_and_grads : (params, X, spec) -> f (n,); (params, X, y, spec) -> (loss, grads), the reference.
    trajectory : (p0, X, y, spec, train_w_O, steps) -> (θ_1 … θ_T, g_0 … g_{T−1}), the reference's training.
    fresh_step : (p, X, y, spec, train_w_O) -> θ after one step of a newly created optimizer at p, or None when
        the update keeps no state (then it is the trajectory's next iterate).
    bind : (variant, spec) -> the mutant's model on this case (``forward``, ``loss_and_grads``, ``trajectory``,
        ``step_only``, ``dtype``).
    catalogue, shape_mistakes : the ``Mistake`` tuples run as mutants / named from a wrong shape.
    descriptions : {name: sentence} of every mistake and cause the diagnosis may name.
    logits : (params, X, spec) -> Z (n, L, L), the pre-softmax scores (for the overflow sentences).
    logit_text : how a logit is written in the messages.
    forward_contract : the call your forward must accept, as the messages write it.
    first_setting_checks : the diagnosis steps written for the first setting's model (signatures outside the
        catalogue, update findings, the float32 test); off elsewhere.
    """
    name: str
    title: str
    params: type
    dtypes: tuple
    groups: dict
    case_type: type
    build_case: Callable
    extra_args: Callable
    has_step: Callable
    forward: Callable
    loss_and_grads: Callable
    trajectory: Callable
    fresh_step: Callable
    bind: Callable
    catalogue: tuple
    shape_mistakes: tuple
    descriptions: dict
    logits: Callable
    logit_text: str
    forward_contract: str
    first_setting_checks: bool = False

    @property
    def fields(self) -> tuple:
        return self.params._fields

    @property
    def grad_blocks(self) -> tuple:
        return tuple(f"d{k}" for k in self.fields)

    @property
    def traj_blocks(self) -> tuple:
        return tuple(f"traj_{k}" for k in self.fields)

    @property
    def trainer_blocks(self) -> tuple:
        return tuple(f"trainer_{k}" for k in self.fields) + ("trainer_restart", "trainer_step_k")

    @property
    def blocks(self) -> tuple:
        return ("f", "loss") + self.grad_blocks + self.traj_blocks + self.trainer_blocks

    def select(self, cases="all") -> tuple:
        """A group name, or a sequence of case names, groups or case specs (``select_from``)."""
        return select_from(self.groups, self.case_type, cases, self.title)
