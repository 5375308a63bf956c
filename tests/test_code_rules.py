"""Structural rules from DEVELOPERS.md, checked so that they stay true."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO / "runtime"


def py_files(root: Path):
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_environ_is_read_only_in_settings_modules():
    offenders = []
    for root in (RUNTIME, REPO / "exporter"):
        for path in py_files(root):
            if path.name == "settings.py":
                continue
            if "os.environ" in path.read_text() or "getenv(" in path.read_text():
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders


def test_exactly_one_inference_session_run_call_site():
    calls = []
    for path in py_files(RUNTIME):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("run", "run_with_iobinding")
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "_session"
            ):
                calls.append((path.name, node.func.attr))
    assert sorted(calls) == [("session.py", "run"), ("session.py", "run_with_iobinding")], calls


def test_http_status_codes_only_in_the_error_table():
    pattern = re.compile(
        r"HTTP_\d{3}|status_code\s*==\s*\d{3}|\b(?:400|401|404|405|413|415|500|503|504)\b"
    )
    offenders = []
    for path in py_files(RUNTIME):
        if path.relative_to(RUNTIME).as_posix() == "http/errors.py":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if "HTTP_" in code and pattern.search(code):
                offenders.append(f"{path.name}:{lineno}: {line.strip()}")
    assert not offenders, offenders


def test_runtime_never_imports_the_export_stack():
    banned = ("torch", "transformers", "optimum", "exasol_mlflow_server.exporter")
    offenders = []
    for path in py_files(RUNTIME):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] in banned or n.startswith(banned[-1])
            ]
    assert not offenders, offenders


def test_modules_stay_small():
    big = [
        f"{p.relative_to(REPO)}: {len(p.read_text().splitlines())}"
        for root in (RUNTIME, REPO / "exporter", REPO / "exasol_mlflow_server", REPO / "benchmarks")
        for p in py_files(root)
        if len(p.read_text().splitlines()) > 450
    ]
    assert not big, big


# ---- import graph ----------------------------------------------------------------------------
PACKAGE_DIRS = {  # pyproject's [tool.setuptools.package-dir]
    "exasol_mlflow_server": REPO / "exasol_mlflow_server",
    "exasol_mlflow_server.exporter": REPO / "exporter",
    "exasol_mlflow_server.runtime": REPO / "runtime",
    "exasol_mlflow_server.benchmarks": REPO / "benchmarks",
}


def package_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for prefix, root in PACKAGE_DIRS.items():
        for path in py_files(root):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([prefix, *parts])
            if (
                name.startswith("exasol_mlflow_server.")
                and name.split(".")[1]
                in (
                    "exporter",
                    "runtime",
                    "benchmarks",
                )
                and root == PACKAGE_DIRS["exasol_mlflow_server"]
            ):
                continue  # not a real module (the mapping wins)
            modules[name] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every package module ``name`` imports, at module level or deferred inside a function."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module]
            targets += [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_import_graph_has_no_cycles():
    modules = package_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert "exasol_mlflow_server.runtime.resolve" in graph  # the mapping was understood
    assert "exasol_mlflow_server.runtime.cache" in graph[
        "exasol_mlflow_server.runtime.resolve"
    ] or (
        "exasol_mlflow_server.runtime.autoexport" in graph["exasol_mlflow_server.runtime.resolve"]
    )
    assert find_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_one_inference_call_site_per_backend():
    """OpenVINO, like ONNX Runtime, runs in exactly one place (runtime/openvino_session.py)."""
    calls = []
    for path in py_files(RUNTIME):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("infer", "start_async", "infer_new_request")
            ):
                calls.append((path.name, node.func.attr))
    assert calls == [("openvino_session.py", "infer")], calls
