"""The command line's options: every command's parser is walked; an option name means one thing everywhere (same
choices and default), every option and command is explained, each default is shown once, and every option a
command offers is read by it."""
import argparse
import copy
import re

import pytest

from refvit import cli, options, pipelines
from refvit.config import BACKENDS
from refvit.crosscheck import cli as xc_cli
from refvit.jiang2024 import boundary

# (command, option) that mean something else there, on purpose: golden's --out is the folder it writes (a golden set
# is many files, not a figure), its --setting is left out by default because with --check the manifest says which,
# and its --cases default is the small set (crosscheck's "all" would write hundreds of MB).
OWN_MEANING = {("golden", "--out"), ("golden", "--setting"), ("golden", "--cases")}
# (command, option) whose help says what that command does with the shared option: audit has no progress bars; its
# one line per family of checks is what --no-progress silences.
OWN_HELP = {("audit", "--no-progress")}
# Option names whose choices differ by command on purpose: each family of commands has its own presets (the sweeps'
# quick|paper, the studies' quick|full).
OWN_CHOICES = {"--preset"}


def commands(parser=None, prefix=()):
    """{("coefficients", "train"): parser, ...} for every command and sub-command of ``refvit``."""
    parser = parser or cli.build_parser()
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[prefix + (name,)] = sub
                out.update(commands(sub, prefix + (name,)))
    return out


