"""[run] The ONNX Runtime session: provider choice, threading, and the one `run` call site."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import ModelLoadError

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _driver_present() -> bool:
    """Is an NVIDIA driver loadable? (Avoids ORT's noisy CUDA-provider failure on CPU hosts.)"""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def cuda_available() -> bool:
    """CUDA is usable when onnxruntime-gpu offers the provider and a GPU driver is present."""
    return CUDA in ort.get_available_providers() and _driver_present()


class OnnxRunner:
    """Owns one ``InferenceSession``; IO names and dtypes are read once at load."""

    backend = "onnxruntime"

    def __init__(
        self, model_path: Path, device: str = "auto", threads: int = 1, precision: str = "fp32"
    ) -> None:
        self.precision = precision  # the graph's: ONNX Runtime computes in it
        if device not in ("auto", "cpu", "cuda"):
            raise ModelLoadError(f"unknown device {device!r}; use auto, cpu or cuda")
        if device == "cuda" and not cuda_available():
            raise ModelLoadError(
                "--device cuda was requested but CUDA is not usable here (ONNX Runtime providers: "
                f"{', '.join(ort.get_available_providers())}; NVIDIA driver found: {_driver_present()}). "
                "Install onnxruntime-gpu with its CUDA libraries (pip install 'onnxruntime-gpu[cuda,cudnn]') "
                "on a machine with an NVIDIA GPU, or use --device cpu."
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        providers: list = [CPU]
        if device in ("auto", "cuda") and cuda_available():
            providers = [
                (
                    CUDA,
                    {
                        "arena_extend_strategy": "kSameAsRequested",
                        "cudnn_conv_algo_search": "HEURISTIC",
                    },
                ),
                CPU,
            ]
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"ONNX Runtime cannot load {model_path}: {exc}") from exc
        self.provider = self._session.get_providers()[0]
        if device == "cuda" and self.provider != CUDA:
            raise ModelLoadError(
                f"--device cuda was requested but the session runs on {self.provider}"
            )
        if device == "auto" and providers[0] != CPU and self.provider != CUDA:
            log.warning("CUDA execution provider could not be initialised; falling back to CPU")
        self.threads = threads
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    @property
    def on_cuda(self) -> bool:
        return self.provider == CUDA

    def run(
        self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the graph. Feeds the model does not declare are dropped; outputs come back as float32."""
        names = outputs or self.output_names
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        if self.on_cuda:  # CUDA: IO binding avoids hidden copies inside run()
            binding = self._session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            for name in names:
                binding.bind_output(name, "cpu")
            self._session.run_with_iobinding(binding)
            values = binding.copy_outputs_to_cpu()
        else:
            values = self._session.run(names, feeds)
        return {
            n: (v if v.dtype == np.float32 else v.astype(np.float32))
            for n, v in zip(names, values, strict=True)
        }
