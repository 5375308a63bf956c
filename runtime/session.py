"""[run] The ONNX Runtime session: provider choice, threading, and the one `run` call site.

:meth:`OnnxRunner.run` is the encoder tasks' call (numpy in, float32 out). :meth:`OnnxRunner.run_raw`
is the generation loop's: outputs keep their own dtype (fp16 caches), and on CUDA inputs may be
``OrtValue``s already on the device and chosen outputs stay there (IO binding), so a KV cache
does not cross PCIe on every decoding step.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

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
        # no spin-waiting: the intra-op threads share the cores with the HTTP and tokenizing
        # threads (and other models); measured 1.6-1.9x more rows/s per CPU with the server's
        # batcher (int8 MiniLM, 2-vCPU Zen 4): 121 vs 65 rows/s at 1 row x 16 clients
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        # the device IO binding binds outputs to ("cuda" on CUDA; None: plain run()). Tests set
        # "cpu" to drive the IO-binding and OrtValue path of the generation loop without a GPU.
        self.bind_device: str | None = "cuda" if self.provider == CUDA else None
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        self.input_types = {i.name: _numpy_type(i.type) for i in self._session.get_inputs()}
        self.output_types = {o.name: _numpy_type(o.type) for o in self._session.get_outputs()}

    @property
    def on_cuda(self) -> bool:
        return self.provider == CUDA

    def run(
        self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the graph. Feeds the model does not declare are dropped; outputs come back as float32."""
        values = self.run_raw(feeds, outputs)
        return {
            n: (v if v.dtype == np.float32 else v.astype(np.float32)) for n, v in values.items()
        }

    def run_raw(
        self,
        feeds: dict[str, Any],
        outputs: list[str] | None = None,
        on_device: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """Run the graph; outputs keep their dtype. With IO binding (on CUDA) a feed may be an
        ``OrtValue`` on the device, and the outputs named in ``on_device`` come back as
        ``OrtValue``s left on the device; everything else is numpy on the CPU."""
        names = outputs or self.output_names
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        if self.bind_device:  # CUDA: IO binding avoids hidden copies inside run()
            binding = self._session.io_binding()
            for name, value in feeds.items():
                if isinstance(value, ort.OrtValue):
                    binding.bind_ortvalue_input(name, value)
                else:
                    binding.bind_cpu_input(name, value)
            for name in names:
                binding.bind_output(name, self.bind_device if name in on_device else "cpu")
            self._session.run_with_iobinding(binding)
            values = binding.get_outputs()
            return {
                n: (v if n in on_device else v.numpy()) for n, v in zip(names, values, strict=True)
            }
        values = self._session.run(names, feeds)
        return dict(zip(names, values, strict=True))

    def to_device(self, value: np.ndarray) -> Any:
        """``value`` as an ``OrtValue`` on the IO-binding device (numpy as it is without one)."""
        if not self.bind_device:
            return value
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), self.bind_device, 0)


_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def _numpy_type(onnx_type: str) -> Any:
    return _TYPES.get(onnx_type, np.float32)
