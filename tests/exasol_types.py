"""Exasol's SQL types as its Python 3 UDF runtime sees them (part of tests/exasol_runtime.py):
how a value is stored in a column, what ``ctx.<column>`` and ``get_dataframe`` hand to the script,
and ``emit``'s exact type checks (``exaiter.emit`` in exasol/script-languages)."""

from __future__ import annotations

import datetime
import decimal
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

INT32, INT64, NUMERIC, DOUBLE, STRING, BOOLEAN, DATE, TIMESTAMP = [
    "INT32",
    "INT64",
    "NUMERIC",
    "DOUBLE",
    "STRING",
    "BOOLEAN",
    "DATE",
    "TIMESTAMP",
]
ALIASES = {
    "INT": "DECIMAL(18,0)",
    "INTEGER": "DECIMAL(18,0)",
    "BIGINT": "DECIMAL(36,0)",
    "SMALLINT": "DECIMAL(9,0)",
    "TINYINT": "DECIMAL(3,0)",
}


# ---------------------------------------------------------------------------------------------
# SQL types
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SqlType:
    text: str
    kind: str
    precision: int | None = None
    scale: int = 0
    length: int | None = None


def sql_type(text: str) -> SqlType:
    upper = ALIASES.get(text.strip().upper(), text.strip().upper())
    base = upper.split("(")[0].strip()
    args = [int(a) for a in re.findall(r"\d+", upper[len(base) :])]
    if base in ("DECIMAL", "NUMERIC", "NUMBER", "DEC"):
        precision, scale = (args[0], args[1] if len(args) > 1 else 0) if args else (18, 0)
        kind = (
            NUMERIC if scale else INT32 if precision <= 9 else INT64 if precision <= 18 else NUMERIC
        )
        return SqlType(text, kind, precision, scale)
    if base in ("DOUBLE", "DOUBLE PRECISION", "FLOAT", "REAL"):
        return SqlType(text, DOUBLE)
    if base in ("VARCHAR", "CHAR", "CHARACTER VARYING", "CHARACTER"):
        return SqlType(text, STRING, length=args[0] if args else 2000000)
    if base in ("BOOLEAN", "BOOL"):
        return SqlType(text, BOOLEAN)
    if base == "DATE":
        return SqlType(text, DATE)
    if base.startswith("TIMESTAMP"):
        return SqlType(text, TIMESTAMP)
    raise ValueError(f"type {text!r} is not modelled")


def stored(value: Any, t: SqlType, where: str) -> Any:
    """``value`` as the database holds it in a column of type ``t`` (ValueError if it cannot)."""
    if value is None:
        return None
    if t.kind == STRING:
        if not isinstance(value, str):
            raise ValueError(f"{where}: {type(value).__name__} into {t.text}")
        if len(value) > (t.length or 0):
            raise ValueError(f"{where}: {len(value)} characters into {t.text}")
        return value or None  # '' is NULL
    if t.kind in (INT32, INT64, NUMERIC):
        if isinstance(value, float) and (value != value or abs(value) == float("inf")):
            raise ValueError(f"{where}: {value} into {t.text}")
        with decimal.localcontext() as exact:
            exact.prec = 100
            number = decimal.Decimal(repr(value) if isinstance(value, float) else value)
            number = number.quantize(decimal.Decimal(1).scaleb(-t.scale))
            if abs(number.scaleb(-(t.precision - t.scale))) >= 1:
                raise ValueError(f"{where}: {value} does not fit {t.text}")
        return int(number) if t.scale == 0 else number
    if t.kind == DOUBLE:
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"{where}: {value} (Exasol has no NaN/infinity)")
        return number
    return value


def row_value(value: Any, t: SqlType) -> Any:
    """What ``ctx.<column>`` returns (exaiter's getters; NUMERIC with scale 0 as int)."""
    if value is None:
        return None
    if t.kind in (INT32, INT64) or (t.kind == NUMERIC and t.scale == 0):
        return int(value)
    if t.kind == NUMERIC:
        return decimal.Decimal(str(value))
    if t.kind == DOUBLE:
        return float(value)
    return value


def frame_value(value: Any, t: SqlType) -> Any:
    """What ``get_dataframe`` puts into its list of rows (NUMERIC: Decimal at any scale)."""
    if value is not None and t.kind == NUMERIC:
        return decimal.Decimal(str(value))
    return row_value(value, t)


class Column:
    def __init__(self, name: str, t: SqlType) -> None:
        self.name, self.sql_type = name, t.text
        self.type = {STRING: str, DOUBLE: float, BOOLEAN: bool, DATE: datetime.date}.get(t.kind)
        if t.kind == TIMESTAMP:
            self.type = datetime.datetime
        elif t.kind in (INT32, INT64, NUMERIC):
            self.type = int if t.scale == 0 else decimal.Decimal
        self.precision, self.scale, self.length = t.precision, t.scale, t.length


def check_emit(values: Sequence[Any], columns: list[tuple[str, SqlType]]) -> tuple:
    """exaiter.emit's checks of one row; returns the row as the database stores it."""
    if len(values) != len(columns):
        raise TypeError(
            f"E-UDF-CL-SL-PYTHON-1089: emit() takes exactly {len(columns)} arguments "
            f"({len(values)} given)"
        )
    allowed = {
        int: (INT32, INT64, NUMERIC, DOUBLE),
        float: (DOUBLE, INT32, INT64, NUMERIC),
        bool: (BOOLEAN,),
        str: (STRING,),
        decimal.Decimal: (NUMERIC, INT32, INT64, DOUBLE),
        datetime.date: (DATE,),
        datetime.datetime: (TIMESTAMP,),
    }
    out = []
    for value, (name, t) in zip(values, columns, strict=True):
        if value is not None:
            kinds = allowed.get(type(value))
            if kinds is None:
                raise RuntimeError(
                    f"E-UDF-CL-SL-PYTHON-1098: data type {type(value)} is not supported"
                )
            if t.kind not in kinds:
                raise RuntimeError(
                    f"E-UDF-CL-SL-PYTHON-1091: emit column '{name}' is of type {t.text} but data "
                    f"given have type {type(value)}"
                )
        try:
            out.append(stored(value, t, f"emit column '{name}'"))
        except ValueError as exc:
            raise RuntimeError(f"F-UDF-CL-SL-PYTHON-1099: {exc}") from None
    return tuple(out)


def frame_rows(frame: pd.DataFrame) -> list[tuple]:
    """emit(DataFrame): each value as the C++ emitter reads it from its column's dtype."""
    columns = []
    for name in frame.columns:
        series, kind = frame[name], frame[name].dtype.kind
        if kind == "f":
            values = [None if v != v else float(v) for v in series]
        elif kind in "iu":
            values = [int(v) for v in series]
        elif kind == "b":
            values = [bool(v) for v in series]
        elif kind == "M":
            values = [None if pd.isna(v) else v.to_pydatetime() for v in series]
        else:  # object: None, pd.NA and (since SLC 6.1) NaN are NULL
            values = [None if v is None or v is pd.NA or v != v else v for v in series]
        columns.append(values)
    return list(zip(*columns, strict=True))
