"""Serving MLflow model URIs from a real tracking server (models:/, runs:/), parity with PyTorch.

Everything is real: ``mlflow server`` on loopback, models logged with MLflow's transformers
flavor, our exporter in a child process, our server over HTTP. Exports go to the session cache
and are reused by the other MLflow test modules.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from exasol_mlflow_server import fixtures
from tests.mlflow_fixtures import TEXTS
from tests.serverproc import ServerProcess, free_port

pytestmark = pytest.mark.slow
pytest_plugins = ["tests.mlflow_fixtures"]  # mlflow_server, mlflow_world, clf_race


def predict(srv: ServerProcess, texts: list[str]) -> tuple[list, requests.Response]:
    resp = requests.post(srv.url + "/invocations", json={"inputs": texts}, timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()["predictions"], resp


def test_two_servers_on_an_empty_cache_export_once(clf_race, mlflow_world):
    servers, errors = clf_race
    assert not errors, errors
    logs = "".join(s.log() for s in servers)
    assert logs.count(" into the cache ") == 1, logs[-3000:]  # one export, the other waited
    # other tests share this cache (e.g. version 2 of the model): count this model's entries only
    exports = list((mlflow_world.cache / "mlflow" / "exports").glob("clf-v1-none-*"))
    assert len([p for p in exports if p.is_dir()]) == 1, exports
    downloads = list((mlflow_world.cache / "mlflow" / "downloads").glob("clf-v1-*"))
    assert len([d for d in downloads if d.is_dir()]) == 1


def test_classifier_by_models_uri_matches_pytorch(clf_race):
    from transformers import pipeline

    servers, errors = clf_race
    assert not errors
    pipe = pipeline(
        "text-classification", model=str(fixtures.task_model_dir("text-classification"))
    )
    expected = pipe(TEXTS)
    got, resp = predict(servers[0], TEXTS)
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    np.testing.assert_allclose([g["score"] for g in got], [e["score"] for e in expected], atol=1e-4)
    assert resp.headers["X-Model-Version"] == "1"


def test_metadata_and_metrics_name_the_version(clf_race):
    servers, _ = clf_race
    meta = requests.get(servers[0].url + "/metadata", timeout=10).json()
    assert meta["name"] == "clf" and meta["version"] == "1" and meta["model_version"] == "1"
    assert meta["model_uri"] == "models:/clf/1"
    metrics = requests.get(servers[1].url + "/metrics", timeout=10).text
    info = re.search(r"^ems_model_info\{(.*)\} 1", metrics, re.M)  # labels come sorted
    assert info and 'name="clf"' in info[1] and 'version="1"' in info[1], metrics
    assert 'alias=""' in info[1], metrics


def test_embeddings_by_runs_uri_match_pytorch(mlflow_world):
    srv = mlflow_world.serve(f"runs:/{mlflow_world.minilm_run}/model")
    try:
        got, resp = predict(srv, TEXTS)
    finally:
        srv.stop()
    assert resp.headers["X-Model-Version"] == mlflow_world.minilm_run
    ref = minilm_reference(TEXTS)  # mean pooling, as the export of a plain HF model records
    emb = np.asarray(got, dtype=np.float64)
    assert emb.shape == ref.shape == (len(TEXTS), 384)
    assert cosines(emb, ref).min() >= 0.9999


def minilm_reference(texts: list[str]) -> np.ndarray:
    """Mean-pooled all-MiniLM-L6-v2 token states, computed in-process with PyTorch."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(fixtures.minilm_dir())
    model = AutoModel.from_pretrained(fixtures.minilm_dir()).eval()
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_sentence_transformers_flavor(mlflow_world, tmp_path):
    """MLflow's sentence_transformers layout (``model.sentence_transformer/`` + MLmodel), logged
    as run artifacts (sentence-transformers itself is not needed): pooled and normalised."""
    import mlflow
    import yaml

    model = tmp_path / "st"
    shutil.copytree(fixtures.minilm_dir(), model / "model.sentence_transformer")
    mlmodel = {
        "flavors": {
            "python_function": {
                "loader_module": "mlflow.sentence_transformers",
                "data": "model.sentence_transformer",
                "python_version": "3.11",
            },
            "sentence_transformers": {"sentence_transformers_version": "3.0.1", "code": None},
        },
        "mlflow_version": mlflow.__version__,
    }
    (model / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    mlflow.set_tracking_uri(mlflow_world.url)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(model), "st")
    srv = mlflow_world.serve(f"runs:/{run.info.run_id}/st")
    try:
        got, _ = predict(srv, TEXTS)
    finally:
        srv.stop()
    emb = np.asarray(got, dtype=np.float64)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # 2_Normalize
    assert cosines(emb, minilm_reference(TEXTS)).min() >= 0.9999


