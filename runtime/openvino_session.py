"""[run] The OpenVINO CPU runner: the same contract as ``OnnxRunner``, on the same ``model.onnx``.

OpenVINO reads the exported ONNX graph directly (no second artifact) and, on CPUs with native
bf16 (AMX-BF16 or AVX512-BF16), runs it in bf16 at fp32-grade accuracy (mean cosine to fp32
>= 0.9999 on the validation texts), about twice to four times ONNX Runtime's fp32 speed.
It cannot read our int8 graph (ONNX Runtime's ``com.microsoft.QAttention`` contrib op): int8
exports stay on ONNX Runtime, and trying gives a :class:`ModelLoadError` that says so.

Threading: one compiled model with one stream (``PERFORMANCE_HINT=LATENCY``: all intra-op
threads work on the one batch in flight) and one infer request, guarded by a lock. The server's
batcher calls :meth:`OpenVinoRunner.run` from its single scheduler thread and pyfunc calls it
under its own lock, so the lock is never contended in practice; it only keeps a stray second
caller correct (an infer request must not run twice at once). A pool of requests would only
pay with several streams, which split the same cores and make each batch slower.
``infer`` releases the GIL, so request threads keep tokenizing while a batch runs.

``openvino`` is imported lazily: it is an optional extra (``pip install '.[openvino]'``).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "f32")
HINTS = ("LATENCY", "THROUGHPUT")
CPUINFO = Path("/proc/cpuinfo")
# cpuinfo flags that mean native bf16 matrix arithmetic, best first
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def openvino_available() -> bool:
    """Is the ``openvino`` package installed (without importing it)?"""
    return importlib.util.find_spec("openvino") is not None


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise ModelLoadError(
            "the OpenVINO backend needs the openvino package, which is not installed "
            f"({exc}); install it with pip install 'exasol-mlflow-server[openvino]', "
            "or use --backend onnxruntime"
        ) from None
    return openvino


def cpu_bf16_flags(cpuinfo: Path = CPUINFO) -> list[str]:
    """The native-bf16 flags this CPU advertises in ``/proc/cpuinfo`` (empty when none/unknown)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.partition(":")[2].split())
            return [f for f in BF16_FLAGS if f in flags]
    return []


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Does this CPU compute in bf16 natively (AMX-BF16 or AVX512-BF16)?

    OpenVINO's own answer (``BF16`` in the CPU plugin's ``OPTIMIZATION_CAPABILITIES``) when the
    package is installed, else the ``/proc/cpuinfo`` flags ``amx_bf16`` / ``avx512_bf16``.
    """
    if openvino_available():
        try:
            import openvino

            caps = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            return "BF16" in caps
        except Exception as exc:  # a broken install: fall back to the CPU flags
            log.debug("OpenVINO could not report CPU capabilities: %s", exc)
    return bool(cpu_bf16_flags())


def _type_name(value: Any) -> str:
    """An OpenVINO element type in the manifest's words: ``bf16``, ``fp32``, ``fp16``."""
    name = getattr(value, "get_type_name", None)
    short = str(name() if callable(name) else value)
    return {"f32": "fp32", "f16": "fp16"}.get(short, short)


def _read_error(model_path: Path, exc: Exception) -> ModelLoadError:
    text = str(exc)
    missing = [
        line.partition(":")[2].strip()
        for line in text.splitlines()
        if "No conversion rule found for operations" in line
    ]
    if missing:
        return ModelLoadError(
            f"OpenVINO cannot read {model_path}: it has no conversion for the operators "
            f"{', '.join(missing)} (ONNX Runtime contrib ops, as in int8 exports). "
            "Serve this model with --backend onnxruntime, or export it without --quantize int8."
        )
    return ModelLoadError(f"OpenVINO cannot read {model_path}: {text.strip()[-800:]}")


def _onnx_name(port: Any) -> str:
    """The ONNX graph's name of an input/output: a port may carry several names (an optimized
    graph's output is also its producer's ``/node/..._output_0``); the graph's own one wins."""
    names = sorted(port.get_names(), key=lambda n: (n.startswith("/"), n))
    return names[0] if names else port.get_any_name()


class OpenVinoRunner:
    """One OpenVINO CPU compiled model and its infer request; IO names are read once at load."""

    backend = "openvino"
    provider = "OpenVINO CPU"
    on_cuda = False

    def __init__(
        self,
        model_path: Path,
        threads: int = 1,
        precision: str = "auto",
        cache_dir: Path | None = None,
        hint: str = "LATENCY",
    ) -> None:
        if precision not in PRECISIONS:
            raise ModelLoadError(
                f"unknown OpenVINO precision {precision!r}; use {', '.join(PRECISIONS)}"
            )
        if hint not in HINTS:
            raise ModelLoadError(
                f"unknown OpenVINO performance hint {hint!r}; use {', '.join(HINTS)}"
            )
        ov = _import_openvino()
        core = ov.Core()
        try:
            model = core.read_model(str(model_path))
        except Exception as exc:  # openvino raises RuntimeError / OpConversionFailure
            raise _read_error(model_path, exc) from None
        wanted = precision
        if precision == "auto":
            wanted = "bf16" if cpu_has_native_bf16() else "f32"
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": wanted,
            "PERFORMANCE_HINT": hint,
            "INFERENCE_NUM_THREADS": max(0, int(threads)),
        }
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(cache_dir)
        try:
            # compiled from the read model, so the cache key is the graph's content, not its path
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise ModelLoadError(f"OpenVINO cannot compile {model_path} for CPU: {exc}") from None
        self.precision = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        if self.precision != _type_name(wanted):
            log.warning(
                "OpenVINO was asked for %s inference but runs %s on this CPU",
                wanted,
                self.precision,
            )
        self.threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        self.hint = str(compiled.get_property("PERFORMANCE_HINT"))
        self.streams = int(compiled.get_property("NUM_STREAMS"))
        self.loaded_from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        # a port may carry several tensor names (an optimized graph's output is also
        # "/node/..._output_0"; compiling an fp16 graph adds "graph_output_cast_0", which sorts
        # first): the names we show come from the read model, and any name finds its tensor
        self.input_names = [_onnx_name(i) for i in model.inputs]
        self.output_names = [_onnx_name(o) for o in model.outputs]
        self._input_sets = [frozenset(i.get_names()) for i in compiled.inputs]
        self._inputs = frozenset().union(*self._input_sets)
        self._outputs = {n: k for k, o in enumerate(compiled.outputs) for n in o.get_names()}
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """What runs, for the startup block and ``/metadata``."""
        return {
            "backend": "openvino",
            "provider": self.provider,
            "precision": self.precision,
            "threads": self.threads,
            "hint": self.hint,
            "streams": self.streams,
            "loaded_from_cache": self.loaded_from_cache,
        }

    def run(
        self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the graph. Feeds the model does not declare are dropped; outputs come back as float32."""
        names = outputs or self.output_names
        feeds = {k: v for k, v in feeds.items() if k in self._inputs}
        if not all(tensor & feeds.keys() for tensor in self._input_sets):
            # OpenVINO would run on the previous (or an empty) tensor instead of failing
            missing = [sorted(s)[0] for s in self._input_sets if not s & feeds.keys()]
            raise ValueError(f"missing model inputs: {', '.join(missing)}")
        with self._lock:
            # share_inputs: the feeds are fresh arrays and infer is synchronous (no copy in);
            # share_outputs=False: the results are copies, safe after the next infer
            values = self._request.infer(feeds, share_inputs=True, share_outputs=False)
        return {n: np.asarray(values[self._outputs[n]], dtype=np.float32) for n in names}
