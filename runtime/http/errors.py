"""The one error table: typed serving errors -> HTTP status; the body shape follows the protocol.

Client faults are 4xx; model/server faults 5xx. MLflow's routes answer MLflow-shaped bodies
``{"error_code": ..., "message": ...}`` -- also for 404/405/415/413/503/504, where MLflow itself
answers in plain text or HTML; the Open Inference Protocol's routes (``/v2...``) answer
``{"error": "..."}``. The status is the same for both.
"""

from __future__ import annotations

import logging

import falcon

from .. import errors
from ..oip import encode_error as encode_oip_error
from ..protocol import encode_error

log = logging.getLogger("exasol_mlflow_server.http")

# The only place with HTTP status codes.
ERROR_TABLE: dict[type[errors.ServingError], str] = {
    errors.InvalidParameter: falcon.HTTP_400,
    errors.BadRequest: falcon.HTTP_400,
    errors.Unauthenticated: falcon.HTTP_401,
    errors.UnknownModel: falcon.HTTP_404,
    errors.PayloadTooLarge: falcon.HTTP_413,
    errors.UnsupportedMediaType: falcon.HTTP_415,
    errors.ModelFailure: falcon.HTTP_500,
    errors.ModelLoadError: falcon.HTTP_500,
    errors.NotReady: falcon.HTTP_503,
    errors.Overloaded: falcon.HTTP_503,
    errors.DeadlineExceeded: falcon.HTTP_504,
}
FALCON_CODES = {
    404: "ENDPOINT_NOT_FOUND",
    405: "BAD_REQUEST",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
}
OK = falcon.HTTP_200
OIP_PREFIX = "/v2"


def status_for(exc: errors.ServingError) -> str:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return falcon.HTTP_500


def is_oip(req: falcon.Request) -> bool:
    return req.path == OIP_PREFIX or req.path.startswith(OIP_PREFIX + "/")


def _respond(
    req: falcon.Request, resp: falcon.Response, status: str, code: str, message: str
) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = encode_oip_error(message) if is_oip(req) else encode_error(code, message)
    req.context.error_code = code


def handle_serving_error(
    req: falcon.Request, resp: falcon.Response, ex: errors.ServingError, params: dict
) -> None:
    status = status_for(ex)
    if isinstance(ex, errors.Overloaded):
        resp.set_header("Retry-After", str(ex.retry_after))
    elif isinstance(ex, errors.NotReady):
        resp.set_header("Retry-After", "1")
    if isinstance(ex, errors.Unauthenticated):
        resp.set_header("WWW-Authenticate", 'Bearer realm="exasol-mlflow-server"')
    if isinstance(ex, (errors.ModelFailure, errors.ModelLoadError)):
        log.error(
            "request %s failed: %s",
            getattr(req.context, "request_id", "-"),
            ex.message,
            exc_info=ex.__cause__ or ex,
        )
    _respond(req, resp, status, ex.error_code, ex.message)


def handle_http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict
) -> None:
    """Falcon's own errors (unknown route, wrong method, ...) in the protocol's error shape."""
    code = FALCON_CODES.get(
        ex.status_code, "BAD_REQUEST" if ex.status_code < 500 else "INTERNAL_ERROR"
    )
    message = ex.description or ex.title or "error"
    if ex.status_code == 404:
        message = f"Endpoint not found: {req.method} {req.path}"
    elif ex.status_code == 405:
        message = f"Method {req.method} is not allowed on {req.path}"
    if ex.headers:
        for name, value in ex.headers.items():
            resp.set_header(name, value)
    _respond(req, resp, ex.status, code, message)


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict
) -> None:
    log.error("request %s: unexpected error", getattr(req.context, "request_id", "-"), exc_info=ex)
    _respond(
        req,
        resp,
        falcon.HTTP_500,
        "INTERNAL_ERROR",
        f"Internal server error ({type(ex).__name__}); see the server log.",
    )


def register(app: falcon.App) -> None:
    # Falcon picks the most specific handler by MRO.
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(errors.ServingError, handle_serving_error)
