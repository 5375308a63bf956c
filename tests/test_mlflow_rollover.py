"""Roll to a new version without dropping a request: serve ``models:/clf@rollout`` with a short
``--reload-interval``, keep a client busy, move the alias to a version with other label names,
then to a broken version that must leave the second one serving.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests

from exasol_mlflow_server import fixtures
from tests.mlflow_fixtures import TEXTS, MlflowWorld

pytestmark = pytest.mark.slow
pytest_plugins = ["tests.mlflow_fixtures"]  # mlflow_server, mlflow_world, clf_race
V2_LABELS = {0: "neg_v2", 1: "pos_v2"}


class Client(threading.Thread):
    """Sends requests back to back until stopped; records every outcome."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop_event = url, threading.Event()
        self.results: list[tuple[int, str | None, list[str]]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        session = requests.Session()
        while not self.stop_event.is_set():
            try:
                resp = session.post(self.url, json={"inputs": TEXTS[:2]}, timeout=60)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
                continue
            if resp.status_code != 200:
                self.failures.append(f"{resp.status_code}: {resp.text[:300]}")
                continue
            labels = [p["label"] for p in resp.json()["predictions"]]
            self.results.append((resp.status_code, resp.headers.get("X-Model-Version"), labels))
            time.sleep(0.02)

    def latest_version(self) -> str | None:
        return self.results[-1][1] if self.results else None


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def failures_metric(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    match = re.search(r"^ems_model_reload_failures_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else -1.0


def register_broken_version(world: MlflowWorld, tmp: Path) -> str:
    """Our flavor with a corrupt model.onnx: it downloads fine, then fails to load."""
    from exasol_mlflow_server.exporter.register import register_export

    exported = next(
        p
        for p in sorted((world.cache / "mlflow" / "exports").iterdir())
        if p.name.startswith("clf-v1-none-")
    )
    broken = tmp / "broken"
    shutil.copytree(exported, broken)
    (broken / "model.onnx").write_bytes(b"this is not an ONNX graph" * 100)
    return register_export(broken, "clf", tracking_uri=world.url).version


def test_alias_rollover_drops_no_request(mlflow_world: MlflowWorld, clf_race, tmp_path: Path):
    from exasol_mlflow_server.benchmarks.registry import log_transformers_model
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_world.url)
    client.set_registered_model_alias("clf", "rollout", "1")
    srv = mlflow_world.serve("models:/clf@rollout", "--reload-interval", "1")
    load = Client(srv.url + "/invocations")
    load.start()
    try:
        wait_for(lambda: len(load.results) >= 5, 60, "first responses")
        assert load.latest_version() == "1"
        assert load.results[-1][2][0] in ("NEGATIVE", "POSITIVE")
        _, v2 = log_transformers_model(
            mlflow_world.url,
            fixtures.task_model_dir("text-classification"),
            "text-classification",
            "clf",
            id2label=V2_LABELS,
        )
        client.set_registered_model_alias("clf", "rollout", v2)
        wait_for(lambda: load.latest_version() == v2, 400, f"version {v2} to be served")
        before = len(load.results)
        wait_for(lambda: len(load.results) >= before + 5, 60, "responses from version 2")
        assert all(label in V2_LABELS.values() for label in load.results[-1][2])
        assert failures_metric(srv.url) == 0

        v3 = register_broken_version(mlflow_world, tmp_path)
        client.set_registered_model_alias("clf", "rollout", v3)
        wait_for(
            lambda: failures_metric(srv.url) >= 2, 120, "two failed loads of the broken version"
        )
        before = len(load.results)
        wait_for(lambda: len(load.results) >= before + 5, 60, "responses after the failure")
        assert load.latest_version() == v2  # the second version keeps serving
        assert f"cannot load version {v3}" in srv.log()
        meta = requests.get(srv.url + "/metadata", timeout=10).json()
        assert meta["version"] == v2 and meta["alias"] == "rollout"
        metrics = requests.get(srv.url + "/metrics", timeout=10).text
        assert re.search(rf'ems_model_info\{{alias="rollout",[^}}]*version="{v2}"\}} 1', metrics)
    finally:
        load.stop_event.set()
        load.join(90)
        srv.stop()
    assert not load.failures, load.failures[:5]
    versions = [v for _, v, _ in load.results]
    assert versions[0] == "1" and versions[-1] == v2
    switch = versions.index(v2)
    assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {v2}
