"""Thin Falcon resources of MLflow's protocol: read the request, call the pipeline, set the response."""

from __future__ import annotations

import os
from typing import Any

import falcon
import orjson

from ... import __version__
from ..admission import Admissions
from ..errors import PayloadTooLarge
from ..metrics import CONTENT_TYPE, Metrics
from ..state import Models, ModelState


def read_body(req: falcon.Request, limit: int) -> bytes:
    length = req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(
            f"The request body has {length} bytes; the limit is {limit} (--max-body-bytes)."
        )
    body = req.bounded_stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(
            f"The request body exceeds the limit of {limit} bytes (--max-body-bytes)."
        )
    return body


def take_model(req: falcon.Request, models: Models, name: str | None) -> ModelState:
    """The model a request names (None: the default), noted for the headers and metrics."""
    state = models.get(name)
    req.context.model_name = state.name
    return state


class Ping:
    """200 once every model is loaded and warmed up; 503 before, and while draining."""

    def __init__(self, models: Models) -> None:
        self.models = models

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.models.check_ready()
        resp.content_type = falcon.MEDIA_JSON
        resp.data = b'{"status":"ok"}'


class Version:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = __version__


class Invocations:
    """``POST /invocations`` (the default model) and ``POST /models/{name}/invocations``."""

    inference = True

    def __init__(
        self, models: Models, max_body_bytes: int, timeout: float, admissions: Admissions
    ) -> None:
        self.models, self.max_body, self.timeout = models, max_body_bytes, timeout
        self.admissions = admissions

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str | None = None) -> None:
        state = take_model(req, self.models, name)
        # the version this request starts on is the one it finishes on (and reports)
        pipeline, req.context.model_version = state.snapshot()
        # admitted (or a 503) by its size before the body is decoded; settled before tokenizing
        with self.admissions.admit(state.name, req.content_length) as ticket:
            body = read_body(req, self.max_body)
            resp.data, req.context.rows = pipeline.invoke(
                body, req.content_type, self.timeout, ticket
            )
        resp.content_type = falcon.MEDIA_JSON


class MetricsResource:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE
        resp.data = self.metrics.render()


def describe(state: ModelState) -> dict[str, Any]:
    """What ``/metadata`` says about one model (its task schema once it is loaded)."""
    info: dict[str, Any] = {"name": state.name, "ready": state.ready}
    if not state.ready:
        return info
    pipeline = state.current()
    manifest = pipeline.model.manifest
    info.update(state.info)  # its `name` is the registered MLflow name, where there is one
    info["model"] = state.name
    if info.get("name") is None:
        info["name"] = state.name
    info.update(
        signature={
            "inputs": [
                {
                    "name": c.name,
                    "type": "array<string>" if c.is_list else "string",
                    "required": c.required,
                }
                for c in pipeline.task.columns
            ],
            "params": [{"name": p.name, "default": p.default} for p in pipeline.task.params_spec],
        },
        quantization=manifest.quantization,
        optimization=manifest.optimization,
        model_version=state.version,
    )
    return info


class Metadata:
    """The default model's facts at the top level (as with one model), and every model."""

    def __init__(self, models: Models) -> None:
        self.models = models

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.models.default.current()  # 503 until the default model is loaded
        entries = [describe(state) for state in self.models]
        info = {
            "server_version": __version__,
            **entries[0],
            "default_model": self.models.default.name,
            "models": entries,
            "pid": os.getpid(),
        }
        resp.content_type = falcon.MEDIA_JSON
        resp.data = orjson.dumps(info, option=orjson.OPT_SERIALIZE_NUMPY)
