"""Thin Falcon resources: read the request, call the pipeline, set the response."""

from __future__ import annotations

import falcon
import orjson

from ... import __version__
from ..errors import PayloadTooLarge
from ..metrics import Metrics
from ..state import ModelState


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


class Ping:
    def __init__(self, state: ModelState) -> None:
        self.state = state

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.state.current()
        resp.content_type = falcon.MEDIA_JSON
        resp.data = b'{"status":"ok"}'


class Version:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = __version__


class Invocations:
    def __init__(self, state: ModelState, max_body_bytes: int, timeout: float) -> None:
        self.state, self.max_body, self.timeout = state, max_body_bytes, timeout

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        # the version this request starts on is the one it finishes on (and reports)
        pipeline, req.context.model_version = self.state.snapshot()
        body = read_body(req, self.max_body)
        resp.data, req.context.rows = pipeline.invoke(body, req.content_type, self.timeout)
        resp.content_type = falcon.MEDIA_JSON


class MetricsResource:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/plain; version=0.0.4; charset=utf-8"
        resp.data = self.metrics.render()


class Metadata:
    def __init__(self, state: ModelState) -> None:
        self.state = state

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        pipeline = self.state.current()
        manifest = pipeline.model.manifest
        info = {
            "server_version": __version__,
            **self.state.info,
            "signature": {
                "inputs": [
                    {
                        "name": c.name,
                        "type": "array<string>" if c.is_list else "string",
                        "required": c.required,
                    }
                    for c in pipeline.task.columns
                ],
                "params": [
                    {"name": p.name, "default": p.default} for p in pipeline.task.params_spec
                ],
            },
            "quantization": manifest.quantization,
            "optimization": manifest.optimization,
            "model_version": self.state.version,
        }
        resp.content_type = falcon.MEDIA_JSON
        resp.data = orjson.dumps(info)
