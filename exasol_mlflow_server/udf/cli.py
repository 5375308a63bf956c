"""`exasol-mlflow-server udf MODEL_DIR --schema S ...`: print the SQL that calls the server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .generator import UdfOptions, generate_sql
from .model_info import UdfError, read_model_info

DEFAULTS = UdfOptions(schema="S")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print ready-to-run SQL for Exasol: a CONNECTION holding the server URL(s) and token, a "
        "batching SET script, a SCALAR script, grants and example queries. See docs/exasol.md."
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="exported model directory")
    parser.add_argument("--schema", required=True, help="schema of the scripts")
    parser.add_argument(
        "--connection", default=DEFAULTS.connection, help="name of the CONNECTION object"
    )
    parser.add_argument(
        "--name", default=None, help="name of the SET script (default: the task, e.g. FILL_MASK)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULTS.batch_size, help="rows per request"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULTS.timeout,
        help="read timeout per request in seconds (keep it above the server's --request-timeout)",
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=DEFAULTS.connect_timeout, help="seconds"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=DEFAULTS.retries,
        help="retries of a batch after connection errors, timeouts, 429 and 5xx",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=DEFAULTS.backoff,
        help="first backoff in seconds; doubles per retry, capped at 10 s, with jitter",
    )
    parser.add_argument(
        "--instances-per-node",
        type=int,
        default=None,
        metavar="K",
        help="cap the UDF VMs per node and query (%%perNodeAndCallInstanceLimit K)",
    )
    parser.add_argument("--output", "-o", default=None, help="write the SQL here, not to stdout")
    parser.add_argument(
        "--embedding-format",
        choices=("json", "columns"),
        default=DEFAULTS.embedding_format,
        help="feature-extraction: one VARCHAR JSON array, or one DOUBLE column per dimension",
    )
    parser.add_argument(
        "--dimension", type=int, default=None, help="embedding size (default: config.json)"
    )
    parser.add_argument(
        "--key-column", default=DEFAULTS.key_column, help="pass-through key parameter name"
    )
    parser.add_argument("--key-type", default=DEFAULTS.key_type, help="SQL type of the key")
    parser.add_argument(
        "--url", default=DEFAULTS.url, help="server URL(s) for the CREATE CONNECTION statement"
    )
    parser.add_argument(
        "--grant-to", default=DEFAULTS.grant_to, help="user or role for GRANT ACCESS"
    )
    parser.add_argument(
        "--params",
        default=None,
        metavar="JSON",
        help="request params, e.g. '{\"top_k\": 3}' for fill-mask",
    )


def options_from(args: argparse.Namespace) -> UdfOptions:
    params = {}
    if args.params:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            raise UdfError(f"--params is not valid JSON: {exc}") from None
        if not isinstance(params, dict):
            raise UdfError("--params must be a JSON object")
    return UdfOptions(
        schema=args.schema,
        connection=args.connection,
        name=args.name,
        batch_size=args.batch_size,
        timeout=args.timeout,
        connect_timeout=args.connect_timeout,
        retries=args.retries,
        backoff=args.backoff,
        instances_per_node=args.instances_per_node,
        embedding_format=args.embedding_format,
        dimension=args.dimension,
        key_column=args.key_column,
        key_type=args.key_type,
        url=args.url,
        grant_to=args.grant_to,
        params=params,
    )


def run(args: argparse.Namespace) -> int:
    try:
        sql = generate_sql(read_model_info(args.model_dir), options_from(args))
        if args.output:
            Path(args.output).write_text(sql, encoding="utf-8")
        else:
            sys.stdout.write(sql)
    except (UdfError, OSError) as exc:
        print(f"exasol-mlflow-server udf: error: {exc}", file=sys.stderr)
        return 2
    return 0
