"""The checker on the second setting (``setting="li2025"``): its reference agrees with independent computations, a
correct implementation passes every case, each catalogued mistake made by an implementation written here
(tests/xc_li_users.py, per-row gradient sums, not the checker's LiVariant) is detected and named, and the first
setting's defaults are untouched."""
import numpy as np
import pytest

from refvit import cli
from refvit.crosscheck import crosscheck
from refvit.crosscheck.li_cases import (LI_CASE_GROUPS, build_li_case, li_forward, li_fresh_step, li_logits,
                                        li_loss_and_grads, li_trajectory)
from refvit.crosscheck.li_mutants import LI_CATALOGUE, LiVariant
from refvit.crosscheck.setting import GROUP_MEANINGS
from refvit.crosscheck.settings import JIANG, LI, get_setting
from refvit.li2025.model import LiParams
from refvit.testing import CrosscheckFailure, assert_matches_reference

from .xc_li_users import MISTAKES, user

CASES = LI_CASE_GROUPS["all"]


@pytest.mark.parametrize("spec", CASES, ids=lambda s: s.name)
def test_li_variant_without_switches_is_the_reference(spec):
    # Two implementations of docs/math.md §13 (LiVariant's chain rule, refvit.li2025.model) and of the update
    # rules (LiVariant's loop, refvit.optimizers.Optimizer): float64 summation order only, measured ≤ 1e-15
    # relative; 1e-12 leaves room and is far below any catalogued mistake (≥ 1e-3).
    c = build_li_case(spec)
    f, _ = LiVariant().forward(c.params, c.X, spec.c_L)
    loss, g = LiVariant().loss_and_grads(c.params, c.X, c.y, spec.c_L)
    ref_loss, ref_g = li_loss_and_grads(c.params, c.X, c.y, spec)
    np.testing.assert_allclose(f, li_forward(c.params, c.X, spec), rtol=1e-12, atol=1e-12 * np.max(np.abs(f)))
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
    for a, b in zip(g, ref_g):
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b))
    mine = list(LiVariant().trajectory(c.params, c.X, c.y, spec.c_L, spec.lr, spec.optimizer, spec.trained, 5))
    for a_t, b_t, in zip(mine, li_trajectory(c.params, c.X, c.y, spec, False, 5)[0]):
        for name, a, b, a0 in zip(LiParams._fields, a_t, b_t, c.params):
            assert np.max(np.abs(a - b)) <= 1e-12 * max(np.max(np.abs(b - a0)), 1e-300), (spec.name, name)
            if name not in spec.trained:
                assert np.array_equal(a, a0)          # frozen blocks never move (docs/math.md §13.6)


def test_adam_first_step_is_the_closed_form_and_a_fresh_trainer_restarts_it():
    # docs/math.md §13.6: from m_0 = s_0 = 0 the first Adam step is −η G/(|G| + ε), a closed form independent of
    # the optimizer code; 1e-12 relative: a handful of roundings.
    spec = next(s for s in CASES if s.name == "adam_mean")
    c = build_li_case(spec)
    _, G = li_loss_and_grads(c.params, c.X, c.y, spec)
    theta1 = li_fresh_step(c.params, c.X, c.y, spec, False)
    for a, a0, g in zip(theta1, c.params, G):
        expect = a0 - spec.lr * g / (np.abs(g) + 1e-8)
        assert np.max(np.abs(a - expect)) <= 1e-12 * spec.lr
    assert li_fresh_step(c.params, c.X, c.y, CASES[0], False) is None      # GD keeps no state


def test_cases_have_the_scales_they_claim():
    by = {s.name: s for s in CASES}
    lm = by["large_margin"]
    c = build_li_case(lm)
    f = li_forward(c.params, c.X, lm)
    assert lm.kind == "robustness" and np.min(c.y * f) < -709.8          # e^{−y f} overflows float64
    assert np.max(li_logits(c.params, c.X, lm)) > 709.8                   # exp of a raw logit overflows
    for name in ("signgd_sparse", "signgd_frozen_V", "one_class"):        # sgn(0) must matter: exact zeros
        s = by[name]
        c = build_li_case(s)
        assert s.optimizer == "signgd"
        assert any(np.any(g == 0) for g in li_loss_and_grads(c.params, c.X, c.y, s)[1])
    s = by["adam_mean"]                                                   # ε must matter: |G| ≲ √ε somewhere
    c = build_li_case(s)
    g = np.concatenate([a.ravel() for a in li_loss_and_grads(c.params, c.X, c.y, s)[1]])
    assert np.any((g != 0) & (np.abs(g) < 1e-4))
    kinds = {(s.optimizer, s.c_L, len(s.trained) < 3) for s in CASES}
    assert {o for o, _, _ in kinds} == {"gd", "signgd", "adam"} and {c for _, c, _ in kinds} == {"sum", "mean"}
    assert any(frozen for _, _, frozen in kinds)


