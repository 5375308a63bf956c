# Part 2, rows: read a group with ctx.next() (exact values: get_dataframe would round integer
# keys above 2**53 through float64 as soon as a batch holds a NULL key), batch the rows by count
# and by request bytes, one request per distinct set of per-row params, bisect rejected batches,
# and emit plain Python values with the reason in error_message for every row not scored.

import json
import math
from typing import Any, Dict, Iterator, List

from ems_http import ServerError, make_client, request_body, session

MAX_ERROR = 2000  # characters of error_message
CONVERT = {"int": int, "float": float, "bool": bool, "str": str}


class Row:
    """One input row: its values as read (key first), what is sent, and what came back."""

    __slots__ = ("data", "error", "outputs", "params", "status", "values")

    def __init__(self, values: tuple, settings: Dict[str, Any], offset: int) -> None:
        self.values = values
        self.outputs = []  # type: List[tuple]
        self.error = None  # type: Optional[str]
        self.status = None  # type: Optional[int]  # the HTTP status of a failed request
        self.data = b""
        n = len(settings["inputs"])
        texts = values[offset : offset + n]
        missing = [name for (name, _), v in zip(settings["inputs"], texts) if v is None]
        self.params = dict(settings["params"])
        for (_, param, kind), value in zip(settings["param_columns"], values[offset + n :]):
            if value is not None:
                self.params[param] = CONVERT[kind](value)
        if missing:
            self.error = "input is NULL: " + ", ".join(missing)
        else:
            self.data = json.dumps([str(v) for v in texts], ensure_ascii=False).encode("utf-8")

    @property
    def size(self) -> int:
        return len(self.data) + 1


def read_rows(ctx: Any, names: List[str]) -> Iterator[tuple]:
    """The group's rows as tuples of the runtime's own values (int, Decimal, str, datetime, ...)."""
    if ctx.size() == 0:  # a SET script without GROUP BY on an empty input is still called
        return
    while True:
        yield tuple(getattr(ctx, name) for name in names)
        if not ctx.next():
            return


