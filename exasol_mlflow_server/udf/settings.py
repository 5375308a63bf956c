"""The `udf` command's settings: :class:`UdfOptions` (fields and defaults) and their flags.

The mechanism is :mod:`exasol_mlflow_server.settings`, shared by every command: each option is a
flag and an ``EMS_UDF_<NAME>`` environment variable; flags win.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from exasol_mlflow_server.settings import (
    Option,
    OptionSet,
    parse_bool,
    parse_json_object,
)

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
# attributes of Exasol's iterator object (ctx): an input parameter of that name is unreachable
CONTEXT_ATTRIBUTES = frozenset({"emit", "get_dataframe", "next", "reset", "size"})


@dataclass(frozen=True)
class UdfOptions:
    schema: str
    connection: str = "MLFLOW_SERVER"
    name: str | None = None  # default: the task, e.g. TEXT_CLASSIFICATION
    batch_size: int = 100
    max_batch_bytes: int = 4 * 1024 * 1024  # request JSON per batch (a larger row goes alone)
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
    param_columns: tuple[str, ...] = ()  # per-row parameter columns ("all": every one of the task)
    key_only: bool = False  # emit the key and the outputs, not the inputs again
    tls_verify: bool = True
    ca_bundle: str | None = None  # a local PEM file, embedded into the scripts
    ca_bundle_path: str | None = None  # a PEM file the UDF VMs can read (e.g. in BucketFS)
    library: str = "EMS_CLIENT"  # the client library script, in --schema unless qualified
    library_only: bool = False
    no_library: bool = False

    def validate(self) -> None:
        for flag, value in (
            ("--schema", self.schema),
            ("--connection", self.connection),
            ("--name", self.name or "X"),
            ("--key-column", self.key_column),
            ("--grant-to", self.grant_to),
            *(("--library", part) for part in self.library.split(".", 1)),
        ):
            if not IDENTIFIER.match(value):
                raise UdfError(
                    f"{flag} {value!r} is not a plain SQL identifier (letters, digits, _)"
                )
            if value.upper() in RESERVED:
                raise UdfError(f"{flag} {value!r} is a reserved word in Exasol; choose another")
        if self.key_column.lower() in CONTEXT_ATTRIBUTES:
            raise UdfError(
                f"--key-column {self.key_column!r} is a method of Exasol's UDF context; "
                "choose another name"
            )
        if not SQL_TYPE.match(self.key_type.strip()):
            raise UdfError(f"--key-type {self.key_type!r} is not a SQL data type")
        checks = (
            ("--batch-size", self.batch_size >= 1),
            ("--max-batch-bytes", self.max_batch_bytes >= 1024),
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
        if self.library_only and self.no_library:
            raise UdfError("--library-only and --no-library exclude each other")
        tls = (
            ("--ca-bundle", bool(self.ca_bundle)),
            ("--ca-bundle-path", bool(self.ca_bundle_path)),
            ("--tls-verify false", not self.tls_verify),
        )
        chosen = [flag for flag, given in tls if given]
        if len(chosen) > 1:
            raise UdfError(f"{' and '.join(chosen)} exclude each other")


UDF_OPTIONS = OptionSet(
    UdfOptions,
    ENV_PREFIX,
    (
        Option("schema", ("--schema",), "schema of the scripts"),
        Option("connection", ("--connection",), "name of the CONNECTION object"),
        Option("name", ("--name",), "name of the SET script (default: the task, e.g. FILL_MASK)"),
        Option("batch_size", ("--batch-size",), "rows per request", int),
        Option(
            "max_batch_bytes",
            ("--max-batch-bytes",),
            "request JSON bytes per batch; a batch ends at --batch-size rows or this size",
            int,
        ),
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
            "cap the UDF VMs per node and query (the scripts get perNodeAndCallInstanceLimit K)",
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
        Option(
            "param_columns",
            ("--param-columns",),
            "per-row parameter columns of the scripts, e.g. top_k (comma-separated; all: every "
            "one the task has); a NULL value means the --params/task default",
            repeatable=True,
            metavar="NAMES",
        ),
        Option(
            "key_only",
            ("--key-only",),
            "emit only the key and the outputs (not the input texts again)",
            parse_bool,
        ),
        Option(
            "tls_verify",
            ("--tls-verify",),
            "verify the server's https certificate (false: do not; insecure)",
            parse_bool,
        ),
        Option(
            "ca_bundle",
            ("--ca-bundle",),
            "a PEM file of the CA(s) that signed the server's certificate, embedded in the scripts",
            metavar="FILE",
        ),
        Option(
            "ca_bundle_path",
            ("--ca-bundle-path",),
            "a PEM file as the UDF VMs see it, e.g. /buckets/bfsdefault/default/ca.pem",
            metavar="PATH",
        ),
        Option(
            "library",
            ("--library",),
            "name of the client library script (in --schema unless given as SCHEMA.NAME)",
        ),
        Option(
            "library_only",
            ("--library-only",),
            "print only the library script (to install or upgrade it)",
            parse_bool,
        ),
        Option(
            "no_library",
            ("--no-library",),
            "leave the library script out (it is installed already, with the same API version)",
            parse_bool,
        ),
    ),
)
