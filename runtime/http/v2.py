"""Thin Falcon resources of the Open Inference Protocol v2 (the codec is ``runtime/oip.py``)."""

from __future__ import annotations

import falcon
import orjson

from ... import __version__
from ..oip import PROTOCOL_NAME
from ..state import Models


def _json(resp: falcon.Response, obj: object) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(obj)


class V2Server:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, {"name": PROTOCOL_NAME, "version": __version__, "extensions": []})


class V2Live:
    """200 whenever HTTP is served -- also while models load and while draining."""

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


class V2ModelReady:
    def __init__(self, models: Models) -> None:
        self.models = models


class V2ModelInfer:
    inference = True

    def __init__(self, models: Models, max_body: int, timeout: float) -> None:
        self.models, self.max_body, self.timeout = models, max_body, timeout
