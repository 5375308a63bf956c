"""The CUDA path on a real NVIDIA GPU: skipped, saying why, where ONNX Runtime has no usable CUDA
provider (every CI machine of this project), run where one is (``scripts/gpu-check.sh``).

The same ``model.onnx`` on CUDA and on the CPU must agree: embeddings of the fp32 and the fp16
MiniLM export (mean cosine >= 0.9999 / 0.999), and generation token for token on the fp32 T5 and
GPT-2 exports, greedy and beam search, with the KV cache bound on the device (IO binding). The
fp16 generation exports run with their cache in float16 on the device. ``serve --device cuda``
answers MLflow's protocol and names CUDA in ``/metadata``.

The exports come from the tests' export cache (``EMS_EXPORT_CACHE``), so a GPU machine without the
export toolchain runs this file on exports made elsewhere; an export it lacks and cannot make is
a skip that names the export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from exasol_mlflow_server.runtime.model import LoadedModel, load_model
from exasol_mlflow_server.runtime.pipeline import Pipeline
from exasol_mlflow_server.runtime.protocol import Payload
from exasol_mlflow_server.runtime.session import CUDA, cuda_available

from tests.conftest import GENERATION_TEXTS

pytestmark = pytest.mark.skipif(
    not cuda_available(), reason="needs onnxruntime-gpu and an NVIDIA GPU (CUDA provider)"
)

TEXTS = [
    *GENERATION_TEXTS,
    "An Exasol UDF sends one hundred rows per request to the model server over HTTP.",
]


def export(task: str, quantize: str, optimize: str = "O2") -> Path:
    """The cached export, or a skip where it is neither cached nor can be made here."""
    from exasol_mlflow_server.fixtures import FixtureError
    from tests.conftest import exported_model_dir

    try:
        return exported_model_dir(task, quantize, optimize)
    except (ImportError, FixtureError) as exc:  # no export toolchain or fixture model here
        pytest.skip(f"export {task} {quantize} is not cached and cannot be made here: {exc}")


def predict(model: LoadedModel, rows: list[str], **params: Any) -> Any:
    pipe = Pipeline(model)
    try:
        return pipe.predict_payload(Payload({"text": rows}, len(rows), params))[0]
    finally:
        pipe.close()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.mark.parametrize(
    ("quantize", "optimize", "floor"), [("none", "O2", 0.9999), ("fp16", "O4", 0.999)]
)
def test_embeddings_on_cuda_match_the_cpu(quantize, optimize, floor):
    path = export("feature-extraction", quantize, optimize)
    gpu = load_model(path, device="cuda")
    assert gpu.runner.provider == CUDA and gpu.runner.bind_device == "cuda"
    cpu = load_model(path, device="cpu")
    rows = TEXTS * 20  # several micro-batches of different lengths
    on_gpu, on_cpu = np.asarray(predict(gpu, rows)), np.asarray(predict(cpu, rows))
    assert on_gpu.shape == on_cpu.shape == (len(rows), 384)
    assert np.isfinite(on_gpu).all()
    cos = cosines(on_gpu, on_cpu)
    assert cos.mean() >= floor and cos.min() >= floor - 0.001, (cos.mean(), cos.min())
    # a row's embedding does not depend on its batch-mates (fp16 within rounding)
    alone = np.asarray(predict(gpu, TEXTS[2:3]))[0]
    assert cosines(alone[None], on_gpu[2:3])[0] >= 0.9995


GENERATIVE = {"t5": "text2text-generation", "gpt2": "text-generation"}
DECODING = [{"max_new_tokens": 16}, {"max_new_tokens": 16, "num_beams": 4}]


@pytest.mark.parametrize("kind", list(GENERATIVE))
def test_generation_on_cuda_is_token_identical_to_the_cpu(kind):
    path = export(GENERATIVE[kind], "none")
    gpu, cpu = load_model(path, device="cuda"), load_model(path, device="cpu")
    assert gpu.lm.on_device, "the KV cache stays on the GPU (IO binding)"
    assert not cpu.lm.on_device
    for params in DECODING:
        params = {"num_beams": 1, "do_sample": False, **params}
        got, expected = predict(gpu, TEXTS, **params), predict(cpu, TEXTS, **params)
        assert got == expected, params
        assert any(got), "not degenerate: some row generates text"


@pytest.mark.parametrize("kind", list(GENERATIVE))
def test_fp16_generation_runs_on_cuda(kind):
    path = export(GENERATIVE[kind], "fp16")
    gpu = load_model(path, device="cuda")
    assert gpu.lm.on_device
    out = predict(gpu, TEXTS, max_new_tokens=12, num_beams=2, do_sample=False)
    assert len(out) == len(TEXTS) and all(isinstance(s, str) for s in out)
    sampled = predict(gpu, TEXTS[:2], max_new_tokens=8, do_sample=True, seed=7)
    assert sampled == predict(gpu, TEXTS[:2], max_new_tokens=8, do_sample=True, seed=7)


def test_serve_on_cuda_answers_mlflow_protocol():
    from tests.serverproc import ServerProcess

    path = export("feature-extraction", "fp16", "O4")
    with ServerProcess(path, "--device", "cuda") as srv:
        response = requests.post(srv.url + "/invocations", json={"inputs": TEXTS}, timeout=60)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert np.asarray(predictions).shape == (len(TEXTS), 384)
        meta = requests.get(srv.url + "/metadata", timeout=10).json()
        assert "CUDA" in str(meta), meta
