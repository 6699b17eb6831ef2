"""What an install puts on the import path: the package ``refvit`` only. The figure scripts live in the repository's
``analysis/`` folder and are installed as ``refvit.analysis`` (setup.cfg ``package_dir``), so a user's own
``analysis/`` folder (the current directory comes first on ``sys.path``) cannot shadow them."""
import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "analysis").glob("*.py"))
# what setup.cfg reads: the package, its figure scripts, the long description and the shipped math document
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "refvit", "analysis", "docs/math.md")

# Run in a folder holding its own analysis/ package: importing it fails loudly, and every figure script must come
# from the installed refvit. Importing refvit.pipelines imports every figure script (the CLI's top layer).
PROBE = """
import sys
{setup}
import refvit, refvit.cli, refvit.pipelines
import refvit.analysis
mods = sorted(n for n in sys.modules if n.startswith("refvit.analysis."))
print(refvit.__file__, *refvit.analysis.__path__)
print(len(mods), *(sys.modules[n].__file__ for n in mods))
assert "analysis" not in sys.modules, sys.modules["analysis"]
"""


def copy_sources(dst: Path) -> Path:
    """The files a build reads, copied so that the build's own folders (build/, *.egg-info) stay out of the
    checkout."""
    for name in SOURCES:
        src = ROOT / name
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
        else:
            shutil.copy2(src, dst / name)
    return dst


def hostile_folder(path: Path) -> Path:
    (path / "analysis").mkdir(parents=True)
    (path / "analysis" / "__init__.py").write_text('raise ImportError("the folder\'s own analysis/ was imported")\n')
    return path


def probe(cwd: Path, setup: str, pythonpath: str = "") -> list[str]:
    """Run PROBE with ``cwd`` first on sys.path (``python -c``) and nothing of the checkout on it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], cwd=cwd, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def assert_scripts_from(lines: list[str], package_file: Path, scripts_dir: Path):
    """PROBE's output: refvit's file, the one folder of refvit.analysis, then each figure script's file."""
    assert Path(lines[0]).resolve() == package_file.resolve()
    assert Path(lines[1]).resolve() == scripts_dir.resolve()
    files = {Path(f).resolve() for f in lines[3:]}
    modules = {(scripts_dir / name).resolve() for name in SCRIPTS if name != "__init__.py"}
    assert int(lines[2]) == len(modules) and files == modules


def pip(*args) -> None:
    """``python -m pip ARGS`` with the build backend already here when it can build wheels (no download); else pip
    fetches it into an isolated build environment, as ``pip install -e .`` does."""
    offline = (importlib.util.find_spec("setuptools") is not None and
               (importlib.util.find_spec("wheel") is not None or
                importlib.util.find_spec("setuptools.command.bdist_wheel") is not None))
    done = subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "-q",
                           *(["--no-build-isolation"] if offline else [])], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = copy_sources(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    pip("wheel", "-w", str(out), str(src))
    (found,) = out.glob("refvit-*.whl")
    return found


def test_the_wheel_holds_the_figure_scripts_under_refvit_and_no_other_top_level_name(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        top_level = z.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode().split()
        init = z.read("refvit/analysis/__init__.py").decode()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not re.fullmatch(r"refvit-[^/]+\.(dist-info|data)", t)} == {"refvit"}, sorted(tops)
    assert not any(n.startswith("analysis/") for n in names)
    assert top_level == ["refvit"]
    assert {n.rpartition("/")[2] for n in names if n.startswith("refvit/analysis/")} == set(SCRIPTS)
    # the wheel ships analysis/__init__.py there, not refvit/analysis/__init__.py (which serves a source checkout)
    assert init == (ROOT / "analysis" / "__init__.py").read_text(encoding="utf-8")


def test_an_installed_wheel_ignores_the_current_folders_own_analysis(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:     # a pure-Python wheel installs by unpacking its package folders
        z.extractall(site, [n for n in z.namelist() if n.startswith("refvit/")])
    lines = probe(hostile_folder(tmp_path / "work"), "", pythonpath=str(site))
    assert_scripts_from(lines, site / "refvit" / "__init__.py", site / "refvit" / "analysis")


def test_an_editable_install_ignores_the_current_folders_own_analysis(tmp_path):
    """``pip install -e`` of a copy of the checkout into a site folder: its .pth and import finder map refvit to the
    copy's refvit/ and refvit.analysis to its analysis/. (The interpreter running the tests may itself hold an
    editable refvit, as in CI: its finder is taken off first, so that the copy is what gets imported.)"""
    src = copy_sources(tmp_path / "src")
    site = tmp_path / "site"
    pip("install", "--target", str(site), "-e", str(src))
    setup = (f"ours = [n for n in sys.modules if n.startswith('__editable___refvit')]\n"
             f"sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, '__module__', '') not in ours]\n"
             f"for n in ours: del sys.modules[n]\n"
             f"sys.path.insert(0, {str(site)!r})\n"          # the copy's finder module before any other of that name
             f"import site; site.addsitedir({str(site)!r})")
    lines = probe(hostile_folder(tmp_path / "work"), setup)
    assert_scripts_from(lines, src / "refvit" / "__init__.py", src / "analysis")


def test_a_source_checkout_imports_the_figure_scripts_from_analysis(tmp_path):
    """Not installed, the checkout's root on PYTHONPATH (how the tests run): refvit.analysis is the folder
    analysis/, and a folder's own analysis/ is still never imported."""
    lines = probe(hostile_folder(tmp_path / "work"), "", pythonpath=str(ROOT))
    assert_scripts_from(lines, ROOT / "refvit" / "__init__.py", ROOT / "analysis")


def python_sources():
    for d in ("refvit", "analysis", "tests", "benchmarks", "examples"):
        yield from sorted((ROOT / d).rglob("*.py"))


def code_blocks():
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", md.read_text(encoding="utf-8"), flags=re.S)):
            yield f"{md.name} block {i}", block


def top_level_analysis_imports(text: str) -> list[int]:
    """Line numbers of ``import analysis...`` / ``from analysis... import`` (absolute imports only)."""
    found = []
    for node in ast.walk(ast.parse(text)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        if any(n == "analysis" or n.startswith("analysis.") for n in names):
            found.append(node.lineno)
    return found


def test_nothing_imports_the_generic_top_level_name():
    """Code, tests and the docs' examples import refvit.analysis: the name `analysis` is not installed."""
    assert top_level_analysis_imports("import os\nfrom analysis.fig_heatmap import x\n") == [2]   # the check bites
    bad = {str(p.relative_to(ROOT)): lines for p in python_sources()
           if (lines := top_level_analysis_imports(p.read_text(encoding="utf-8")))}
    bad.update({name: lines for name, block in code_blocks()
                if (lines := top_level_analysis_imports(textwrap.dedent(block)))})
    assert not bad, bad
    commands = [m for md in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
                for m in re.findall(r"python -m analysis\.\w+", md.read_text(encoding="utf-8"))]
    assert not commands, commands