def test_mlflow_models_serve_spelling(clf_race, mlflow_world):
    """`-m/--model-uri -p -t -w --host` and MLFLOW_* variables, as `mlflow models serve` takes."""
    srv = ServerProcess("unused", env={**mlflow_world.env(), "MLFLOW_PORT": "1"})
    srv.cmd = [
        sys.executable, "-m", "exasol_mlflow_server", "serve", "-m", "models:/clf@champion",
        "-p", str(srv.port), "--host", "127.0.0.1", "-t", "30", "-w", "1",
        "--threads", "1", "--quantize", "none",
    ]  # fmt: skip
    with srv:
        got, resp = predict(srv, TEXTS[:2])
        assert resp.headers["X-Model-Version"] == "1"
    port = free_port()
    env = {
        "MLFLOW_PORT": str(port),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_MODELS_WORKERS": "1",
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": "30",
        "EMS_THREADS": "1",
        "EMS_QUANTIZE": "none",
    }
    srv = ServerProcess("unused", env={**mlflow_world.env(), **env})
    srv.port, srv.url = port, f"http://127.0.0.1:{port}"
    srv.cmd = [
        sys.executable,
        "-m",
        "exasol_mlflow_server",
        "serve",
        "--model-uri",
        "models:/clf/1",
    ]
    with srv:
        got2, _ = predict(srv, TEXTS[:2])
    assert got2 == got


def test_unsupported_flavor_is_a_clear_error(mlflow_world):
    import warnings

    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    mlflow.set_tracking_uri(mlflow_world.url)
    with mlflow.start_run(), warnings.catch_warnings():  # MLflow: "add type hints to predict"
        warnings.simplefilter("ignore")
        mlflow.pyfunc.log_model(
            name="model", python_model=Echo(), registered_model_name="echo", pip_requirements=[]
        )
    cache = mlflow_world.fresh_cache("echo")
    proc = mlflow_world.run_cli("serve", "models:/echo/1", "--port", "0", cache=cache, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "python_function" in output and "transformers" in output and "exasol_onnx" in output
    assert "Traceback" not in output
    assert not list((cache / "mlflow" / "downloads").glob("echo*")), "nothing cached"


def test_unknown_model_and_alias_are_clear_errors(mlflow_world):
    cache = mlflow_world.fresh_cache("unknown")
    for uri, words in (
        ("models:/nope/1", "nope"),
        ("models:/clf@no-such-alias", "no-such-alias"),
        ("runs:/0123456789abcdef/model", "0123456789abcdef"),
    ):
        proc = mlflow_world.run_cli("serve", uri, "--port", "0", cache=cache, timeout=120)
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0 and words in output, output
        assert "Traceback" not in output, output


def test_file_uri_of_an_exported_model_is_served_in_place(clf_race, mlflow_world):
    exported = next(
        p
        for p in (mlflow_world.cache / "mlflow" / "exports").iterdir()
        if p.name.startswith("clf-v1-none-")
    )
    srv = mlflow_world.serve(Path(exported).as_uri(), cache=mlflow_world.fresh_cache("file"))
    try:
        got, _ = predict(srv, TEXTS[:2])
        assert [g["label"] for g in got] == [
            g["label"] for g in predict(clf_race[0][0], TEXTS[:2])[0]
        ]
    finally:
        srv.stop()


def test_translation_pipeline_by_alias_is_exported_and_served(mlflow_world):
    """`serve models:/translator@champion` of a transformers-flavor translation pipeline: fetched,
    exported to ONNX on first use like the other tasks, and answering what the pipeline answers."""
    from exasol_mlflow_server.benchmarks.registry import log_transformers_model
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

    src = fixtures.generative_model_dir("t5")
    log_transformers_model(mlflow_world.url, src, "translation_en_to_de", "translator", "champion")
    texts = ["Hello world", "The meeting was moved to Thursday."]
    params = {"max_new_tokens": 10, "num_beams": 2}
    reference = pipeline(
        "translation_en_to_de",
        model=AutoModelForSeq2SeqLM.from_pretrained(src),
        tokenizer=AutoTokenizer.from_pretrained(src),
    )
    expected = [r["translation_text"] for r in reference(texts, **params)]
    assert all(expected) and expected[0] != expected[1]  # real, distinct translations
    srv = mlflow_world.serve("models:/translator@champion")
    try:
        resp = requests.post(
            srv.url + "/invocations", json={"inputs": texts, "params": params}, timeout=120
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["predictions"] == expected
        meta = requests.get(srv.url + "/metadata", timeout=10).json()
        assert meta["task"] == "translation" and resp.headers["X-Model-Version"] == "1"
    finally:
        srv.stop()