def option_actions(parser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def leaves():
    """The commands that run (those without sub-commands)."""
    cmds = commands()
    return {k: p for k, p in cmds.items() if not any(o[:len(k)] == k and len(o) > len(k) for o in cmds)}


def test_every_command_has_a_description_and_every_option_a_help_text():
    for name, parser in commands().items():
        assert parser.description and parser.description.strip(), f"refvit {' '.join(name)} has no description"
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for choice in a._choices_actions:
                    assert choice.help, f"refvit {' '.join(name)} {choice.dest} has no one-line help"
            elif not isinstance(a, argparse._HelpAction):
                assert a.help and a.help.strip(), f"refvit {' '.join(name)}: {a.dest} has no help text"


def test_an_option_name_has_the_same_choices_and_default_in_every_command():
    seen = {}
    for name, parser in commands().items():
        for a in option_actions(parser):
            if (name[0], a.option_strings[0]) in OWN_MEANING:
                continue
            for flag in a.option_strings:
                default = tuple(a.default) if isinstance(a.default, list) else a.default      # nargs="+" lists
                what = (a.choices and tuple(a.choices), default, type(a).__name__, getattr(a.type, "__name__", None))
                if flag in OWN_CHOICES:
                    what = what[1:2] if name[0] != "sweep" else ()   # sweep: default None, a grid may replace it
                if what:
                    seen.setdefault(flag, {}).setdefault(what, []).append(" ".join(name))
    differ = {flag: v for flag, v in seen.items() if len(v) > 1}
    assert not differ, f"an option differs between commands: {differ}"
    assert len(seen) >= 20                    # the walk reached the commands' options


def test_shared_options_come_from_the_table_with_its_help():
    table = argparse.ArgumentParser()
    options.add(table, *options.OPTIONS)
    reference = {a.option_strings[0]: a for a in option_actions(table)}
    used = set()
    for name, parser in commands().items():
        for a in option_actions(parser):
            ref = reference.get(a.option_strings[0])
            if ref is None or (name[0], a.option_strings[0]) in OWN_MEANING:
                continue
            used.add(ref.dest)
            same = (a.dest, a.default, a.choices, a.type, type(a)) == (ref.dest, ref.default, ref.choices, ref.type,
                                                                       type(ref))
            assert same and (a.help == ref.help or (name[0], a.option_strings[0]) in OWN_HELP), (name, a.dest)
    assert used == set(options.OPTIONS) - {"setting"} | {"setting"} & used   # every entry but the hook is used


def test_backend_offers_attention_cores_only():
    for name, parser in commands().items():
        for a in option_actions(parser):
            if "--backend" in a.option_strings:
                assert tuple(a.choices) == BACKENDS and "span" not in a.choices, name
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--backend", "span"])
    assert e.value.code == 2


@pytest.mark.parametrize("name", sorted(" ".join(k) for k in commands()))
def test_each_default_is_shown_once(name):
    parser = commands()[tuple(name.split())]
    formatter = parser._get_formatter()
    for a in option_actions(parser):
        shown = copy.copy(a)
        shown.help = formatter._get_help_string(a)          # the help as the formatter prints it
        text = formatter._expand_help(shown)
        assert len(re.findall(r"\bdefault\b", text, re.IGNORECASE)) <= 1, (name, a.dest, text)
        if a.default not in (None, False) and a.option_strings:
            assert re.search(r"\bdefault\b", text, re.IGNORECASE), (name, a.dest, text)   # and shown


def test_the_formatter_appends_a_default_only_when_the_help_lacks_one():
    p = argparse.ArgumentParser(formatter_class=options.Formatter)
    p.add_argument("--a", default=3, help="plain")
    p.add_argument("--b", default=3, help="says its own (default: three)")
    p.add_argument("--c", action="store_true", help="a switch")
    text = " ".join(p.format_help().split())
    assert "plain (default: 3)" in text and "(default: three)" in text and "(default: three) (default" not in text
    assert "a switch (default" not in text


class Spy(argparse.Namespace):
    """A parsed namespace that records which options the command reads."""

    def __getattribute__(self, key):
        if not key.startswith("_"):
            object.__getattribute__(self, "_read").add(key)
        return object.__getattribute__(self, key)


STUBBED = ("demo", "reproduce", "sweep", "heatmap", "train", "run_study", "coefficients")
ARGS = {("sweep",): ["OUT"], ("heatmap",): ["DIR"], ("train",): ["OUT"], ("study",): ["phases"], ("fit",): ["DIR"],
        ("coefficients", "weights"): ["F.npz"], ("coefficients", "draw"): ["F.npz"], ("math",): [],
        ("crosscheck",): ["m:f"]}


# audit and math print what they find; golden's two modes (--out writes, --check verifies) read different options.
@pytest.mark.parametrize("name", sorted(" ".join(k) for k in leaves() if k[0] not in
                                        {"audit", "math", "golden"}))
def test_every_option_a_command_offers_is_read(name, monkeypatch, tmp_path):
    for fn in STUBBED:
        monkeypatch.setattr(pipelines, fn, lambda *a, **k: None)
    monkeypatch.setattr(xc_cli, "crosscheck", lambda *a, **k: type("Report", (), {"status": 0})())
    monkeypatch.setattr(xc_cli, "load_callable", lambda ref: None)
    monkeypatch.setattr(boundary, "fit_sweep", lambda *a, **k: {})
    monkeypatch.setattr(boundary, "describe", lambda fit: "")
    key = tuple(name.split())
    args = [str(tmp_path / a) if a.isupper() or "." in a else a for a in ARGS.get(key, [])]
    spy = Spy(_read=set())
    cli.build_parser().parse_args([*key, *args], namespace=spy)
    spy._read.clear()
    spy.func(spy)
    parser = leaves()[key]
    offered = {a.dest for a in parser._actions if not isinstance(a, argparse._HelpAction)}
    assert offered - spy._read == set(), f"refvit {name} offers options it never reads"


def test_options_the_report_named_are_gone():
    cmds = commands()
    flags = lambda k: {f for a in option_actions(cmds[k]) for f in a.option_strings}   # noqa: E731
    assert not {"--results", "--figures"} & flags(("sweep",))
    assert "--no-draw" not in flags(("coefficients", "draw"))
    defaults = {cmds[k].get_default("backend") for k in cmds if "backend" in {a.dest for a in cmds[k]._actions}}
    assert defaults == {None}


@pytest.mark.parametrize("argv", [["crosscheck", "m:f", "--setting", "magen2025"],
                                  ["golden", "--out", "G", "--setting", "magen2025"]])
def test_the_checker_refuses_a_setting_it_has_no_cases_for(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        code = cli.main(argv)
        raise SystemExit(code)
    assert e.value.code == 2
    assert "magen2025" in capsys.readouterr().err and not (tmp_path / "G").exists()
