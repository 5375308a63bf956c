"""Which engine serves a model (``--backend``), and that `serve` picks it by itself."""

from __future__ import annotations

import pytest
import requests
from exasol_mlflow_server.runtime import backends
from exasol_mlflow_server.runtime.errors import ModelLoadError
from exasol_mlflow_server.runtime.openvino_session import cpu_has_native_bf16, openvino_available

from tests.serverproc import ServerProcess


@pytest.mark.parametrize(
    ("device", "precision", "cuda", "ov", "bf16", "expected"),
    [
        ("auto", "fp32", False, True, True, "openvino"),  # AMX / AVX512-BF16 CPU, extra installed
        ("cpu", "fp32", True, True, True, "openvino"),  # a GPU host told to use its CPU
        ("auto", "fp32", True, True, True, "onnxruntime"),  # CUDA: always ONNX Runtime
        ("auto", "fp32", False, True, False, "onnxruntime"),  # no native bf16: ORT fp32 is as fast
        ("auto", "fp32", False, False, True, "onnxruntime"),  # openvino not installed
        ("auto", "int8", False, True, True, "onnxruntime"),  # OpenVINO cannot read ORT's int8
        ("auto", "fp16", False, True, True, "onnxruntime"),  # a CUDA format
    ],
)
def test_auto_choice(monkeypatch, device, precision, cuda, ov, bf16, expected):
    monkeypatch.setattr(backends, "cuda_available", lambda: cuda)
    monkeypatch.setattr(backends, "openvino_available", lambda: ov)
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: bf16)
    assert backends.choose_backend("auto", device, precision) == expected
    assert backends.choose_backend("onnxruntime", device, precision) == "onnxruntime"


def test_explicit_openvino_refuses_what_it_cannot_serve(monkeypatch):
    monkeypatch.setattr(backends, "openvino_available", lambda: True)
    with pytest.raises(ModelLoadError, match="fp32 exports"):
        backends.choose_backend("openvino", "cpu", "int8")
    with pytest.raises(ModelLoadError, match="runs on the CPU"):
        backends.choose_backend("openvino", "cuda", "fp32")
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    with pytest.raises(ModelLoadError, match=r"exasol-mlflow-server\[openvino\]"):
        backends.choose_backend("openvino", "cpu", "fp32")
    with pytest.raises(ModelLoadError, match="unknown backend"):
        backends.choose_backend("tensorrt", "cpu", "fp32")


def test_serve_picks_the_backend_by_itself(export_dir, tmp_path):
    """An fp32 export: OpenVINO bf16 where the CPU has native bf16 (and the extra is installed),
    ONNX Runtime fp32 elsewhere; the startup block and /metadata say which. An int8 export stays
    on ONNX Runtime whatever the CPU."""
    native = openvino_available() and cpu_has_native_bf16()
    fp32 = export_dir("feature-extraction", "none")
    with ServerProcess(fp32, "--threads", "1", "--cache-dir", str(tmp_path)) as srv:
        meta = requests.get(srv.url + "/metadata", timeout=10).json()
        r = requests.post(srv.url + "/invocations", json={"inputs": ["which engine?"]}, timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"][0]) == 384
    backend, compute = ("openvino", "bf16") if native else ("onnxruntime", "fp32")
    assert (meta["backend"], meta["compute_precision"]) == (backend, compute), meta
    assert f"backend    {backend}" in srv.log()
    if native:
        assert any((tmp_path / "openvino").iterdir())  # the compiled-model cache for a fast restart
    int8 = export_dir("feature-extraction", "int8")
    with ServerProcess(int8, "--threads", "1", "--cache-dir", str(tmp_path)) as srv:
        meta = requests.get(srv.url + "/metadata", timeout=10).json()
    assert (meta["backend"], meta["compute_precision"]) == ("onnxruntime", "int8")
