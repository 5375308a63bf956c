"""The typed manifest: one reader and one writer; every defect is a ModelLoadError at load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from exasol_mlflow_server.runtime.errors import ModelLoadError
from exasol_mlflow_server.runtime.manifest import (
    MANIFEST_FILE,
    Manifest,
    Pooling,
    from_dict,
    new_manifest,
    read_manifest,
    write_manifest,
)

GOOD = {
    "format_version": 1,
    "task": "text-classification",
    "model_file": "model.onnx",
    "tokenizer_file": "tokenizer.json",
    "max_length": 128,
    "precision": "int8",
    "labels": ["NEGATIVE", "POSITIVE"],
    "special_tokens": {"pad_token_id": 0, "cls_token_id": 101},
}


def model_dir(tmp_path: Path, manifest: dict) -> Path:
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "tokenizer.json").write_text("{}")
    return tmp_path


def test_round_trip_keeps_types_and_unknown_keys(tmp_path):
    m = read_manifest(model_dir(tmp_path, {**GOOD, "from_the_future": {"a": 1}}))
    assert isinstance(m, Manifest) and m.labels == ("NEGATIVE", "POSITIVE")
    assert m.special_tokens.cls_token_id == 101 and m.pooling is None
    assert m.extra == {"from_the_future": {"a": 1}}
    write_manifest(tmp_path, m)
    again = read_manifest(tmp_path)
    assert again == m and json.loads((tmp_path / MANIFEST_FILE).read_text())["from_the_future"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 2}, "unsupported format_version 2"),
        ({"task": "summarise-everything"}, "unsupported task"),
        ({"labels": None}, "needs labels"),
        ({"labels": [1, 2]}, "labels must be a list of strings"),
        ({"max_length": 0}, "max_length must be a positive integer"),
        ({"precision": "int4"}, "unknown precision"),
        ({"special_tokens": {"pad": 0}}, "special_tokens has unknown keys"),
        ({"task": "feature-extraction", "pooling": {"mode": "weighted"}}, "pooling mode"),
        ({"task": "fill-mask", "labels": None}, "mask_token_id"),
        (
            {
                "task": "zero-shot-classification",
                "zero_shot": {"entailment_id": 5, "contradiction_id": 0},
            },
            "zero_shot.entailment_id 5 is not a label index",
        ),
        ({"model_file": "missing.onnx"}, "model_file 'missing.onnx' is missing"),
    ],
)
def test_defects_are_load_errors(tmp_path, change, message):
    with pytest.raises(ModelLoadError, match=message):
        read_manifest(model_dir(tmp_path, {**GOOD, **change}))


def test_not_an_export_and_not_json(tmp_path):
    with pytest.raises(ModelLoadError, match="is missing"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{")
    with pytest.raises(ModelLoadError, match="cannot read"):
        read_manifest(tmp_path)


def test_new_manifest_stamps_the_time_and_checks():
    m = new_manifest(task="feature-extraction", pooling=Pooling("cls", True).__dict__)
    assert m.created_at.endswith("Z") and m.pooling == Pooling("cls", True)
    assert list(m.to_dict())[:2] == ["format_version", "task"]
    with pytest.raises(ModelLoadError):
        from_dict({"task": "text-classification"}, "x")  # no labels
