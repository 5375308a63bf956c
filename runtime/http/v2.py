"""Thin Falcon resources of the Open Inference Protocol v2; the codec is ``runtime/oip.py``.

``GET /v2``, ``/v2/health/live`` (200 whenever HTTP is served, also while models load or the
server drains), ``/v2/health/ready`` (every model warm, not draining), and per model
``GET /v2/models/{name}[/versions/{version}]`` (metadata), ``.../ready`` and ``POST .../infer``.
A version, when given, must be the one being served (an MLflow registry version; a model that is
not from the registry has none), else 404.
"""

from __future__ import annotations

import time

import falcon
import orjson

from ... import __version__
from .. import oip
from ..admission import Admissions
from ..errors import BadRequest, UnknownModel
from ..state import Models, ModelState
from .resources import read_body, take_model


def _json(resp: falcon.Response, obj: object) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(obj)


def _model(req: falcon.Request, models: Models, name: str, version: str | None) -> ModelState:
    state = take_model(req, models, name)
    if version is not None and version != state.version:
        served = f"version {state.version}" if state.version is not None else "no versions"
        raise UnknownModel(f"Model {name!r} has no version {version!r} here (it serves {served}).")
    return state


class V2Server:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, oip.server_metadata(__version__))


class V2Live:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, {"live": True})


class V2Ready:
    def __init__(self, models: Models) -> None:
        self.models = models

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.models.check_ready()
        _json(resp, {"ready": True})


class V2Model:
    def __init__(self, models: Models) -> None:
        self.models = models

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, name: str, version: str | None = None
    ) -> None:
        state = _model(req, self.models, name, version)
        pipeline, req.context.model_version = state.snapshot()
        task = pipeline.task
        _json(resp, oip.model_metadata(name, state.version, task.spec, task.options.label_only))


class V2ModelReady:
    def __init__(self, models: Models) -> None:
        self.models = models

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, name: str, version: str | None = None
    ) -> None:
        state = _model(req, self.models, name, version)
        self.models.check_ready(state)
        _json(resp, {"name": name, "ready": True})


class V2ModelInfer:
    inference = True

    def __init__(
        self, models: Models, max_body: int, timeout: float, admissions: Admissions
    ) -> None:
        self.models, self.max_body, self.timeout = models, max_body, timeout
        self.admissions = admissions

    def on_post(
        self, req: falcon.Request, resp: falcon.Response, name: str, version: str | None = None
    ) -> None:
        state = _model(req, self.models, name, version)
        pipeline, req.context.model_version = state.snapshot()
        if req.get_header("Inference-Header-Content-Length") is not None:
            raise BadRequest(
                "Binary tensor data is not supported: send JSON (tritonclient: binary_data=False)."
            )
        deadline = time.monotonic() + self.timeout
        task = pipeline.task
        with self.admissions.admit(state.name, req.content_length) as ticket:  # before decoding
            request = oip.decode_request(read_body(req, self.max_body), task.spec)
            predictions, req.context.rows = pipeline.predict_payload(
                request.payload, deadline, ticket
            )
        outputs = oip.outputs_of(task.spec, task.options.label_only)
        resp.data = oip.encode_response(
            name, req.context.model_version, request, outputs, predictions
        )
        resp.content_type = falcon.MEDIA_JSON
