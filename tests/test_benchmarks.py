"""The benchmark suite's --quick mode, run end to end as a subprocess (no speed assertions)."""

from __future__ import annotations

import json
import os
import shutil
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
    assert describe({"met": None, "by": 1.0, "not_applicable": "no bf16"}).startswith("not appl")


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
    variants = {v["name"]: v for v in results["variants"]}
    assert {"ort-fp32", "ort-int8"} <= set(variants)
    for v in variants.values():  # every variant served, with its backend named
        assert any(
            c["precision"] == v["precision"] and c["backend"] == v["backend"] for c in ours
        ), v
    assert any(v["backend"] == "openvino" for v in variants.values())  # openvino: [test] extra
    for cell in ours:
        assert cell["rows_per_s"] > 0 and cell["rows"] > 0, cell
        if cell.get("scenario") != "overload":
            assert cell["errors"] == 0, cell
        assert cell["p99_ms"] >= cell["p50_ms"] > 0, cell
        if cell.get("scenario") != "generation":  # FLOPs are not credited for generation
            assert cell["efficiency"] > 0, cell
        assert 0 <= cell["client_cpu_share"] < 1.5 and cell["server_cpu_ms_per_row"] > 0, cell
    batch1 = [c for c in ours if c["batch"] == 1]
    assert batch1 and {c["client"] for c in batch1} == {"wrk" if shutil.which("wrk") else "python"}
    assert any(c["system"] == "runtime" and c["status"] == "ok" for c in cells)
    assert results["cold_start_s"]["server ort-fp32"] > 0
    assert results["quality"]["ort-int8_vs_ort-fp32"]["rows"] > 0
    names = [t["name"] for t in results["targets"]]
    assert len(names) == 6 + len(variants) and any("overload" in n for n in names), names
    # the request mixes ran: three repeated columns x cache off/on, capacity + overload
    repeats = {(c["column"], c["cache_mb"]) for c in ours if c.get("scenario") == "repeats"}
    assert len(repeats) == 6, repeats
    overload = results["overload"]
    assert overload["capacity_rows_per_s"] > 0 and overload["goodput_rows_per_s"] > 0
    assert overload["rejected"] > 0  # 24 clients against a queue of 6 requests
    assert results["mlflow"]["status"] == "skipped"
    assert results["infinity"]["status"] == "skipped"
    generation = [c for c in ours if c.get("scenario") == "generation"]
    assert generation and all(c["new_tokens_per_s"] > 0 for c in generation)
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
        "## bf16 on this CPU",
        "## Repeated columns",
        "## Overload",
        "## Embeddings peer: infinity-emb",
        "## Generation",
    ):
        assert heading in report, heading
    assert "| system | cell | batch | clients | rows |" in report
    assert "our server ORT fp32" in report and "our server ORT int8" in report
    assert "our server OpenVINO" in report

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