def batches(rows: Iterator[Row], max_rows: int, max_bytes: int) -> Iterator[List[Row]]:
    """Consecutive rows, at most ``max_rows`` and ``max_bytes`` of request data per batch (a
    larger row goes alone); only one batch is held at a time."""
    batch, size = [], 0  # type: List[Row], int
    for row in rows:
        if batch and (len(batch) >= max_rows or size + row.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += row.size
    if batch:
        yield batch


def clean(value: Any, kind: str) -> Any:
    """A plain Python value of ``kind`` for emit() (which checks exact types), or None."""
    if value is None:
        return None
    if kind == "json":
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    value = CONVERT[kind](value)
    if kind == "float" and not math.isfinite(value):
        return None
    return value


def items(prediction: Any, shape: str, sources: List[str]) -> List[Dict[str, Any]]:
    """One row's prediction as a list of items, each with its 1-based ``#rank``."""
    if shape == "vector":
        return [{"#vector": prediction}]
    if shape == "parallel":  # {"labels": [...], "scores": [...]} -> one item per position
        keys = [s for s in sources if not s.startswith("#")]
        lists = [prediction[k] for k in keys]
        if len({len(v) for v in lists}) > 1:
            raise ValueError("lists of different lengths")
        groups = [[dict(zip(keys, values)) for values in zip(*lists)]]
    elif shape == "groups":  # a list of candidates, or one such list per mask
        nested = isinstance(prediction, list) and prediction and isinstance(prediction[0], list)
        groups = prediction if nested else [prediction]
    else:  # "items": an object or a list of objects; a bare value is the first output
        groups = [prediction if isinstance(prediction, list) else [prediction]]
    out = []
    for group in groups:
        for rank, item in enumerate(group if isinstance(group, list) else [group], 1):
            entry = dict(item) if isinstance(item, dict) else {sources[0].split("|")[0]: item}
            entry["#rank"] = rank
            out.append(entry)
    return out


def output_rows(prediction: Any, settings: Dict[str, Any]) -> List[tuple]:
    if settings["shape"] == "vector" and settings["dimension"]:
        vector = [clean(v, "float") for v in prediction]
        if len(vector) != settings["dimension"]:
            raise ValueError(f"{len(vector)} values, expected {settings['dimension']}")
        return [tuple(vector)]
    outputs = settings["outputs"]
    rows = []
    for item in items(prediction, settings["shape"], [source for _, source, _ in outputs]):
        values = []
        for _, source, kind in outputs:
            value = next((item[k] for k in source.split("|") if k in item), None)
            values.append(clean(value, kind))
        rows.append(tuple(values))
    return rows


class Udf:
    """What a generated script runs: ``run(ctx)`` per group (SET) or row (SCALAR)."""

    def __init__(self, exa: Any, settings: Dict[str, Any]) -> None:
        self.exa, self.settings = exa, settings
        self.columns = [request for _, request in settings["inputs"]]
        self.client = None

    def run(self, ctx: Any) -> Any:
        if self.client is None:  # fails early and clearly when the connection is missing
            self.client = make_client(self.exa, self.settings)
        if self.settings["mode"] == "scalar":
            return self.run_scalar(ctx)
        return self.run_set(ctx)

    def cleanup(self) -> None:
        session().close()

    def run_set(self, ctx: Any) -> None:
        s = self.settings
        names = [s["key"]] + [n for n, _ in s["inputs"]] + [c[0] for c in s["param_columns"]]
        echoed = len(names) if s["echo"] else 1
        nulls = (None,) * (s["dimension"] or len(s["outputs"]))
        rows = (Row(values, s, 1) for values in read_rows(ctx, names))
        for batch in batches(rows, s["batch_rows"], s["batch_bytes"]):
            self.score(batch)
            for row in batch:
                head = row.values[:echoed]
                if row.error is None and row.outputs:
                    for out in row.outputs:
                        ctx.emit(*(head + out + (None,)))
                else:
                    ctx.emit(*(head + nulls + (row.error,)))

    def run_scalar(self, ctx: Any) -> Any:
        s = self.settings
        names = [n for n, _ in s["inputs"]] + [c[0] for c in s["param_columns"]]
        row = Row(tuple(getattr(ctx, name) for name in names), s, 0)
        if row.error is not None:
            return None  # a NULL input
        self.score([row])
        if row.status in (400, 413):
            return None  # the server rejected this row
        if row.error is not None:
            raise RuntimeError("E-EMS-UDF-3: " + row.error)
        rows = row.outputs
        if s["scalar"] == "first":
            return rows[0][0] if rows else None
        if s["scalar"] == "vector":
            return rows[0][0] if not s["dimension"] else clean(list(rows[0]), "json")
        names = [name for name, _, _ in s["outputs"]]
        return json.dumps([dict(zip(names, r)) for r in rows])

    def score(self, batch: List[Row]) -> None:
        """Set ``outputs`` or ``error`` of every row; one request per distinct params."""
        by_params = {}  # type: Dict[str, List[Row]]
        for row in batch:
            if row.error is None:
                key = json.dumps(row.params, sort_keys=True)
                by_params.setdefault(key, []).append(row)
        for rows in by_params.values():
            for row, (prediction, err) in zip(rows, self.predict(rows, rows[0].params)):
                if err is not None:
                    row.error, row.status = err.message[:MAX_ERROR], err.status
                    continue
                try:
                    row.outputs = output_rows(prediction, self.settings)
                except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
                    shown = json.dumps(prediction)[:200]
                    message = f"unexpected prediction {shown}: {type(exc).__name__}: {exc}"
                    row.error = message[:MAX_ERROR]

    def predict(self, rows: List[Row], params: Dict[str, Any]) -> List[tuple]:
        """(prediction, error) per row; a 400/413 batch is bisected to isolate the bad rows."""
        body = request_body(self.columns, [r.data for r in rows], params)
        try:
            predictions = self.client.invoke(body, len(rows))
        except ServerError as err:
            if err.splittable and len(rows) > 1:
                mid = len(rows) // 2
                return self.predict(rows[:mid], params) + self.predict(rows[mid:], params)
            return [(None, err)] * len(rows)
        return [(p, None) for p in predictions]


def run(ctx: Any) -> None:
    raise RuntimeError("EMS_CLIENT is the library of the model scripts; call those, not it")
