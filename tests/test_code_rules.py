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
