"""The `udf` command's settings: :class:`UdfOptions` (fields and defaults) and their flags.

The mechanism is :mod:`exasol_mlflow_server.settings`, shared by every command: each option is a
flag and an ``EMS_UDF_<NAME>`` environment variable; flags win.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from exasol_mlflow_server.settings import Option, OptionSet, parse_json_object

from .model_info import UdfError
from .spec import INTEGER

ENV_PREFIX = "EMS_UDF_"
IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
SQL_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]*(\(\s*\d+\s*(,\s*\d+\s*)?\))?( [A-Za-z0-9_ ]+)?$")
# Reserved words a user might pick as a name (the full list: EXA_SQL_KEYWORDS).
RESERVED = frozenset(
    {
        *("CONNECTION", "DATA", "DATE", "GROUP", "LEVEL", "ORDER", "POSITION", "ROW", "SCHEMA"),
        *("SCRIPT", "SELECT", "SOURCE", "START", "TABLE", "TEXT", "TIME", "TIMESTAMP", "USER"),
        *("VALUE", "VALUES"),
    }
)


@dataclass(frozen=True)
class UdfOptions:
    schema: str
    connection: str = "MLFLOW_SERVER"
    name: str | None = None  # default: the task, e.g. TEXT_CLASSIFICATION
    batch_size: int = 100
    timeout: float = 90.0  # read timeout (the server's default --request-timeout is 60 s)
    connect_timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.5
    instances_per_node: int | None = None
    embedding_format: str = "json"
    dimension: int | None = None
    key_column: str = "id"
    key_type: str = INTEGER
    url: str = "http://<server-host>:5000"
    grant_to: str = "PUBLIC"
    params: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for flag, value in (
            ("--schema", self.schema),
            ("--connection", self.connection),
            ("--name", self.name or "X"),
            ("--key-column", self.key_column),
            ("--grant-to", self.grant_to),
        ):
            if not IDENTIFIER.match(value):
                raise UdfError(
                    f"{flag} {value!r} is not a plain SQL identifier (letters, digits, _)"
                )
            if value.upper() in RESERVED:
                raise UdfError(f"{flag} {value!r} is a reserved word in Exasol; choose another")
        if not SQL_TYPE.match(self.key_type.strip()):
            raise UdfError(f"--key-type {self.key_type!r} is not a SQL data type")
        checks = (
            ("--batch-size", self.batch_size >= 1),
            ("--timeout", self.timeout > 0),
            ("--connect-timeout", self.connect_timeout > 0),
            ("--retries", 0 <= self.retries <= 20),
            ("--backoff", self.backoff >= 0),
            (
                "--instances-per-node",
                self.instances_per_node is None or self.instances_per_node >= 1,
            ),
        )
        for flag, ok in checks:
            if not ok:
                raise UdfError(f"{flag} is out of range")
        if self.embedding_format not in ("json", "columns"):
            raise UdfError("--embedding-format must be json or columns")


UDF_OPTIONS = OptionSet(
    UdfOptions,
    ENV_PREFIX,
    (
        Option("schema", ("--schema",), "schema of the scripts"),
        Option("connection", ("--connection",), "name of the CONNECTION object"),
        Option("name", ("--name",), "name of the SET script (default: the task, e.g. FILL_MASK)"),
        Option("batch_size", ("--batch-size",), "rows per request", int),
        Option(
            "timeout",
            ("--timeout",),
            "read timeout per request in seconds (keep it above the server's --request-timeout)",
            float,
        ),
        Option("connect_timeout", ("--connect-timeout",), "connect timeout in seconds", float),
        Option(
            "retries",
            ("--retries",),
            "retries of a batch after connection errors, timeouts, 429 and 5xx",
            int,
        ),
        Option(
            "backoff",
            ("--backoff",),
            "first backoff in seconds; doubles per retry, capped at 10 s, with jitter",
            float,
        ),
        Option(
            "instances_per_node",
            ("--instances-per-node",),
            "cap the UDF VMs per node and query (%%perNodeAndCallInstanceLimit K)",
            int,
            metavar="K",
        ),
        Option(
            "embedding_format",
            ("--embedding-format",),
            "feature-extraction: one VARCHAR JSON array, or one DOUBLE column per dimension",
            choices=("json", "columns"),
        ),
        Option("dimension", ("--dimension",), "embedding size (default: config.json)", int),
        Option("key_column", ("--key-column",), "pass-through key parameter name"),
        Option("key_type", ("--key-type",), "SQL type of the key"),
        Option("url", ("--url",), "server URL(s) for the CREATE CONNECTION statement"),
        Option("grant_to", ("--grant-to",), "user or role for GRANT ACCESS"),
        Option(
            "params",
            ("--params",),
            "request params as a JSON object, e.g. '{\"top_k\": 3}' for fill-mask",
            parse_json_object,
            metavar="JSON",
        ),
    ),
)
