"""The package's shape: imports point down only (no cycles, counting imports inside functions), and only the top
layer — the command line and the pipelines it runs, which nothing else imports — may import the figure scripts
(the folder ``analysis/``, the package ``refvit.analysis``)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = {"refvit.cli", "refvit.pipelines"}          # the only library modules allowed to import refvit.analysis
ANALYSIS = "refvit.analysis"                      # the package name of the folder analysis/ (setup.cfg package_dir)
MAX_LINES = 400                                   # no module of refvit/ holds several jobs


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "analysis":
        parts = ANALYSIS.split(".") + parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict:
    """{module name: path} for refvit/ and analysis/ (refvit/analysis/ only points a source checkout at analysis/)."""
    found = [p for d in ("refvit", "analysis") for p in sorted((ROOT / d).rglob("*.py"))]
    return {module_name(p): p for p in found if not p.is_relative_to(ROOT / "refvit" / "analysis")}


def is_analysis(name: str) -> bool:
    return name == ANALYSIS or name.startswith(ANALYSIS + ".")


def imports(path: Path, name: str, known: set) -> set:
    """Every project module ``path`` imports, at any depth of the file (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:          # `from refvit.x import name` → refvit.x
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict:
    mods = modules()
    known = set(mods)
    # a package's __init__ re-exports its submodules; importing a submodule does not import its siblings
    return {n: {t for t in imports(p, n, known) if not n.startswith(t + ".")} for n, p in mods.items()}


def find_cycle(g: dict):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(g):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a planted back edge (an upward import) is reported as a cycle."""
    g = graph()
    g["refvit.config"] = g["refvit.config"] | {"refvit.trainer"}
    assert find_cycle(g) is not None


def test_only_the_top_layer_imports_analysis_and_nothing_imports_it():
    g = graph()
    lib = {n for n in g if not is_analysis(n)}
    assert {"refvit.analysis.summaries", "refvit.pipelines"} <= set(g)   # both trees were read
    uses_analysis = {n for n in lib if any(is_analysis(t) for t in g[n])}
    assert uses_analysis <= TOP, sorted(uses_analysis - TOP)
    importers_of_top = {n for n in g for t in g[n] if t in TOP and n not in TOP}
    assert not importers_of_top, sorted(importers_of_top)


def test_analysis_scripts_read_results_but_never_run_experiments():
    """Figure scripts import the library's readers (io, results, config, fit, studies' names), never a trainer."""
    g = graph()
    runners = {"refvit.trainer", "refvit.jiang2024.train", "refvit.jiang2024.sweep", "refvit.jiang2024.dynamics",
               "refvit.jiang2024.experiment", "refvit.pipelines"}
    for n, targets in g.items():
        if is_analysis(n):
            assert not targets & runners, (n, sorted(targets & runners))


def test_no_module_holds_several_jobs():
    long = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in modules().items()
            if not is_analysis(n)}
    assert max(long.values()) <= MAX_LINES, {n: k for n, k in long.items() if k > MAX_LINES}
