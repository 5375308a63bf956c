"""The OpenVINO runner on real fp32 exports, against ONNX Runtime on the same ``model.onnx``.

Both runners sit under the same :class:`Pipeline` (the real collate, pooling and post-processing)
and get the exporter's validation texts. On CPUs with native bf16 OpenVINO runs bf16 and is held
to mean cosine >= 0.9999 against ONNX Runtime fp32; elsewhere it runs f32 and is held to f32
agreement. Each case asserts what is true on the CPU it runs on.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from exasol_mlflow_server.exporter.samples import builtin_samples
from exasol_mlflow_server.runtime.errors import ModelLoadError
from exasol_mlflow_server.runtime.model import LoadedModel, load_model
from exasol_mlflow_server.runtime.openvino_session import (
    OpenVinoRunner,
    cpu_bf16_flags,
    cpu_has_native_bf16,
)
from exasol_mlflow_server.runtime.pipeline import Pipeline
from exasol_mlflow_server.runtime.protocol import Payload

pytest.importorskip("openvino", reason="the openvino extra is not installed")

pytestmark = pytest.mark.slow

BF16 = cpu_has_native_bf16()


def texts(task: str) -> list[str]:
    return [s["text"] for s in builtin_samples(task)]


def with_runner(model: LoadedModel, runner: Any) -> Pipeline:
    return Pipeline(dataclasses.replace(model, runner=runner))


def predict(pipe: Pipeline, rows: list[str], **params: Any) -> Any:
    predictions, _ = pipe.predict_payload(Payload({"text": rows}, len(rows), params))
    return predictions


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def embedder(export_dir) -> dict[str, Any]:
    model = load_model(export_dir("feature-extraction", "none"), threads=1)
    onnx = model.path / model.manifest.model_file
    runners = {
        "auto": OpenVinoRunner(onnx, threads=1),
        "f32": OpenVinoRunner(onnx, threads=1, precision="f32"),
    }
    return {"model": model, "onnx": onnx, "ort": Pipeline(model), **runners}


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_it(embedder) -> None:
    assert embedder["auto"].precision == ("bf16" if BF16 else "fp32")
    assert embedder["f32"].precision == "fp32"  # reported in the manifest's words
    runner = embedder["auto"]
    assert (runner.provider, runner.on_cuda, runner.threads) == ("OpenVINO CPU", False, 1)
    assert runner.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert runner.output_names == ["last_hidden_state"]


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="no /proc/cpuinfo here")
def test_cpuinfo_fallback_agrees_with_openvino() -> None:
    assert bool(cpu_bf16_flags()) == BF16


def test_cpuinfo_flags_parsing(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_bf16_flags(info) == ["amx_bf16", "avx512_bf16"]
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert cpu_bf16_flags(info) == []
    assert cpu_bf16_flags(tmp_path / "missing") == []


@pytest.mark.parametrize("precision", ["auto", "f32"])
def test_embeddings_match_onnxruntime_fp32(embedder, precision) -> None:
    rows = texts("feature-extraction")
    ref = np.asarray(predict(embedder["ort"], rows))
    got = np.asarray(predict(with_runner(embedder["model"], embedder[precision]), rows))
    cos = cosines(ref, got)
    worst = int(cos.argmin())
    print(
        f"OpenVINO {embedder[precision].precision} vs ORT fp32 on {len(rows)} rows: "
        f"mean cosine {cos.mean():.6f}, worst {cos[worst]:.6f} ({rows[worst][:40]!r})"
    )
    if embedder[precision].precision == "bf16":
        assert cos.mean() >= 0.9999 and cos.min() >= 0.999
    else:  # f32 against f32: rounding only
        assert cos.min() >= 0.99999
        assert np.abs(ref - got).max() < 1e-4


def test_dynamic_shapes_batches_of_different_widths_in_a_row(embedder) -> None:
    """Widths and batch sizes change from call to call; each result has its own shape."""
    runner, pad = embedder["f32"], embedder["model"].tokenizer.pad_id
    ort = embedder["model"].runner
    rng = np.random.default_rng(7)
    for rows, width in [(1, 3), (7, 41), (2, 5), (16, 128), (1, 200), (5, 9)]:
        ids = rng.integers(1000, 20000, size=(rows, width), dtype=np.int64)
        lengths = rng.integers(1, width + 1, size=rows)
        lengths[0] = width
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        ids = np.where(mask > 0, ids, pad)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        got = runner.run({**feeds, "not_an_input": ids})["last_hidden_state"]
        ref = ort.run(feeds)["last_hidden_state"]
        assert got.shape == ref.shape == (rows, width, 384) and got.dtype == np.float32
        valid = mask.astype(bool)
        assert np.abs(got[valid] - ref[valid]).max() < 1e-3, (rows, width)


def test_results_survive_the_next_call(embedder) -> None:
    """Outputs are copies, not views of the infer request's buffers."""
    runner = embedder["auto"]
    ids = np.full((2, 6), 2000, dtype=np.int64)
    ones, zeros = np.ones_like(ids), np.zeros_like(ids)
    first = runner.run({"input_ids": ids, "attention_mask": ones, "token_type_ids": zeros})
    kept = first["last_hidden_state"].copy()
    assert kept.shape == (2, 6, 384)
    runner.run({"input_ids": ids + 7, "attention_mask": ones, "token_type_ids": zeros})
    np.testing.assert_array_equal(first["last_hidden_state"], kept)


