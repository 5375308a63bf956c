"""[decode]/[encode] unit tests: MLflow's four JSON shapes, CSV, params and every 4xx case."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from exasol_mlflow_server.runtime import errors
from exasol_mlflow_server.runtime.protocol import (
    UNNAMED,
    decode,
    encode_predictions,
    parse_content_type,
)

JSON = "application/json"


def dec(obj, ctype=JSON, list_columns=frozenset()):
    return decode(orjson.dumps(obj), ctype, list_columns)


def test_inputs_list_of_strings():
    p = dec({"inputs": ["a", "b"]})
    assert p.columns == {UNNAMED: ["a", "b"]} and p.n_rows == 2 and p.params == {}


def test_inputs_single_string_is_one_row():
    assert dec({"inputs": "a"}).columns == {UNNAMED: ["a"]}


def test_instances_records_and_params():
    p = dec(
        {
            "instances": [{"question": "q1", "context": "c1"}, {"question": "q2", "context": "c2"}],
            "params": {"top_k": 2},
        }
    )
    assert p.columns == {"question": ["q1", "q2"], "context": ["c1", "c2"]}
    assert p.params == {"top_k": 2}


def test_dataframe_split_with_and_without_columns():
    p = dec({"dataframe_split": {"columns": ["text"], "data": [["x"], ["y"]], "index": [0, 1]}})
    assert p.columns == {"text": ["x", "y"]} and p.n_rows == 2
    p = dec({"dataframe_split": {"data": [["x"], ["y"]]}})
    assert p.columns == {"0": ["x", "y"]}


def test_dataframe_records():
    p = dec({"dataframe_records": [{"text": "x"}, {"text": "y"}]})
    assert p.columns == {"text": ["x", "y"]}


def test_column_dict_broadcasts_scalars_and_shared_lists():
    p = dec(
        {"inputs": {"text": ["a", "b"], "candidate_labels": ["x", "y"]}},
        list_columns=frozenset({"candidate_labels"}),
    )
    assert p.n_rows == 2 and p.columns["candidate_labels"] == [["x", "y"], ["x", "y"]]
    p = dec({"inputs": {"question": "q", "context": "c"}})
    assert p.columns == {"question": ["q"], "context": ["c"]} and p.n_rows == 1


def test_csv_with_quoted_commas_and_newlines():
    p = decode(b'text\nhello\n"a, b"\n"multi\nline"\n', "text/csv")
    assert p.columns == {"text": ["hello", "a, b", "multi\nline"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "valid JSON"),
        (b"[1, 2]", "JSON dictionary"),
        (b'{"inputs": ["a"], "instances": ["b"]}', "exactly one"),
        (b'{"data": ["a"]}', "exactly one"),
        (b'{"inputs": []}', "empty"),
        (b'{"inputs": 5}', "must be a list"),
        (b'{"dataframe_split": [1]}', "must be a dictionary"),
        (b'{"dataframe_split": {"columns": ["a"], "data": [["x", "y"]]}}', "columns"),
        (b'{"dataframe_records": {"a": 1}}', "list of records"),
        (b'{"inputs": {"a": ["x"], "b": ["y", "z"]}}', "not the same"),
    ],
)
def test_bad_json_bodies_are_bad_requests(body, message):
    with pytest.raises(errors.BadRequest, match=message):
        decode(body, JSON)


def test_params_must_be_an_object():
    with pytest.raises(errors.InvalidParameter):
        decode(b'{"inputs": ["a"], "params": [1]}', JSON)


@pytest.mark.parametrize(
    "ctype",
    [
        None,
        "",
        "text/plain",
        "application/json; format=pandas-split",
        "application/json; charset=latin-1",
    ],
)
def test_unsupported_content_types(ctype):
    with pytest.raises(errors.UnsupportedMediaType):
        parse_content_type(ctype)


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json",
        "application/json; charset=UTF-8",
        "Application/JSON",
        "text/csv; charset=utf-8",
    ],
)
def test_supported_content_types(ctype):
    assert parse_content_type(ctype) in ("application/json", "text/csv")


def test_csv_errors():
    with pytest.raises(errors.BadRequest, match="UTF-8"):
        decode(b"text\n\xff\xfe\n", "text/csv")
    with pytest.raises(errors.BadRequest, match="empty"):
        decode(b"text\n", "text/csv")
    with pytest.raises(errors.BadRequest, match="fields"):
        decode(b"a,b\n1\n", "text/csv")


def test_encode_numpy_natively_and_nested():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    assert orjson.loads(encode_predictions(arr)) == {
        "predictions": [[0.0, 0.25, 0.5], [0.75, 1.0, 1.25]]
    }
    assert orjson.loads(encode_predictions([{"label": "A", "score": np.float32(0.5)}])) == {
        "predictions": [{"label": "A", "score": 0.5}]
    }
