"""App factory: ``create_app`` is pure (tests inject fake models); the server wires the real ones.

Two protocols share the app, the models, the auth and the one error table:

* MLflow's scoring protocol: ``POST /invocations`` (the first, default model),
  ``POST /models/{name}/invocations`` (any model; a path prefix is what a UDF's CONNECTION URL
  can carry), ``/ping``, ``/health``, ``/version``, ``/metadata``, ``/metrics``;
* the Open Inference Protocol v2 (KServe V2 REST): everything under ``/v2`` (see ``v2.py``).

With a bearer token set, every path needs it except :data:`OPEN_PATHS` (health checks for load
balancers and Kubernetes probes); ``/metrics`` needs it too (Prometheus sends it with
``authorization: {credentials_file: ...}`` in the scrape config).
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid

import falcon

from ..admission import Admissions
from ..errors import Unauthenticated
from ..metrics import Metrics
from ..settings import Settings
from ..state import Models
from . import errors as http_errors
from .resources import Invocations, Metadata, MetricsResource, Ping, Version
from .v2 import V2Live, V2Model, V2ModelInfer, V2ModelReady, V2Ready, V2Server

access_log = logging.getLogger("exasol_mlflow_server.access")
OPEN_PATHS = frozenset({"/ping", "/health", "/version", "/v2/health/live", "/v2/health/ready"})


class RequestMiddleware:
    """Request id, bearer auth, metrics, model headers and the one access-log line per request."""

    def __init__(self, metrics: Metrics, token: str | None, access: bool) -> None:
        self.metrics, self.access = metrics, access
        self._token = token.encode() if token else None

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.start = time.perf_counter()
        req.context.request_id = req.get_header("X-Request-ID") or uuid.uuid4().hex[:16]
        req.context.rows = 0
        req.context.error_code = None
        req.context.model_name = None
        req.context.model_version = None
        req.context.inference = False
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

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict
    ) -> None:
        if getattr(resource, "inference", False):  # counted as in flight, with latency and rows
            req.context.inference = True
            self.metrics.inflight.inc()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        ctx = req.context
        if getattr(ctx, "inference", False):
            self.metrics.inflight.dec()
        elapsed = time.perf_counter() - ctx.start
        request_id = ctx.request_id
        resp.set_header("X-Request-ID", request_id)
        model = ctx.model_name
        if model is not None:
            resp.set_header("X-Model-Name", model)
            if ctx.model_version is not None:
                resp.set_header("X-Model-Version", ctx.model_version)
        code = resp.status_code
        route = req.uri_template or "other"
        rows = ctx.rows
        self.metrics.observe_request(
            route,
            code,
            model or "",
            elapsed,
            rows=rows,
            error_code=ctx.error_code,
            inference=ctx.inference,
        )
        if self.access:
            access_log.info(
                "%s %s %s %d rows=%d %.1fms",
                request_id,
                req.method,
                req.path,
                code,
                rows,
                elapsed * 1000,
                extra={
                    "request_id": request_id,
                    "method": req.method,
                    "path": req.path,
                    "status": code,
                    "rows": rows,
                    "model": model,
                    "latency_ms": round(elapsed * 1000, 2),
                },
            )


def create_app(settings: Settings, models: Models, metrics: Metrics) -> falcon.App:
    app = falcon.App(
        middleware=[RequestMiddleware(metrics, settings.bearer_token(), settings.access_log)],
    )
    app.req_options.strip_url_path_trailing_slash = True
    http_errors.register(app)
    for state in models:
        metrics.declare_model(state.name)
    ping = Ping(models)
    app.add_route("/ping", ping)
    app.add_route("/health", ping)
    app.add_route("/version", Version())
    admissions = Admissions(settings.max_queued_rows)  # 503s before any work (admission.py)
    invocations = Invocations(models, settings.max_body_bytes, settings.request_timeout, admissions)
    app.add_route("/invocations", invocations)
    app.add_route("/models/{name}/invocations", invocations)
    app.add_route("/metrics", MetricsResource(metrics))
    app.add_route("/metadata", Metadata(models))
    # Open Inference Protocol v2
    app.add_route("/v2", V2Server())
    app.add_route("/v2/health/live", V2Live())
    app.add_route("/v2/health/ready", V2Ready(models))
    model, ready = V2Model(models), V2ModelReady(models)
    infer = V2ModelInfer(models, settings.max_body_bytes, settings.request_timeout, admissions)
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_route(base, model)
        app.add_route(base + "/ready", ready)
        app.add_route(base + "/infer", infer)
    return app