def test_a_missing_input_fails_instead_of_running_on_stale_tensors(embedder) -> None:
    ids = np.full((2, 6), 2000, dtype=np.int64)
    with pytest.raises(ValueError, match="missing model inputs: token_type_ids"):
        embedder["auto"].run({"input_ids": ids, "attention_mask": np.ones_like(ids)})


def test_classification_labels_agree_with_onnxruntime(export_dir) -> None:
    """Same best label on every row, except where ORT's two best scores are a near-tie."""
    model = load_model(export_dir("text-classification", "none"), threads=1)
    runner = OpenVinoRunner(model.path / model.manifest.model_file, threads=1)
    tol = 1e-2 if runner.precision == "bf16" else 1e-4
    rows = texts("text-classification")
    ref = predict(Pipeline(model), rows, top_k=0)
    got = predict(with_runner(model, runner), rows, top_k=0)
    diff = max(
        abs(a["score"] - {b["label"]: b["score"] for b in rb}[a["label"]])
        for ra, rb in zip(got, ref, strict=True)
        for a in ra
    )
    swapped = [
        i for i, (a, b) in enumerate(zip(got, ref, strict=True)) if a[0]["label"] != b[0]["label"]
    ]
    print(
        f"OpenVINO {runner.precision} vs ORT fp32: largest score difference {diff:.2e}, "
        f"best label differs on rows {swapped} (ORT margins "
        f"{[round(ref[i][0]['score'] - ref[i][1]['score'], 4) for i in swapped]})"
    )
    assert diff < tol
    assert all(ref[i][0]["score"] - ref[i][1]["score"] < 2 * tol for i in swapped)
    assert len(swapped) <= len(rows) // 10


def test_fp16_export_keeps_its_output_names(export_dir) -> None:
    """The compiled fp16 graph names its output also "graph_output_cast_0"; ours stay ONNX's."""
    model_dir = export_dir("feature-extraction", "fp16")
    runner = OpenVinoRunner(model_dir / "model.onnx", threads=1)
    assert runner.output_names == ["last_hidden_state"]
    ids = np.full((2, 7), 2000, dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
    out = runner.run(feeds, ["last_hidden_state"])
    assert out["last_hidden_state"].shape == (2, 7, 384)
    assert out["last_hidden_state"].dtype == np.float32


def test_int8_export_is_a_clear_load_error(export_dir) -> None:
    onnx = export_dir("feature-extraction", "int8") / "model.onnx"
    with pytest.raises(ModelLoadError) as err:
        OpenVinoRunner(onnx, threads=1)
    message = err.value.message
    assert "com.microsoft.QAttention" in message and "--backend onnxruntime" in message


def test_compiled_model_cache_is_filled_and_reused(embedder, tmp_path) -> None:
    cache = tmp_path / "ov-cache"
    first = OpenVinoRunner(embedder["onnx"], threads=1, cache_dir=cache)
    blobs = sorted(p.name for p in cache.iterdir() if p.is_file())
    assert not first.loaded_from_cache and any(name.endswith(".blob") for name in blobs), blobs
    second = OpenVinoRunner(embedder["onnx"], threads=1, cache_dir=cache)
    assert second.loaded_from_cache and second.precision == first.precision
    assert sorted(p.name for p in cache.iterdir() if p.is_file()) == blobs
    ids = np.full((3, 10), 3000, dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
    np.testing.assert_allclose(
        first.run(feeds)["last_hidden_state"], second.run(feeds)["last_hidden_state"], atol=1e-6
    )


def test_bad_precision_and_missing_openvino_are_load_errors(embedder, monkeypatch) -> None:
    with pytest.raises(ModelLoadError, match="precision"):
        OpenVinoRunner(embedder["onnx"], precision="int4")
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(ModelLoadError, match=r"openvino package.*--backend onnxruntime"):
        OpenVinoRunner(embedder["onnx"])
