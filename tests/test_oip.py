"""Open Inference Protocol v2 with a real client: ``tritonclient[http]`` (``binary_data=False``)
against one real server process that serves every task's model at once (``--model NAME=DIR``).

Every response is checked against the spec (names, datatypes, shapes, flat data length = the
product of the shape) and against the same model's answer over MLflow's ``/invocations``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import requests
from exasol_mlflow_server.runtime import oip
from exasol_mlflow_server.runtime.errors import BadRequest
from exasol_mlflow_server.runtime.tasks import TASK_NAMES, task_spec

from tests.serverproc import ServerProcess

tritonclient_http = pytest.importorskip("tritonclient.http")

NAMES = {
    "feature-extraction": "embed",
    "text-classification": "sentiment",
    "token-classification": "ner",
    "question-answering": "qa",
    "zero-shot-classification": "zeroshot",
    "fill-mask": "fillmask",
    "text2text-generation": "t2t",
    "translation": "translate",
    "summarization": "summarize",
    "text-generation": "generate",
}
INPUTS = {  # per task: input tensors (name -> one value per row) and the MLflow body's columns
    "feature-extraction": {"text": ["Exasol runs analytics in memory.", "Hello world"]},
    "text-classification": {"text": ["I love it", "Terrible support."]},
    "token-classification": {"text": ["John lives in Berlin.", "Exasol is in Nuremberg."]},
    "question-answering": {
        "question": ["Where does John live?", "Who lives in Berlin?"],
        "context": ["John lives in Berlin.", "John lives in Berlin."],
    },
    "zero-shot-classification": {
        "text": ["I love this phone", "The train was late"],
        "candidate_labels": ["tech,travel", '["tech", "travel"]'],
    },
    "fill-mask": {"text": ["Paris is the [MASK] of France.", "Hello [MASK]."]},
    "text2text-generation": {"text": ["question: what is Exasol?", "hello world"]},
    "translation": {"text": ["The house is wonderful.", "Good morning"]},
    "summarization": {"text": ["Exasol is an analytics database that runs in memory.", "Hi"]},
    "text-generation": {"text": ["Once upon a time", "Exasol is"]},
}
PARAMS = {"max_new_tokens": 6, "do_sample": False}  # generative: short, greedy, deterministic
NUMPY = {"BYTES": np.object_, "FP32": np.float32, "INT64": np.int64}


@pytest.fixture(scope="module")
def server(export_dir):
    first, *others = [f"{NAMES[task]}={export_dir(task, 'none')}" for task in TASK_NAMES]
    more = [arg for spec in others for arg in ("--model", spec)]
    # MODEL, then --model flags; ONNX Runtime (auto picks OpenVINO bf16 on some CPUs: slower to
    # compile, and not what this test is about)
    srv = ServerProcess(first, *more, "--threads", "1", "--backend", "onnxruntime").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return tritonclient_http.InferenceServerClient(server.url.removeprefix("http://"))


def tensor(name: str, values: list, shape: list[int] | None = None):
    shape = shape or [len(values)]
    t = tritonclient_http.InferInput(name, shape, "BYTES")
    t.set_data_from_numpy(np.array(values, dtype=object).reshape(shape), binary_data=False)
    return t


def check_against_spec(body: dict, outputs: list[dict], rows: int) -> None:
    """An OIP inference response: names, datatypes, shapes with N rows, flat data = prod(shape)."""
    assert set(body) <= {"model_name", "model_version", "id", "parameters", "outputs"}
    declared = {o["name"]: o for o in outputs}
    assert [o["name"] for o in body["outputs"]] == list(declared)
    for out in body["outputs"]:
        meta = declared[out["name"]]
        assert out["datatype"] == meta["datatype"]
        assert out["shape"][0] == rows and len(out["shape"]) >= len(meta["shape"]) - 1
        assert all(isinstance(d, int) and d >= 0 for d in out["shape"])
        assert len(out["data"]) == math.prod(out["shape"])
        kind = {"BYTES": str, "FP32": float, "INT64": int}[out["datatype"]]
        assert all(isinstance(x, kind) for x in out["data"]), out["name"]


def test_server_health_and_metadata(client, server):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "exasol-mlflow-server" and "extensions" in meta
    for path in ("/v2/health/live", "/v2/health/ready"):
        key = path.rsplit("/", 1)[1]
        assert requests.get(server.url + path, timeout=5).json() == {key: True}
    listed = requests.get(server.url + "/metadata", timeout=5).json()["models"]
    assert [m["model"] for m in listed] == [NAMES[t] for t in TASK_NAMES]
    log = server.log()  # the startup block lists every model
    assert all(f"model      {NAMES[t]}" in log for t in TASK_NAMES), log


@pytest.mark.parametrize("task", TASK_NAMES)
def test_model_metadata_derives_from_the_task_descriptor(client, task):
    spec = task_spec(task)
    name = NAMES[task]
    assert client.is_model_ready(name)
    meta = client.get_model_metadata(name)
    assert meta["name"] == name and meta["platform"] == "exasol-onnx"
    assert [i["name"] for i in meta["inputs"]] == [c.name for c in spec.columns]
    assert all(i["datatype"] == "BYTES" and i["shape"] == [-1] for i in meta["inputs"])
    assert [o["name"] for o in meta["outputs"]] == [f.name for f in spec.outputs]
    for out in meta["outputs"]:
        assert out["datatype"] in ("BYTES", "FP32", "INT64") and out["shape"][0] == -1
    assert meta["parameters"]["task"] == task


@pytest.mark.parametrize("task", TASK_NAMES)
def test_infer_every_task_with_tritonclient(client, server, task):
    name, values = NAMES[task], INPUTS[task]
    rows = len(next(iter(values.values())))
    meta = client.get_model_metadata(name)
    requested = [
        tritonclient_http.InferRequestedOutput(o["name"], binary_data=False)
        for o in meta["outputs"]
    ]
    params = PARAMS if task_spec(task).kind == "generative" else None
    result = client.infer(
        name,
        [tensor(k, v) for k, v in values.items()],
        outputs=requested,
        request_id="r-1",
        parameters=params,
    )
    body = result.get_response()
    assert body["model_name"] == name and body["id"] == "r-1"
    check_against_spec(body, meta["outputs"], rows)
    # the same model over MLflow's protocol answers the same
    split = {"columns": list(values), "data": [list(r) for r in zip(*values.values(), strict=True)]}
    mlflow = requests.post(
        f"{server.url}/models/{name}/invocations",
        json={"dataframe_split": split, "params": params or {}},
        timeout=60,
    ).json()["predictions"]
    first = meta["outputs"][0]["name"]
    got = result.as_numpy(first)
    if task == "feature-extraction":
        assert got.shape == (rows, 384) and got.dtype == np.float32
        np.testing.assert_allclose(got, np.array(mlflow), atol=1e-5)
    elif task in ("token-classification", "fill-mask"):
        assert [json.loads(x) for x in got] == mlflow  # the same computation, the same JSON
    elif task == "zero-shot-classification":
        assert got.tolist() == [p["sequence"] for p in mlflow]
        assert result.as_numpy("labels").tolist() == [p["labels"] for p in mlflow]
        np.testing.assert_allclose(
            result.as_numpy("scores"), [p["scores"] for p in mlflow], atol=1e-6
        )
    elif task_spec(task).kind == "generative":
        assert got.dtype == object and got.tolist() == mlflow
    else:
        assert got.tolist() == [p[first] for p in mlflow]
        np.testing.assert_allclose(
            result.as_numpy("score"), [p["score"] for p in mlflow], atol=1e-6
        )


def test_request_parameters_are_the_task_params(client):
    texts = ["I love it", "meh", "Terrible support."]
    result = client.infer(
        NAMES["text-classification"], [tensor("text", texts)], parameters={"top_k": 2}
    )
    assert result.as_numpy("label").shape == (3, 2) and result.as_numpy("score").shape == (3, 2)
    labels = [f"label{i}" for i in range(3)]
    result = client.infer(
        NAMES["zero-shot-classification"],
        [tensor("text", texts)],
        parameters={"candidate_labels": ",".join(labels), "multi_label": True},
    )
    assert result.as_numpy("labels").shape == (3, 3)
    scores = result.as_numpy("scores")
    assert scores.shape == (3, 3) and not np.allclose(scores.sum(axis=1), 1.0)  # multi-label
    per_row = [["a", "b"], ["c", "d"], ["e", "f"]]  # a [N, K] tensor: K labels per row
    result = client.infer(
        NAMES["zero-shot-classification"],
        [tensor("text", texts), tensor("candidate_labels", per_row, [3, 2])],
    )
    assert [sorted(r) for r in result.as_numpy("labels").tolist()] == per_row


def test_errors_are_oip_bodies(server):
    url = server.url + "/v2/models"
    good = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}
    cases = [
        ("/nope/infer", good, 404),
        ("/sentiment/versions/7/infer", good, 404),
        ("/sentiment/infer", {"inputs": []}, 400),
        ("/sentiment/infer", {"inputs": [{**good["inputs"][0], "shape": [2]}]}, 400),
        ("/sentiment/infer", {"inputs": [{**good["inputs"][0], "datatype": "FP32"}]}, 400),
        ("/qa/infer", good, 400),  # question-answering needs question and context
        ("/sentiment/infer", {**good, "outputs": [{"name": "nope"}]}, 400),
        ("/zeroshot/infer", good, 400),  # no candidate labels
    ]
    for path, body, status in cases:
        resp = requests.post(url + path, json=body, timeout=30)
        assert resp.status_code == status, (path, resp.text)
        assert set(resp.json()) == {"error"} and resp.json()["error"], path
    ragged = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]},
            {
                "name": "candidate_labels",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["a,b", "a,b,c"],
            },
        ]
    }
    resp = requests.post(url + "/zeroshot/infer", json=ragged, timeout=30)
    assert resp.status_code == 400 and "rectangular" in resp.json()["error"]
    assert requests.get(url + "/nope", timeout=5).status_code == 404


# ---- the codec alone ------------------------------------------------------------------------
def test_codec_decodes_inputs_and_params():
    spec = task_spec("zero-shot-classification")
    body = {
        "id": "x",
        "parameters": {"multi_label": True},
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]},
            {
                "name": "candidate_labels",
                "datatype": "BYTES",
                "shape": [2, 2],
                "data": ["p", "q", "r", "s"],
            },
        ],
        "outputs": [{"name": "labels"}],
    }
    request = oip.decode_request(json.dumps(body).encode(), spec)
    assert request.payload.columns == {
        "text": ["a", "b"],
        "candidate_labels": [["p", "q"], ["r", "s"]],
    }
    assert request.payload.params == {"multi_label": True} and request.outputs == ["labels"]
    assert request.id == "x" and request.payload.n_rows == 2
    for bad in (b"[]", b'{"inputs": [{"name": "text"}]}', b'{"inputs": "x"}', b"\xff"):
        with pytest.raises(BadRequest):
            oip.decode_request(bad, spec)


def test_codec_output_metadata_for_every_task():
    shapes = {
        task: {o.name: (o.datatype, o.shape) for o in oip.outputs_of(task_spec(task))}
        for task in TASK_NAMES
    }
    assert shapes["feature-extraction"] == {"embedding": ("FP32", (-1, -1))}
    assert shapes["text-classification"] == {"label": ("BYTES", (-1,)), "score": ("FP32", (-1,))}
    assert shapes["token-classification"] == {"entities": ("BYTES", (-1,))}
    assert shapes["question-answering"]["start"] == ("INT64", (-1,))
    assert shapes["zero-shot-classification"]["scores"] == ("FP32", (-1, -1))
    assert shapes["fill-mask"] == {"predictions": ("BYTES", (-1,))}
    label_only = oip.outputs_of(task_spec("text-classification"), label_only=True)
    assert [o.name for o in label_only] == ["label"]
