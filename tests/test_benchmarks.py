"""The benchmark suite's --quick mode, run end to end as a subprocess (no speed assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from exasol_mlflow_server.benchmarks import rows
from exasol_mlflow_server.benchmarks.targets import describe
from exasol_mlflow_server.benchmarks.workload import Budget, ModelShape, plan_cell

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_rows_are_reproducible_and_varied():
    first, again = rows.generate_rows(300, seed=7), rows.generate_rows(300, seed=7)
    assert first == again
    assert rows.generate_rows(300, seed=8) != first
    words = sorted(len(text.split()) for _, text in first)
    assert words[0] <= 5 and words[-1] >= 120  # a few words up to a few hundred tokens
    assert words[len(words) // 2] < 40  # skewed short, like real tables
    assert {kind for kind, _ in first} == {"title", "review", "ticket", "news"}


def test_flops_formula_matches_the_reference():
    # performance reference §6: all-MiniLM-L6-v2 at S=128 is 2.87 GFLOP
    shape = ModelShape(layers=6, hidden=384, intermediate=1536)
    assert float(shape.flops(128)) / 1e9 == pytest.approx(2.87, abs=0.01)
    assert float(shape.flops(32)) / 1e9 == pytest.approx(0.69, abs=0.01)


def test_cells_get_whole_requests_or_a_reason_to_skip():
    budget = Budget(max_rows=2000, time_cap_s=8, max_cell_s=25)
    assert plan_cell(100, 4, budget, None) == (2000, "")
    assert plan_cell(1000, 16, budget, None)[0] == 16000  # one request per client at least
    rows_, why = plan_cell(1000, 16, budget, 100.0)
    assert rows_ == 0 and "skipped" in why
    assert describe({"met": False, "by": -0.25}).startswith("missed by 25%")
    assert describe({"met": True, "by": 0.1}).startswith("met")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_suite_writes_a_well_formed_report(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "exasol_mlflow_server.benchmarks",
            "--quick",
            "--skip-mlflow",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]

    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["cpu"]["cores"] >= 1
    assert results["peak"]["flops_per_s"] > 0
    cells = results["cells"]
    ours = [c for c in cells if c["system"] == "server" and c["status"] == "ok"]
    for precision in ("fp32", "int8"):
        assert any(c["precision"] == precision for c in ours), precision
    for cell in ours:
        assert cell["rows_per_s"] > 0 and cell["rows"] > 0, cell
        assert cell["errors"] == 0, cell
        assert cell["p99_ms"] >= cell["p50_ms"] > 0, cell
        assert cell["efficiency"] > 0, cell
    assert any(c["system"] == "ort-runtime" and c["status"] == "ok" for c in cells)
    assert results["cold_start_s"]["server fp32"] > 0
    assert results["quality"]["int8_vs_fp32"]["rows"] > 0
    assert len(results["targets"]) == 5
    assert results["mlflow"]["status"] == "skipped"
    assert not results["failures"], results["failures"]
    assert 0 <= results["foreign_load"]["total"]["share"] <= 1.5  # noise is measured, not judged

    report = (out / "report.md").read_text()
    for heading in (
        "## Machine",
        "## Targets",
        "## Throughput (rows/s)",
        "## All cells",
        "## Cold start",
        "## Quality",
        "## Profile",
        "## GPU",
    ):
        assert heading in report, heading
    assert "| system | batch | clients | rows |" in report
    assert "our server fp32" in report and "our server int8" in report

    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} == {"throughput.png", "latency.png"}
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000


def test_benchmarks_work_from_the_installed_wheel(tmp_path):
    """The suite ships in the wheel: installed (no checkout around it), it writes to the working
    directory and the user cache, never into site-packages, and records the package version."""
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, str(REPO), "-w", str(wheels)], check=True, capture_output=True)
    (wheel,) = wheels.glob("exasol_mlflow_server-*.whl")
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target"]
    subprocess.run([*install, str(target), str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    probe = (
        "import json, exasol_mlflow_server.benchmarks.config as c, "
        "exasol_mlflow_server.benchmarks.machine as m\n"
        "print(json.dumps([c.__file__, str(c.DEFAULT_OUT), str(c.DEFAULT_CACHE), m.git_commit()]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True, check=True
    ).stdout
    module, results, cache, commit = json.loads(out)
    assert module.startswith(str(target))  # the installed copy ran, not the checkout
    assert results == str(work / "benchmark-results")
    assert cache == str(tmp_path / "xdg" / "exasol-mlflow-server" / "bench")
    assert commit["commit"] is None and commit["version"]
    helptext = subprocess.run(
        [sys.executable, "-m", "exasol_mlflow_server.benchmarks", "--help"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--quick" in helptext
