"""Check another implementation of the model (PyTorch, JAX, another numpy) against this reference, and name the
known mistake a mismatch matches.

Your functions are plain callables on numpy arrays; wrap a framework model in a few lines (see the adapters in
examples/ and the guide docs/crosscheck.md). The contracts, with the dimension letters of ``refvit.jiang2024.model`` (n samples, M tokens, d token dimension,
d_h query/key width, d_v value width):

``forward_fn(W_Q, W_K, W_V, w_O, X) -> f``
    W_Q, W_K (d, d_h), W_V (d, d_v), w_O (d_v,), X (n, M, d). Returns the model output f (n,) of docs/math.md (2.7),
    f_i = (1/M) Σ_l Σ_j softmax_j(x_lᵀ W_Q W_Kᵀ x_j) x_jᵀ W_V w_O (softmax over keys j, no 1/√d_h).

``grad_fn(W_Q, W_K, W_V, w_O, X, y) -> (loss, dW_Q, dW_K, dW_V, dw_O)``
    y (n,) in {±1}. loss is the *mean* logistic loss L = (1/n) Σ_i log(1 + exp(-y_i f_i)), a scalar
    (docs/math.md (3.3)); the four gradients of L have the shapes of the parameters. dw_O is always returned, even
    when training freezes w_O.

``gd_step_fn(W_Q, W_K, W_V, w_O, X, y, lr) -> (W_Q, W_K, W_V, w_O)``
    One full-batch gradient-descent step θ ← θ − lr ∇L(θ), lr a Python float. w_O is frozen by default (the
    authors' code and the default of docs/math.md §3), so the returned w_O must equal the one passed in; call
    ``crosscheck(..., train_w_O=True)`` if your implementation trains w_O, and the checker then expects
    w_O ← w_O − lr ∇_{w_O} L. The checker iterates your step 20 times from each case's start (a trajectory;
    150 in the case "long").

``make_trainer(W_Q, W_K, W_V, w_O, X, y, lr) -> trainer`` with ``trainer.step(k)`` and ``trainer.params()``
    Your own training loop (``crosscheck(..., trainer=make_trainer)``, ``--trainer``): created once, ``step(k)``
    runs k GD steps keeping whatever state your optimizer keeps, ``params()`` returns (W_Q, W_K, W_V, w_O). The
    checker compares a persistent trainer stepped one step at a time, a trainer recreated at every reference
    iterate, and one ``step(T)`` call with the reference trajectory, so hidden optimizer state shows either way.

Every array you receive is a fresh C-contiguous copy in the checked dtype ("float64" or "float32"; y too), so
in-place updates cannot disturb the checker. Return anything ``np.asarray`` accepts (convert framework tensors
with ``.detach().cpu().numpy()``). An exception, a wrong shape or a call that exceeds the time limit is reported
for that case (saying what is required, what came and how to fix it), not raised.

How the comparison works: in each case the reference evaluates *the same* inputs your functions receive (in
float32 mode, the float32-rounded inputs) in float64 with ``refvit.jiang2024.model``. Each block gets one relative error,
max|yours − ref| / max(max|yours|, max|ref|) (see ``block_error``), compared with a tolerance for the dtype
(``TOLERANCES``; float32 trajectories in rounding budgets, ``rounding_budget``). When something fails, every
known mistake of ``CATALOGUE`` is run as a variant of the model (a "mutant") on the same inputs, part by part
(values; your step's trajectory; your trainer's); a NaN or inf where the reference is finite is diagnosed as the
overflow it is instead. The explanations are ranked with the failing cases each explains
(``Report.explanations``); ``Report.diagnosis`` names those that explain every failing case. Findings outside the
catalogue (zero or uniformly scaled blocks, updates, trainer state) are ``Report.findings``, each with its cases.

Correctness (ordinary scales) and robustness (extreme margins and logits: the case "large_margin") are judged
apart: ``Report.status`` is 0 when everything passes, 1 when a correctness case fails, 3 when only robustness
fails (a literal log(1 + e^{−y f}), e.g. PyTorch's SoftMarginLoss, is correct but not robust).

The second setting (Li et al., ``refvit.li2025``): ``crosscheck(..., setting="li2025")`` with
``forward_fn(W_Q, W_K, W_V, X, c_L)``, ``grad_fn(W_Q, W_K, W_V, X, y, c_L) -> (loss, dW_Q, dW_K, dW_V)``,
``gd_step_fn(W_Q, W_K, W_V, X, y, c_L, lr, optimizer, trained)`` (GD and SignGD cases) and
``make_trainer(W_Q, W_K, W_V, X, y, c_L, lr, optimizer, trained)`` (GD, SignGD, Adam): W_Q, W_K (m_k, d),
W_V (2, m_v, d), X (n, 2, d), c_L "sum" or "mean", optimizer "gd", "signgd" or "adam", trained a tuple of block
names (docs/crosscheck.md, "The second setting").

Each setting contributes one ``Setting`` (``setting``: blocks, extra arguments, reference, cases, catalogue;
``settings``: the two of them); the case groups are one definition (``GROUP_MEANINGS``) for both settings and
for ``refvit golden``. The package by job: ``cases`` (the cases, the tolerances and the reference's GD step), ``mutants`` (``Variant`` and
the ``CATALOGUE`` of mistakes), ``metrics`` (the relative errors), ``calls`` (calling your functions: copies,
time limit, contract messages), ``compare`` (the reference's numbers and the errors against them), ``overflow``
(non-finite outputs), ``updates`` (your updates on their own), ``diagnosis`` (one case: mutants, findings),
``explain`` (the ranking), ``runner`` (``crosscheck``), ``report`` (the results) and ``cli`` (``refvit
crosscheck``); ``li_cases`` and ``li_mutants`` the second setting's cases, reference and catalogue. Everything public is importable from here.
"""
from .cases import (AUTHOR_CASES, BLOCKS, CASE_GROUPS, CASE_KINDS, CASES, DTYPES, EDGE_CASES, F32_GRAD_ROUNDING, F32_UNIT,
                    GRAD_BLOCKS, LABEL_PATTERNS, SMALL_CASES, STEPS, TOLERANCES, TRAINER_BLOCKS, TRAJ_BLOCKS,
                    TRAJ_FLOOR, Case, CaseSpec, build_case, reference_step, select_cases, tolerance)
