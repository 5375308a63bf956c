"""[decode] and [encode]: MLflow's scoring protocol as bytes <-> tables, with no transport.

Accepted bodies (``mlflow/pyfunc/scoring_server``): JSON objects with exactly one of ``inputs``,
``instances``, ``dataframe_split``, ``dataframe_records`` plus optional ``params``; and
``text/csv`` with a header row. Everything decodes to a :class:`Payload`: named columns of
equal length plus params. Which columns a task needs is the task's business.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import BadRequest, InvalidParameter, UnsupportedMediaType

FORMAT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
UNNAMED = "0"  # MLflow's name for an unnamed column
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"


@dataclass
class Payload:
    columns: dict[str, list[Any]]
    n_rows: int
    params: dict[str, Any] = field(default_factory=dict)


def parse_content_type(header: str | None) -> str:
    """Return the MIME type (lower case) or raise :class:`UnsupportedMediaType`.

    Like MLflow: only a ``charset`` parameter is allowed and it must be utf-8. Unlike MLflow, a
    missing header is a 415 (MLflow crashes with a 500) and the MIME type is case-insensitive.
    """
    if not header:
        raise UnsupportedMediaType(
            f"Content-Type header is required: use {JSON_TYPE} or {CSV_TYPE}."
        )
    mime, *params = (part.strip() for part in header.split(";"))
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() != "charset":
            raise UnsupportedMediaType(
                f"Unrecognized content type parameter {name.strip()!r} in {header!r}."
            )
        if value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaType("The scoring server only supports UTF-8.")
    mime = mime.lower()
    if mime not in (JSON_TYPE, CSV_TYPE):
        raise UnsupportedMediaType(
            f"This predictor only supports the following content types: {JSON_TYPE}, {CSV_TYPE}. Got {header!r}."
        )
    return mime


def decode(
    body: bytes, content_type: str | None, list_columns: frozenset[str] = frozenset()
) -> Payload:
    """Decode a request body. ``list_columns`` names columns whose per-row value is a list."""
    mime = parse_content_type(content_type)
    if mime == CSV_TYPE:
        return _decode_csv(body)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"Invalid input. Ensure that input is a valid JSON formatted string. Error: {exc}"
        ) from None
    return decode_object(obj, list_columns)


def decode_object(obj: Any, list_columns: frozenset[str] = frozenset()) -> Payload:
    """Decode an already-parsed JSON value (also used by the pyfunc wrapper)."""
    if not isinstance(obj, dict):
        raise BadRequest(
            "Invalid input. The input must be a JSON dictionary with exactly one of the input fields "
            f"{list(FORMAT_KEYS)}. Received a {type(obj).__name__}."
        )
    present = [k for k in FORMAT_KEYS if k in obj]
    if len(present) != 1:
        raise BadRequest(
            f"The input must be a JSON dictionary with exactly one of the input fields {list(FORMAT_KEYS)}. "
            f"Received dictionary with input fields: {present}."
        )
    params = obj.get("params")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        raise InvalidParameter(f"Parameters must be a dictionary. Got {type(params).__name__}.")
    key = present[0]
    value = obj[key]
    if key == "dataframe_split":
        columns, n = _from_split(value)
    elif key == "dataframe_records":
        if not isinstance(value, list):
            raise BadRequest(
                f"Invalid input. Dataframe records format must be a list of records. Got {type(value).__name__}."
            )
        columns, n = _from_records(value)
    else:
        columns, n = _from_inputs(value, list_columns, key)
    if n == 0:
        raise BadRequest("Invalid input. The input is empty: send at least one row.")
    return Payload(columns, n, params)


def _from_split(value: Any) -> tuple[dict[str, list[Any]], int]:
    if not isinstance(value, dict):
        raise BadRequest(
            f"Invalid input. Dataframe split format must be a dictionary. Got {type(value).__name__}."
        )
    extra = set(value) - {"columns", "data", "index"}
    if "data" not in value or extra:
        raise BadRequest(
            "Invalid input. Dataframe split format must have 'data' field and optionally 'columns' and "
            f"'index' fields. Got {sorted(value)}."
        )
    data = value["data"]
    if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
        raise BadRequest("Invalid input. 'data' of dataframe_split must be a list of rows (lists).")
    width = len(data[0]) if data else 0
    names = value.get("columns")
    if names is None:
        names = [str(i) for i in range(width)]
    if not isinstance(names, list):
        raise BadRequest("Invalid input. 'columns' of dataframe_split must be a list.")
    names = [str(c) for c in names]
    for i, row in enumerate(data):
        if len(row) != len(names):
            raise BadRequest(
                f"Invalid input. Row {i} has {len(row)} values but there are {len(names)} columns."
            )
    return {name: [row[j] for row in data] for j, name in enumerate(names)}, len(data)


def _from_records(records: list[Any]) -> tuple[dict[str, list[Any]], int]:
    names: dict[str, None] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise BadRequest(f"Invalid input. Record {i} is a {type(rec).__name__}, not an object.")
        names.update(dict.fromkeys(rec))
    return {name: [rec.get(name) for rec in records] for name in names}, len(records)


def _from_inputs(
    value: Any, list_columns: frozenset[str], key: str
) -> tuple[dict[str, list[Any]], int]:
    if isinstance(value, str):
        return {UNNAMED: [value]}, 1
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return _from_records(value)
        return {UNNAMED: value}, len(value)
    if isinstance(value, dict):
        return _from_column_dict(value, list_columns)
    raise BadRequest(
        f"Invalid input. '{key}' must be a list, an object or a string; got {type(value).__name__}."
    )


def _from_column_dict(
    value: dict[str, Any], list_columns: frozenset[str]
) -> tuple[dict[str, list[Any]], int]:
    """``{"question": [...], "context": [...]}``; scalars (and shared label lists) broadcast."""
    per_row: dict[str, list[Any]] = {}
    shared: dict[str, Any] = {}
    for name, col in value.items():
        is_column = isinstance(col, list) and (
            name not in list_columns or (col and all(isinstance(v, list) for v in col))
        )
        if is_column:
            per_row[name] = col
        else:
            shared[name] = col
    lengths = {len(col) for col in per_row.values()}
    if len(lengths) > 1:
        raise BadRequest(
            "Invalid input. The length of values for each input/column name are not the same."
        )
    n = lengths.pop() if lengths else 1
    columns = dict(per_row)
    for name, scalar in shared.items():
        columns[name] = [scalar] * n
    return columns, n


def _decode_csv(body: bytes) -> Payload:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"Invalid input. Ensure that input is a valid UTF-8 encoded string. Error: {exc}"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = [row for row in reader if row]
    except csv.Error as exc:
        raise BadRequest(f"Invalid input. Could not parse CSV: {exc}") from None
    if not rows:
        raise BadRequest(
            "Invalid input. The CSV body is empty: send a header row and at least one row."
        )
    header, data = rows[0], rows[1:]
    for i, row in enumerate(data, start=2):
        if len(row) != len(header):
            raise BadRequest(
                f"Invalid input. CSV line {i} has {len(row)} fields but the header has {len(header)}."
            )
    if not data:
        raise BadRequest(
            "Invalid input. The input is empty: send at least one row after the CSV header."
        )
    return Payload({name: [row[j] for row in data] for j, name in enumerate(header)}, len(data), {})


def encode_predictions(predictions: Any) -> bytes:
    """``{"predictions": ...}`` as JSON bytes; numpy arrays are serialised natively (fast)."""
    return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_error(error_code: str, message: str) -> bytes:
    return orjson.dumps({"error_code": error_code, "message": message})
