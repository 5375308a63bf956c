"""`export --register`, an MLflow URI as export MODEL, and serving our flavor from the registry:
pyfunc loading, a tracking server that is down (at start and while polling), a corrupt cache.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from exasol_mlflow_server import fixtures
from tests.mlflow_fixtures import TEXTS, MlflowWorld, TcpRelay
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.slow
pytest_plugins = ["tests.mlflow_fixtures"]  # mlflow_server, mlflow_world


@pytest.fixture(scope="module")
def clf_onnx(mlflow_world: MlflowWorld, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`export models:/clf/1 --quantize int8 --register clf-onnx --alias champion`, in one command."""
    out = tmp_path_factory.mktemp("export") / "clf-int8"
    proc = mlflow_world.run_cli(
        "export", "models:/clf/1", "--output", str(out), "--quantize", "int8",
        "--register", "clf-onnx", "--alias", "champion",
        "--tracking-uri", mlflow_world.url, "--experiment", "exports",
        cache=mlflow_world.fresh_cache("export"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "models:/clf-onnx/1" in proc.stdout + proc.stderr
    return "models:/clf-onnx@champion"


def test_registered_export_loads_with_pyfunc(clf_onnx, mlflow_world):
    import mlflow
    import pandas as pd
    from transformers import pipeline

    mlflow.set_tracking_uri(mlflow_world.url)
    model = mlflow.pyfunc.load_model(clf_onnx)
    assert "exasol_onnx" in model.metadata.flavors
    got = model.predict(pd.DataFrame({"text": TEXTS}))
    pipe = pipeline(
        "text-classification", model=str(fixtures.task_model_dir("text-classification"))
    )
    expected = [e["label"] for e in pipe(TEXTS)]
    labels = [g["label"] for g in got]
    assert sum(a == b for a, b in zip(labels, expected, strict=True)) >= len(TEXTS) - 1


def test_registered_run_has_params_metrics_and_tags(clf_onnx, mlflow_world):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_world.url)
    version = client.get_model_version_by_alias("clf-onnx", "champion")
    run = client.get_run(version.run_id)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["source_model"] == "models:/clf/1"
    assert params["task"] == "text-classification"
    assert params["precision"] == "int8" and params["quantization"] == "dynamic"
    assert params["optimization"] == "O2" and int(params["max_length"]) > 0
    assert params["cpu_preset"]
    assert "label_agreement" in metrics and 0.0 <= metrics["label_agreement"] <= 1.0
    assert tags["exasol_mlflow_server.version"] and tags["onnxruntime.version"]
    assert client.get_experiment(run.info.experiment_id).name == "exports"


def _ok_requests(srv: ServerProcess, seconds: float) -> list[str]:
    versions = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        resp = requests.post(srv.url + "/invocations", json={"inputs": TEXTS[:2]}, timeout=30)
        assert resp.status_code == 200, resp.text
        versions.append(resp.headers["X-Model-Version"])
        time.sleep(0.05)
    return versions


def test_tracking_server_down_while_polling_and_at_start(clf_onnx, mlflow_world):
    relay = TcpRelay(mlflow_world.url).start()
    cache = mlflow_world.fresh_cache("outage")
    srv = mlflow_world.serve(clf_onnx, "--reload-interval", "0.5", cache=cache, url=relay.url)
    try:
        assert set(_ok_requests(srv, 1.0)) == {"1"}
        relay.stop()  # the tracking server goes away
        assert set(_ok_requests(srv, 8.0)) == {"1"}
        assert "unreachable" in srv.log()
    finally:
        srv.stop()
    # still down: a cached copy of the version the alias pointed at is served, with a warning
    srv = mlflow_world.serve(clf_onnx, cache=cache, url=relay.url)
    try:
        assert set(_ok_requests(srv, 0.5)) == {"1"}
        assert "serving the cached version 1" in srv.log()
    finally:
        srv.stop()
    # down, and nothing cached: a clear error and a non-zero exit
    proc = mlflow_world.run_cli(
        "serve", clf_onnx, "--port", "0", cache=mlflow_world.fresh_cache("cold"), url=relay.url
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "cannot reach the MLflow tracking server" in output and relay.url in output
    assert "Traceback" not in output


def test_corrupt_cache_entry_is_fetched_again(clf_onnx, mlflow_world):
    cache = mlflow_world.fresh_cache("corrupt")
    srv = mlflow_world.serve("models:/clf-onnx/1", cache=cache)
    first = requests.post(srv.url + "/invocations", json={"inputs": TEXTS}, timeout=30).json()
    srv.stop()
    (entry,) = [
        p
        for p in (cache / "mlflow" / "downloads").iterdir()
        if p.is_dir() and not p.name.startswith(".")
    ]
    onnx = entry / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])  # a partial download
    srv = mlflow_world.serve("models:/clf-onnx/1", cache=cache)
    try:
        again = requests.post(srv.url + "/invocations", json={"inputs": TEXTS}, timeout=30).json()
        assert "incomplete or corrupt" in srv.log()
    finally:
        srv.stop()
    assert again == first
    # a leftover temp dir of a crashed download is ignored
    Path(cache / "mlflow" / "downloads" / f".{entry.name}.tmp-crashed").mkdir()
    srv = mlflow_world.serve("models:/clf-onnx/1", cache=cache)
    srv.stop()
    assert "incomplete or corrupt" not in srv.log()