from .cli import add_subcommand, cmd_crosscheck, load_callable
from .metrics import (block_error, describe_values, grad_zero_level, match_error, rounding_budget, trajectory_error,
                      uniform_factor)
from .mutants import CATALOGUE, CAUSES, DESCRIPTIONS, MISTAKES, SHAPE_MISTAKES, Mistake, Variant
from .report import EXIT_INCORRECT, EXIT_NOT_ROBUST, EXIT_PASS, BlockResult, CaseResult, Report, finite_json
from .runner import DEFAULT_TIMEOUT, crosscheck
from .li_cases import LI_CASE_GROUPS, LiCaseSpec, build_li_case, select_li_cases
from .li_mutants import LI_CATALOGUE, LI_MISTAKES, LiVariant
from .setting import GROUP_MEANINGS, Setting, case_groups
from .settings import JIANG, LI, SETTINGS, get_setting

__all__ = [
    "crosscheck", "Report", "CaseResult", "BlockResult",
    "EXIT_PASS", "EXIT_INCORRECT", "EXIT_NOT_ROBUST", "CASE_KINDS", "CAUSES", "DESCRIPTIONS",
    "CaseSpec", "Case", "CASES", "SMALL_CASES", "EDGE_CASES", "AUTHOR_CASES", "CASE_GROUPS", "LABEL_PATTERNS",
    "build_case", "select_cases", "reference_step",
    "DTYPES", "BLOCKS", "GRAD_BLOCKS", "TRAJ_BLOCKS", "TRAINER_BLOCKS", "TOLERANCES", "TRAJ_FLOOR", "STEPS",
    "F32_UNIT", "F32_GRAD_ROUNDING", "tolerance", "DEFAULT_TIMEOUT",
    "block_error", "trajectory_error", "grad_zero_level", "match_error", "uniform_factor", "describe_values",
    "rounding_budget", "finite_json",
    "Variant", "Mistake", "CATALOGUE", "MISTAKES", "SHAPE_MISTAKES",
    "load_callable", "cmd_crosscheck", "add_subcommand",
    "Setting", "SETTINGS", "JIANG", "LI", "get_setting", "GROUP_MEANINGS", "case_groups",
    "LiCaseSpec", "LI_CASE_GROUPS", "build_li_case", "select_li_cases", "LiVariant", "LI_CATALOGUE", "LI_MISTAKES",
]
