"""The README's first screen: exactly two set-up commands, and CI runs the second one verbatim."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_screen_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = text.split("\n---\n", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", head, flags=re.S)


def test_two_commands_and_ci_runs_the_test_command():
    cmds = first_screen_commands()
    assert len(cmds) == 2, cmds
    assert "refvit reproduce --preset quick" in cmds[0]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f"TEST_COMMAND='{cmds[1]}'" in ci
    assert len((ROOT / "README.md").read_text(encoding="utf-8").split("\n---\n", 1)[0].splitlines()) < 40
