"""ONNX Runtime graph optimisation through optimum's ``ORTOptimizer`` (O1-O3 for CPU, fp16/O4 for CUDA).

O1 = basic ORT passes; O2 = + transformer fusions (Attention, SkipLayerNorm, BiasGelu, ...);
O3 = O2 + Gelu approximation; O4 = O3 + fp16 (``optimize_for_gpu``). ``--quantize fp16`` adds
``fp16=True`` and ``optimize_for_gpu=True`` to the requested level; the inputs and outputs keep
their types (``keep_io_types``), so the graph also loads on CPU, just not fast.

``disable_embed_layer_norm_fusion`` stays True (optimum's default): ORT's quantizer cannot
handle the fused EmbedLayerNormalization, and at load time ORT fuses it on CPU anyway.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from exasol_mlflow_server.exporter.errors import ConversionError
from exasol_mlflow_server.exporter.progress import native_stderr_silenced


def optimize(
    onnx_path: Path, config_dir: Path, level: str, fp16: bool, out_dir: Path
) -> tuple[Path, str]:
    """Optimise ``onnx_path`` into ``out_dir/model.onnx``; returns (path, level actually applied)."""
    if level == "O0":
        return onnx_path, "O0"
    from optimum.onnxruntime import AutoOptimizationConfig, ORTOptimizer
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(config_dir))
    try:
        optimizer = ORTOptimizer([onnx_path], config=config)
    except NotImplementedError as exc:  # model type without transformer fusions in optimum
        if fp16:
            raise ConversionError(
                f"cannot produce an fp16 graph for model type {config.model_type!r}: {exc}"
            ) from exc
        return _basic_ort_optimization(onnx_path, out_dir), "O1"
    name = "O4" if level == "O4" else level
    kwargs = {"fp16": True} if fp16 and name != "O4" else {}
    opt_config = AutoOptimizationConfig.with_optimization_level(name, for_gpu=fp16, **kwargs)
    try:
        # for_gpu makes ORT try the CUDA EP, which logs from C++ where CUDA libraries are missing
        with native_stderr_silenced() if fp16 else contextlib.nullcontext():
            optimizer.optimize(opt_config, save_dir=out_dir, file_suffix=None)
    except Exception as exc:  # ORT's optimizer raises bare Exceptions/AssertionErrors
        raise ConversionError(
            f"ONNX Runtime graph optimisation {level} failed: {str(exc)[:500]}"
        ) from exc
    return out_dir / onnx_path.name, level


def _basic_ort_optimization(onnx_path: Path, out_dir: Path) -> Path:
    """Basic ORT passes (constant folding, redundant-node elimination) for model types optimum lacks."""
    import onnxruntime as ort

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / onnx_path.name
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    if not target.is_file():
        shutil.copy2(onnx_path, target)
    return target