def test_a_correct_implementation_passes_every_case():
    forward, grad, step, trainer = user()
    report = crosscheck(forward, grad, step, trainer=trainer, setting="li2025", verbose=False)
    assert report.passed and report.status == 0, report.format()
    adam = sum(s.optimizer == "adam" for s in CASES)
    # f, loss, 3 gradients, 3 step blocks (not for Adam: no stateless step), 3 + 2 trainer blocks
    assert len(report.rows()) == len(CASES) * 13 - adam * 3
    assert report.to_dict()["setting"] == "li2025" and "setting li2025" in report.format()


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_each_catalogued_mistake_is_detected_and_named(name):
    assert set(MISTAKES) == {m.name for m in LI_CATALOGUE}           # every entry of the catalogue is tried
    forward, grad, step, trainer = user(**MISTAKES[name])
    report = crosscheck(forward, grad, step, trainer=trainer, setting="li2025", cases="quick", verbose=False)
    assert not report.passed
    overflow = name in ("naive_logistic_overflow", "softmax_without_max_shift")
    assert report.status == (3 if overflow else 1), report.format()
    if name == "softmax_over_queries":
        # f no longer depends on W_Q, W_K: their gradients are 0 up to rounding, and SignGD and Adam turn that
        # noise into moves no model predicts; the mistake explains the values of every failing case, first.
        first = report.explanations[0]
        assert first["names"] == [name] and len(first["cases"]) == first["of"], report.format()
    else:
        assert report.diagnosis == [name], report.format()


def test_assert_matches_reference_takes_the_second_setting():
    forward, grad, step, trainer = user()
    assert assert_matches_reference(forward, grad, step, trainer=trainer, setting="li2025").passed
    with pytest.raises(CrosscheckFailure) as info:
        assert_matches_reference(*user(c_rule="swapped")[:3], setting="li2025", cases="small")
    assert info.value.report.diagnosis == ["c_L_swapped"] and "c_L_swapped" in str(info.value)


def test_bad_options_of_the_second_setting_are_refused():
    forward = user()[0]
    for kw, message in ((dict(dtype="float32"), "dtype must be one of"), (dict(train_w_O=True), "train_w_O"),
                        (dict(cases="authors"), "has no cases in the group 'authors'"),
                        (dict(cases=["tiny_init"]), "unknown case 'tiny_init'")):
        with pytest.raises(ValueError, match=message):
            crosscheck(forward, setting="li2025", verbose=False, **kw)
    with pytest.raises(ValueError, match="setting must be one of"):
        get_setting("li2026")


def test_cli_runs_the_second_setting(capsys, monkeypatch):
    from pathlib import Path
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    mod = "tests/xc_li_users.py"
    args = ["crosscheck", f"{mod}:forward", "--setting", "li2025", "--grad", f"{mod}:grad", "--step", f"{mod}:step",
            "--trainer", f"{mod}:make_trainer", "--cases", "small", "large_margin"]
    assert cli.main(args) == 0
    assert "PASS" in capsys.readouterr().out
    assert cli.main(args + ["--dtype", "float32"]) == 2
    assert "dtype must be one of ('float64',)" in capsys.readouterr().err
    assert cli.main(["crosscheck", f"{mod}:forward", "--cases", "gd_o1"]) == 2     # a case of the other setting
    assert "unknown case 'gd_o1'" in capsys.readouterr().err


def test_one_definition_of_the_case_groups():
    # the same group names, with the same meaning, for both settings and for crosscheck and golden
    assert set(JIANG.groups) == set(LI.groups) == set(GROUP_MEANINGS)
    for s in (JIANG, LI):
        g = s.groups
        assert g["quick"] == g["small"] + g["edge"] and g["all"] == g["quick"] + g["authors"]
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("crosscheck", "golden"):
        cases = next(a for a in sub[command]._actions if a.dest == "cases")
        assert cases.choices is None and cases.nargs == "+"                 # names and groups, both commands
        assert all(f"{k}: {v}" in cases.help for k, v in GROUP_MEANINGS.items())
