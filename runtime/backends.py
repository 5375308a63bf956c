"""[run] Which engine runs an exported ``model.onnx``: ONNX Runtime or OpenVINO.

Both runners keep one contract (:class:`Runner`): IO names read once at load, ``run(feeds,
outputs)`` returning float32 arrays, one inference call site each (``runtime/session.py``,
``runtime/openvino_session.py``). ``--backend auto`` picks

* ONNX Runtime on CUDA, always;
* OpenVINO in bf16 for an fp32 export on a CPU with native bf16 (AMX-BF16 or AVX512-BF16) when
  the ``openvino`` extra is installed -- fp32-grade accuracy (mean cosine >= 0.9999 to fp32) at
  several times ONNX Runtime's fp32 speed where the CPU has AMX;
* ONNX Runtime otherwise: int8 exports (OpenVINO cannot read ORT's quantized contrib ops) and
  fp16 exports (a CUDA format) stay on it, as does everything on CPUs without bf16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ModelLoadError
from .openvino_session import OpenVinoRunner, cpu_has_native_bf16, openvino_available
from .session import OnnxRunner, cuda_available

BACKENDS = ("auto", "onnxruntime", "openvino")


class Runner(Protocol):
    backend: str
    provider: str
    precision: str  # what the arithmetic runs in: fp32, int8, fp16, bf16
    threads: int
    on_cuda: bool
    input_names: list[str]
    output_names: list[str]

    def run(
        self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]: ...


def choose_backend(requested: str, device: str, model_precision: str) -> str:
    """The backend for a model of ``model_precision`` on ``device`` (see the module docstring)."""
    if requested not in BACKENDS:
        raise ModelLoadError(f"unknown backend {requested!r}; use {', '.join(BACKENDS)}")
    if requested == "onnxruntime":
        return requested
    if requested == "openvino":
        if device == "cuda":
            raise ModelLoadError(
                "--backend openvino runs on the CPU; use --device cpu (or auto), or "
                "--backend onnxruntime for CUDA"
            )
        if model_precision != "fp32":
            raise ModelLoadError(
                f"--backend openvino serves fp32 exports (it computes in bf16 where the CPU "
                f"has it); this export is {model_precision}: serve it with --backend "
                "onnxruntime, or export with --quantize none"
            )
        if not openvino_available():
            raise ModelLoadError(
                "--backend openvino needs the openvino package: pip install "
                "'exasol-mlflow-server[openvino]'"
            )
        return requested
    if device != "cpu" and cuda_available():
        return "onnxruntime"
    if model_precision == "fp32" and openvino_available() and cpu_has_native_bf16():
        return "openvino"
    return "onnxruntime"


def open_runner(
    model_path: Path,
    model_precision: str,
    backend: str = "auto",
    device: str = "auto",
    threads: int = 1,
    cache_dir: Path | None = None,
) -> Runner:
    """The runner for ``model_path``; OpenVINO keeps its compiled models in ``cache_dir``."""
    if choose_backend(backend, device, model_precision) == "openvino":
        return OpenVinoRunner(model_path, threads=threads, precision="auto", cache_dir=cache_dir)
    return OnnxRunner(model_path, device=device, threads=threads, precision=model_precision)
