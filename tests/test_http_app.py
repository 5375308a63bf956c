"""The fast layer: ``falcon.testing`` against ``create_app`` with fake pipelines (no model weights).

Every row of the error table on both protocols, auth and the open paths, unknown routes and
methods, model routing and headers, readiness and draining, and the metrics text -- in seconds.
The real-server tests (test_server.py, test_fleet.py, test_oip.py) stay.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import falcon.testing
import pytest
from exasol_mlflow_server.runtime import errors
from exasol_mlflow_server.runtime.http.app import OPEN_PATHS, create_app
from exasol_mlflow_server.runtime.http.errors import ERROR_TABLE
from exasol_mlflow_server.runtime.metrics import Metrics
from exasol_mlflow_server.runtime.protocol import decode, encode_predictions
from exasol_mlflow_server.runtime.settings import Settings
from exasol_mlflow_server.runtime.state import Models, ModelState
from exasol_mlflow_server.runtime.tasks import task_spec

from tests.conftest import metric_sum

TOKEN = "s3cret-token"
CLASSIFY = task_spec("text-classification")


class FakePipeline:
    """What the resources use of a Pipeline; answers one label per row, or raises ``error``."""

    def __init__(self, error: BaseException | None = None, label: str = "POSITIVE") -> None:
        self.error, self.label = error, label
        self.task = SimpleNamespace(
            spec=CLASSIFY,
            name=CLASSIFY.name,
            columns=CLASSIFY.columns,
            params_spec=CLASSIFY.params,
            options=SimpleNamespace(label_only=False),
        )
        self.model = SimpleNamespace(
            manifest=SimpleNamespace(quantization=None, optimization="O2"),
            describe=lambda: {"task": CLASSIFY.name, "precision": "fp32"},
        )
        self.executor = SimpleNamespace(queued_rows=0)
        self.calls = 0

    def predict_payload(
        self, payload: Any, deadline: float | None = None, ticket: Any = None
    ) -> tuple[Any, int]:
        if ticket is not None:  # the admission (runtime/admission.py), as the real pipeline
            ticket.settle(payload.n_rows)
        self.calls += 1
        if self.error is not None:
            raise self.error
        return [{"label": self.label, "score": 0.75}] * payload.n_rows, payload.n_rows

    def invoke(
        self, body: bytes, content_type: str | None, timeout: float | None = None, ticket=None
    ):
        predictions, rows = self.predict_payload(decode(body, content_type), None, ticket)
        return encode_predictions(predictions), rows

    def close(self) -> None:
        pass


def make_client(
    *pipelines: FakePipeline | None, token: str | None = None, versions: tuple = ()
) -> tuple[falcon.testing.TestClient, Models, Metrics]:
    """A client for models ``m0, m1, ...`` (None: still loading)."""
    states = []
    for i, pipeline in enumerate(pipelines or (FakePipeline(),)):
        state = ModelState(f"m{i}")
        if pipeline is not None:
            state.swap(pipeline, {"task": CLASSIFY.name}, versions[i] if versions else None)
        states.append(state)
    models, metrics = Models(states), Metrics()
    app = create_app(Settings(token=token, access_log=False), models, metrics)
    return falcon.testing.TestClient(app), models, metrics


MLFLOW_BODY = {"inputs": ["a", "b"]}
OIP_BODY = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]}


def status_of(cls: type) -> int:
    return int(next(ERROR_TABLE[c] for c in cls.__mro__ if c in ERROR_TABLE)[:3])


def instance(cls: type) -> errors.ServingError:
    return (
        cls("what went wrong", retry_after=7)
        if cls is errors.Overloaded
        else cls("what went wrong")
    )


# ---- the error table, on both protocols -------------------------------------------------------
SERVING_ERRORS = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.ServingError) and cls is not errors.ServingError
]


def test_every_error_type_has_a_row_in_the_table():
    assert set(SERVING_ERRORS) - set(ERROR_TABLE) <= {errors.ShuttingDown}  # a NotReady
    assert status_of(errors.ShuttingDown) == 503


@pytest.mark.parametrize("cls", SERVING_ERRORS, ids=lambda c: c.__name__)
def test_each_error_type_gets_its_status_and_the_protocols_body(cls):
    client, _, _ = make_client(FakePipeline(error=instance(cls)))
    mlflow = client.simulate_post("/invocations", json=MLFLOW_BODY)
    oip = client.simulate_post("/v2/models/m0/infer", json=OIP_BODY)
    for resp in (mlflow, oip):
        assert resp.status_code == status_of(cls), resp.text
        if cls is errors.Overloaded:
            assert resp.headers["Retry-After"] == "7"
        elif issubclass(cls, errors.NotReady):
            assert resp.headers["Retry-After"] == "1"
        if cls is errors.Unauthenticated:
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert mlflow.json == {"error_code": cls.error_code, "message": "what went wrong"}
    assert oip.json == {"error": "what went wrong"}


def test_an_unexpected_exception_is_a_500_in_both_shapes():
    client, _, _ = make_client(FakePipeline(error=ZeroDivisionError("boom")))
    mlflow = client.simulate_post("/invocations", json=MLFLOW_BODY)
    oip = client.simulate_post("/v2/models/m0/infer", json=OIP_BODY)
    assert mlflow.status_code == oip.status_code == 500
    assert (
        mlflow.json["error_code"] == "INTERNAL_ERROR"
        and "ZeroDivisionError" in mlflow.json["message"]
    )
    assert set(oip.json) == {"error"} and "boom" not in oip.json["error"]


def test_bad_input_through_the_real_codecs_is_400():
    client, _, _ = make_client()
    post = client.simulate_post
    assert post("/invocations", body=b"{oops", content_type="application/json").status_code == 400
    assert (
        post("/invocations", body=b'{"inputs": ["a"]}', content_type="text/plain").status_code
        == 415
    )
    bad = {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    resp = client.simulate_post("/v2/models/m0/infer", json=bad)
    assert resp.status_code == 400 and "BYTES" in resp.json["error"]
    resp = client.simulate_post("/v2/models/m0/infer", body=b"{oops")
    assert resp.status_code == 400 and set(resp.json) == {"error"}


def test_body_over_the_limit_is_413_on_both_protocols():
    models = Models([ModelState("m0")])
    models.get("m0").swap(FakePipeline(), {})
    app = create_app(Settings(max_body_bytes=100, access_log=False), models, Metrics())
    small = falcon.testing.TestClient(app)
    big = {"inputs": ["x" * 200]}
    assert small.simulate_post("/invocations", json=big).status_code == 413
    resp = small.simulate_post("/v2/models/m0/infer", json={**OIP_BODY, "pad": "x" * 200})
    assert resp.status_code == 413 and set(resp.json) == {"error"}


# ---- auth and open paths ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/invocations"),
        ("POST", "/models/m0/invocations"),
        ("POST", "/v2/models/m0/infer"),
        ("GET", "/v2/models/m0"),
        ("GET", "/v2/models/m0/ready"),
        ("GET", "/v2"),
        ("GET", "/metadata"),
        ("GET", "/metrics"),
    ],
)
def test_the_token_is_required(method, path):
    client, _, _ = make_client(token=TOKEN)
    body = OIP_BODY if path.startswith("/v2") else MLFLOW_BODY
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        resp = client.simulate_request(method, path, json=body, headers=headers)
        assert resp.status_code == 401, (path, headers)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    ok = client.simulate_request(
        method, path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert ok.status_code == 200, ok.text


def test_open_paths_need_no_token():
    client, _, _ = make_client(token=TOKEN)
    assert {"/ping", "/health", "/version", "/v2/health/live", "/v2/health/ready"} == OPEN_PATHS
    for path in OPEN_PATHS:
        assert client.simulate_get(path).status_code == 200, path


# ---- routes, methods, models ------------------------------------------------------------------
def test_unknown_routes_and_methods_in_each_protocols_shape():
    client, _, _ = make_client()
    resp = client.simulate_get("/nope")
    assert resp.status_code == 404 and resp.json["error_code"] == "ENDPOINT_NOT_FOUND"
    resp = client.simulate_get("/invocations")
    assert resp.status_code == 405 and resp.json["error_code"] == "BAD_REQUEST"
    resp = client.simulate_get("/v2/nope")
    assert resp.status_code == 404 and set(resp.json) == {"error"}
    resp = client.simulate_post("/v2/health/live")
    assert resp.status_code == 405 and set(resp.json) == {"error"}


def test_models_are_picked_by_path_and_named_in_headers():
    first, second = FakePipeline(label="FIRST"), FakePipeline(label="SECOND")
    client, _, _ = make_client(first, second, versions=("3", None))
    resp = client.simulate_post("/invocations", json=MLFLOW_BODY)
    assert resp.json["predictions"][0]["label"] == "FIRST"
    assert resp.headers["X-Model-Name"] == "m0" and resp.headers["X-Model-Version"] == "3"
    resp = client.simulate_post("/models/m1/invocations", json=MLFLOW_BODY)
    assert resp.json["predictions"][0]["label"] == "SECOND"
    assert resp.headers["X-Model-Name"] == "m1" and "X-Model-Version" not in resp.headers
    resp = client.simulate_post("/models/nope/invocations", json=MLFLOW_BODY)
    assert resp.status_code == 404 and resp.json["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    resp = client.simulate_post("/v2/models/m1/infer", json=OIP_BODY)
    assert resp.json["model_name"] == "m1" and resp.json["outputs"][0]["data"] == ["SECOND"] * 2
    assert client.simulate_post("/v2/models/nope/infer", json=OIP_BODY).status_code == 404
    # versions: the one served, else 404; a model without a registry version has none
    assert client.simulate_get("/v2/models/m0/versions/3").json["versions"] == ["3"]
    assert client.simulate_post("/v2/models/m0/versions/3/infer", json=OIP_BODY).status_code == 200
    assert client.simulate_post("/v2/models/m0/versions/2/infer", json=OIP_BODY).status_code == 404
    assert client.simulate_get("/v2/models/m1/versions/1/ready").status_code == 404
    meta = client.simulate_get("/metadata").json
    assert meta["default_model"] == "m0" and [m["model"] for m in meta["models"]] == ["m0", "m1"]


def test_readiness_while_loading_and_draining():
    client, models, _ = make_client(FakePipeline(), None)  # m1 still loading
    assert client.simulate_get("/v2/health/live").json == {"live": True}
    for path in ("/ping", "/health", "/v2/health/ready", "/v2/models/m1/ready"):
        resp = client.simulate_get(path)
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "1", path
    assert client.simulate_get("/v2/models/m0/ready").json == {"name": "m0", "ready": True}
    assert client.simulate_post("/models/m1/invocations", json=MLFLOW_BODY).status_code == 503
    models.get("m1").swap(FakePipeline(), {})
    assert client.simulate_get("/v2/health/ready").json == {"ready": True}
    assert client.simulate_get("/ping").status_code == 200
    models.draining = True  # SIGTERM: probes say go elsewhere, requests are still answered
    assert client.simulate_get("/v2/health/ready").status_code == 503
    assert client.simulate_get("/ping").status_code == 503
    assert client.simulate_get("/v2/health/live").status_code == 200
    assert client.simulate_post("/invocations", json=MLFLOW_BODY).status_code == 200


# ---- metrics ----------------------------------------------------------------------------------
def test_the_metrics_text_renders_and_counts_move():
    client, _, _ = make_client(FakePipeline(), FakePipeline(error=errors.Overloaded("full")))
    before = client.simulate_get("/metrics")
    assert before.status_code == 200 and before.headers["Content-Type"].startswith("text/plain")
    for name in (
        "ems_requests_total", "ems_rows_total", "ems_errors_total", "ems_request_duration_seconds",
        "ems_inflight_requests", "ems_queue_rows", "ems_queue_wait_seconds", "ems_batch_rows",
        "ems_batch_padded_tokens", "ems_batch_fill_ratio", "ems_inference_duration_seconds",
        "ems_model_info", "ems_model_reload_failures_total", "ems_worker_restarts_total",
    ):  # fmt: skip
        assert f"# TYPE {name.removesuffix('_total')}" in before.text, name
    assert metric_sum(before.text, "ems_queue_rows", model="m0") == 0.0  # series exist up front
    for _ in range(3):
        client.simulate_post("/invocations", json=MLFLOW_BODY)
    client.simulate_post("/v2/models/m0/infer", json=OIP_BODY)
    client.simulate_post("/models/m1/invocations", json=MLFLOW_BODY)
    text = client.simulate_get("/metrics").text
    route = {"route": "/invocations", "code": "200", "model": "m0"}
    assert metric_sum(text, "ems_requests_total", **route) == 3
    assert metric_sum(text, "ems_requests_total", route="/v2/models/{name}/infer", model="m0") == 1
    assert metric_sum(text, "ems_rows_total", model="m0") == 8
    assert (
        metric_sum(text, "ems_errors_total", error_code="TEMPORARILY_UNAVAILABLE", model="m1") == 1
    )
    assert metric_sum(text, "ems_rows_total", model="m1") == 0  # failed requests count no rows
    assert (
        metric_sum(text, "ems_request_duration_seconds_count", route="/invocations", model="m0")
        == 3
    )
    assert metric_sum(text, "ems_inflight_requests") == 0
    assert metric_sum(text, "ems_requests_total", route="/metrics", code="200") == 1


def test_batch_and_queue_observers_feed_the_histograms():
    metrics = Metrics()
    on_batch = metrics.batch_observer("m", budget=512)
    on_batch(16, 256, 0.01)
    metrics.wait_observer("m")([0.001, 0.002, 0.003])
    metrics.watch_queue("m", lambda: 42)
    text = metrics.render().decode()
    assert metric_sum(text, "ems_batch_rows_count", model="m") == 1
    assert metric_sum(text, "ems_batch_fill_ratio_sum", model="m") == 0.5
    assert metric_sum(text, "ems_batch_token_budget", model="m") == 512
    assert metric_sum(text, "ems_queue_wait_seconds_count", model="m") == 3
    assert metric_sum(text, "ems_queue_rows", model="m") == 42


def test_prometheus_client_is_imported_by_the_metrics_module_only():
    import ast
    from pathlib import Path

    runtime = Path(__file__).resolve().parent.parent / "runtime"
    importers = set()
    for path in runtime.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "prometheus_client" for n in names):
                importers.add(path.relative_to(runtime).as_posix())
    assert importers == {"metrics.py"}
