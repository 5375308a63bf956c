"""App factory: ``create_app`` is pure (tests inject a state); the server wires the real objects."""

from __future__ import annotations

import hmac
import logging
import time
import uuid

import falcon

from ..errors import Unauthenticated
from ..metrics import Metrics
from ..settings import Settings
from ..state import ModelState
from . import errors as http_errors
from .resources import Invocations, Metadata, MetricsResource, Ping, Version

access_log = logging.getLogger("exasol_mlflow_server.access")
OPEN_PATHS = frozenset({"/ping", "/health", "/version"})  # for load balancers; never need a token


class RequestMiddleware:
    """Request id, bearer auth, metrics and the one access-log line per request."""

    def __init__(
        self, metrics: Metrics, state: ModelState, token: str | None, access: bool
    ) -> None:
        self.metrics, self.state, self.access = metrics, state, access
        self._token = token.encode() if token else None

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.start = time.perf_counter()
        req.context.request_id = req.get_header("X-Request-ID") or uuid.uuid4().hex[:16]
        req.context.rows = 0
        req.context.error_code = None
        if self._token is not None and req.path not in OPEN_PATHS:
            header = req.get_header("Authorization") or ""
            scheme, _, supplied = header.partition(" ")
            # constant-time comparison; the token itself is never logged
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                supplied.strip().encode(), self._token
            ):
                raise Unauthenticated(
                    "Missing or invalid bearer token (Authorization: Bearer <token>)."
                )

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        elapsed = time.perf_counter() - getattr(req.context, "start", time.perf_counter())
        request_id = getattr(req.context, "request_id", "-")
        resp.set_header("X-Request-ID", request_id)
        version = getattr(req.context, "model_version", None) or self.state.version
        if version is not None:
            resp.set_header("X-Model-Version", version)
        code = resp.status_code if hasattr(resp, "status_code") else int(str(resp.status)[:3])
        route = req.path if req.path in ROUTES else "other"
        self.metrics.requests.inc(1, route, str(code))
        if req.context.error_code:
            self.metrics.errors.inc(1, req.context.error_code)
        if route == "/invocations":
            self.metrics.latency.observe(elapsed)
            if code < 400:
                self.metrics.rows.inc(req.context.rows)
        if self.access:
            access_log.info(
                "%s %s %s %d rows=%d %.1fms",
                request_id,
                req.method,
                req.path,
                code,
                req.context.rows,
                elapsed * 1000,
                extra={
                    "request_id": request_id,
                    "method": req.method,
                    "path": req.path,
                    "status": code,
                    "rows": req.context.rows,
                    "latency_ms": round(elapsed * 1000, 2),
                },
            )


ROUTES = ("/ping", "/health", "/version", "/invocations", "/metrics", "/metadata")


def create_app(settings: Settings, state: ModelState, metrics: Metrics) -> falcon.App:
    app = falcon.App(
        middleware=[
            RequestMiddleware(metrics, state, settings.bearer_token(), settings.access_log)
        ],
    )
    app.req_options.strip_url_path_trailing_slash = True
    http_errors.register(app)
    ping = Ping(state)
    app.add_route("/ping", ping)
    app.add_route("/health", ping)
    app.add_route("/version", Version())
    app.add_route(
        "/invocations", Invocations(state, settings.max_body_bytes, settings.request_timeout)
    )
    app.add_route("/metrics", MetricsResource(metrics))
    app.add_route("/metadata", Metadata(state))
    return app
