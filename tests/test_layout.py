"""The shape of the code a newcomer reads (STYLE.md, issue #14), checked on every run:
modules readable in one sitting, functions short, no import circles, no sys.path edits, the core
never imports streamlit."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for d in ("arbg_core", "app_lib", "pages", "scripts", "tests")
                 for p in (ROOT / d).rglob("*.py")) + [ROOT / "app.py"]
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60
# argparse tables: a flag per line is long by nature, and says nothing else
ARGPARSE_TABLES = {("arbg_core/cli.py", "build_parser"), ("arbg_core/cli.py", "_add_train_parser"),
                   ("arbg_core/ship.py", "add_parser")}


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_module_and_function_sizes(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{_rel(path)} has {lines} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(_tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
            and (_rel(path), node.name) not in ARGPARSE_TABLES]
    assert not long, f"{_rel(path)}: {', '.join(long)}"


def test_no_sys_path_edits_outside_test_conftests():
    allowed = {"tests/conftest.py", "tests/app/conftest.py"}
    offenders = [_rel(p) for p in SOURCES if _rel(p) not in allowed and "sys.path" in p.read_text()
                 and p != Path(__file__)]
    assert not offenders, offenders


def _core_imports(path: Path) -> set[str]:
    """arbg_core modules that `path` (a module of arbg_core) imports, lazily or not."""
    package = ["arbg_core"] + list(path.relative_to(ROOT / "arbg_core").parent.parts)
    found = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("arbg_core.")}
        elif isinstance(node, ast.ImportFrom):
            base = (package[:len(package) - node.level + 1] if node.level else [])
            module = ".".join(base + ([node.module] if node.module else []))
            if not module.startswith("arbg_core"):
                continue
            for alias in node.names:  # `from . import x`: x may itself be a module
                sub = f"{module}.{alias.name}"
                found.add(sub if _module_file(sub) else module)
    return {m for m in found if _module_file(m) and m != "arbg_core"}


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    for candidate in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def test_no_import_circles_in_the_package():
    graph = {}
    for path in (ROOT / "arbg_core").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        graph[name] = _core_imports(path) - {name}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


def test_the_core_never_imports_streamlit():
    offenders = []
    for path in (ROOT / "arbg_core").rglob("*.py"):
        for node in ast.walk(_tree(path)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [_rel(path) for n in names if n.split(".")[0] == "streamlit"]
    assert not offenders, offenders
