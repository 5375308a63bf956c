"""[decode] and [encode] of the Open Inference Protocol v2 (KServe V2 REST, JSON), no transport."""

from __future__ import annotations

import orjson

PROTOCOL_NAME = "exasol-mlflow-server"


def encode_error(message: str) -> bytes:
    return orjson.dumps({"error": message})
