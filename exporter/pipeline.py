"""``export_model``: HF model -> ONNX -> optimise -> quantise -> validate -> MLflow model directory.

Everything is written into a hidden staging directory next to the output and moved into place
at the end, so a failed export never leaves a half-written model behind. The one exception is
the ``--min-quality`` gate: the finished model *is* kept (``quality.json`` says
``"gate": {"passed": false}``) so it can be inspected, and :class:`QualityGateError` is raised.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exasol_mlflow_server.exporter import mlmodel, report, source, tasks, validate
from exasol_mlflow_server.exporter.errors import (
    ConversionError,
    InvalidSettingError,
    OutputExistsError,
    QualityGateError,
    TokenizerError,
)
from exasol_mlflow_server.exporter.progress import Progress, quiet
from exasol_mlflow_server.exporter.samples import builtin_samples, load_samples
from exasol_mlflow_server.exporter.settings import ExportSettings
from exasol_mlflow_server.runtime.tasks import task_spec

TWO_GB = 2**31 - 1
EXTERNAL_DATA = "model.onnx.data"


@dataclass(frozen=True)
class ExportResult:
    output: Path
    manifest: dict[str, Any]
    quality: dict[str, Any]
    mlmodel: dict[str, Any]


def export_model(settings: ExportSettings, progress: bool = True) -> ExportResult:
    """Export ``settings.model`` into the MLflow model directory ``settings.output``."""
    steps = Progress(total=6, enabled=progress)
    try:
        steps.stage("checking model and output")
        plan = _plan(settings)  # cheap checks first: no torch/optimum import for these errors
        with quiet():
            result = _export(settings, steps, plan)
    except BaseException:
        steps.failed()
        raise
    steps.done(f"exported {plan.task} ({result.manifest['precision']}) to {result.output}")
    failure = report.apply_gate(result.quality, settings.min_quality)
    if result.quality.get("gate") is not None:
        (result.output / "quality.json").write_text(_json(result.quality))
    if failure:
        raise QualityGateError(
            f"{failure}; the model was written to {result.output} for inspection", result=result
        )
    return result


@dataclass(frozen=True)
class _Plan:
    src: source.ModelSource
    task: str
    labels: list[str] | None
    zero_shot: dict[str, int] | None
    pooling: dict[str, Any] | None
    task_key: str | None = None  # a transformers pipeline task such as translation_en_to_de


def _plan(settings: ExportSettings) -> _Plan:
    _check_output(settings)
    src = source.resolve(settings.model)
    if settings.output.resolve() == src.path:
        raise InvalidSettingError("--output must not be the model directory itself")
    task, task_key = tasks.split_task(settings.task or tasks.infer_task(src.config, src.path))
    source.check_disk(settings.output, src, settings.disk_factor)
    labels = tasks.id2label(src.config) if task_spec(task).has_labels else None
    zero_shot = tasks.zero_shot_ids(labels) if task == "zero-shot-classification" else None
    pooling = tasks.pooling_config(src.path) if task == "feature-extraction" else None
    return _Plan(src, task, labels, zero_shot, pooling, task_key)


def _export(settings: ExportSettings, steps: Progress, plan: _Plan) -> ExportResult:
    from exasol_mlflow_server.exporter import onnx_export

    onnx_export.check_exportable(plan.src, plan.task)
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    staging = settings.output.parent / f".{settings.output.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        if task_spec(plan.task).kind == "generative":
            from exasol_mlflow_server.exporter import generative

            result = ExportResult(staging, *generative.build(settings, plan, staging, steps))
        else:
            result = _build(settings, steps, plan, staging)
        _replace(staging, settings.output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(settings.output, result.manifest, result.quality, result.mlmodel)


def _build(settings: ExportSettings, steps: Progress, plan: _Plan, staging: Path) -> ExportResult:
    from exasol_mlflow_server.exporter import onnx_export, optimize, quantize

    src, task, pooling = plan.src, plan.task, plan.pooling
    work = staging / ".work"
    tokenizer, tokenizer_dir = source.load_tokenizer(src, work)
    max_length = source.max_length(src, tokenizer, settings.max_length)
    special = source.special_tokens(tokenizer)
    if task == "fill-mask" and special["mask_token_id"] is None:
        raise TokenizerError(f"{src.ref} has no mask token; it cannot be exported for fill-mask")
    samples = (
        load_samples(settings.calibration, task) if settings.calibration else builtin_samples(task)
    )

    steps.stage(f"exporting {task} to ONNX")
    model = onnx_export.load_model(src, task)
    fp32_path = onnx_export.export_onnx(model, task, work / "fp32", settings.opset)

    fp16 = settings.quantize == "fp16"
    steps.stage(f"optimising graph ({settings.optimize}{', fp16 for CUDA' if fp16 else ''})")
    final, applied = optimize.optimize(fp32_path, src.path, settings.optimize, fp16, work / "opt")

    quantization = None
    if settings.quantize == "int8":
        preset = settings.preset or quantize.detect_preset()
        kind = "per-channel" if settings.per_channel else "per-tensor"
        steps.stage(f"quantising to INT8 (dynamic, {preset}, {kind})")
        try:
            final, quantization = quantize.quantize(
                final, work / "int8", preset, settings.per_channel
            )
        except ConversionError as exc:
            if applied in ("O0", "O1"):
                raise
            # Fallback documented in quantize.py: quantise the O1 graph instead.
            steps.note(
                f"quantising the {applied} graph failed ({exc}); quantising the O1 graph instead"
            )
            o1, applied = optimize.optimize(fp32_path, src.path, "O1", False, work / "opt-o1")
            final, quantization = quantize.quantize(
                o1, work / "int8-o1", preset, settings.per_channel
            )
    else:
        steps.stage("quantising: skipped (" + ("fp16 graph" if fp16 else "fp32") + ")")

    steps.stage(f"validating against PyTorch ({len(samples)} samples)")
    quality = _validate(
        settings,
        task,
        model,
        tokenizer,
        samples,
        max_length,
        final,
        fp32_path,
        pooling,
        special,
        src,
        applied,
    )
    del model

    steps.stage("writing MLflow model")
    extra = _place_model(final, staging)
    copied = source.copy_tokenizer(tokenizer_dir, src, staging)
    inputs, outputs = _io_names(staging / "model.onnx")
    manifest = mlmodel.build_manifest(
        task=task,
        model_file="model.onnx",
        tokenizer_file="tokenizer.json",
        max_length=max_length,
        precision=settings.precision,
        optimization=applied,
        quantization=quantization,
        inputs=inputs,
        outputs=outputs,
        labels=plan.labels,
        problem_type=src.config.get("problem_type"),
        pooling=pooling,
        special_tokens=special,
        zero_shot=plan.zero_shot,
        provider_hints=mlmodel.provider_hints(settings.precision),
        source={
            "model": src.ref if src.from_hub else str(src.path),
            "model_type": src.model_type,
            "architecture": src.architecture,
        },
        versions=mlmodel.versions(),
    )
    mlmodel.write_manifest(staging, manifest)
    ml = mlmodel.write_mlflow_files(staging, manifest, src.config.get("hidden_size"), extra)
    (staging / "quality.json").write_text(_json(quality))
    shutil.rmtree(work, ignore_errors=True)
    assert "tokenizer.json" in copied
    return ExportResult(staging, manifest, quality, ml)


def _validate(
    settings: ExportSettings,
    task: str,
    model: Any,
    tokenizer: Any,
    samples: list[dict[str, str]],
    max_length: int,
    final: Path,
    fp32_path: Path,
    pooling: dict[str, Any] | None,
    special: dict[str, Any],
    src: source.ModelSource,
    applied: str,
) -> dict[str, Any]:
    batches = list(
        validate.encode_batches(tokenizer, task, samples, max_length, settings.batch_size)
    )
    runners: dict[str, Any] = {"pytorch": validate.torch_runner(model)}
    pairs = [("pytorch", "onnx")]
    skipped = None
    provider = None
    try:
        session, provider = validate.onnx_session(final, prefer_cuda=settings.quantize == "fp16")
        runners["onnx"] = validate.onnx_runner(session)
    except Exception as exc:  # an fp16 graph may not load on CPU; record it and go on
        skipped = (
            f"the {settings.precision} ONNX model could not run on this machine: {str(exc)[:300]}"
        )
    if skipped is None and settings.quantize != "none":
        runners["onnx_fp32"] = validate.onnx_runner(
            validate.onnx_session(fp32_path, prefer_cuda=False)[0]
        )
        pairs.append(("onnx_fp32", "onnx"))
    serving = validate.serving_runner(final, settings.precision) if skipped is None else None
    if serving is not None:  # the report covers the engine that will serve it here
        runners["serving"] = serving[1]
        pairs += [("pytorch", "serving"), ("onnx", "serving")]
    metrics: dict[tuple[str, str], dict[str, float]] = {}
    speed = None
    if skipped is None:
        try:
            metrics, speed = validate.measure(
                task,
                runners,
                pairs,
                batches,
                (pooling or {}).get("mode", "mean"),
                special["mask_token_id"],
            )
        except Exception as exc:
            if settings.quantize != "fp16":
                raise
            skipped = f"the fp16 ONNX model failed to run here: {str(exc)[:300]}"
    return report.build(
        task=task,
        precision=settings.precision,
        optimization=applied,
        samples=str(settings.calibration) if settings.calibration else "built-in",
        n_samples=len(samples),
        max_length=max_length,
        batch_size=settings.batch_size,
        provider=provider,
        vs_pytorch=metrics.get(("pytorch", "onnx")),
        vs_fp32_onnx=metrics.get(("onnx_fp32", "onnx")),
        serving=None
        if serving is None
        else {
            "backend": serving[0],
            "vs_pytorch": metrics.get(("pytorch", "serving")),
            "vs_onnx": metrics.get(("onnx", "serving")),
        },
        speed=speed,
        onnx_bytes=_onnx_bytes(final),
        pytorch_bytes=src.weight_bytes,
        skipped=skipped,
    )


def _onnx_bytes(path: Path) -> int:
    return sum(
        p.stat().st_size
        for p in path.parent.iterdir()
        if p.is_file() and p.name.startswith(path.name)
    )


def _place_model(final: Path, staging: Path) -> dict[str, Any]:
    """Move the final graph to ``staging/model.onnx``; models over 2 GB keep one external data file."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    proto = onnx.load(str(final), load_external_data=False)
    external = any(uses_external_data(t) for t in proto.graph.initializer)
    if not external and final.stat().st_size < TWO_GB:
        shutil.move(str(final), staging / "model.onnx")
        return {}
    proto = onnx.load(str(final))
    onnx.save_model(
        proto,
        str(staging / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=EXTERNAL_DATA,
    )
    return {"external_data": EXTERNAL_DATA}


def _io_names(path: Path) -> tuple[list[str], list[str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers], [
        o.name for o in graph.output
    ]


def _check_output(settings: ExportSettings) -> None:
    out = settings.output
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output {out} exists and is a file")
    if out.is_dir() and any(out.iterdir()):
        if not settings.force:
            raise OutputExistsError(
                f"output directory {out} is not empty; use --force to replace it"
            )
        resolved = out.resolve()
        protected = {Path("/"), Path.home().resolve(), Path.cwd().resolve()}
        if resolved in protected or resolved in Path.cwd().resolve().parents:
            raise OutputExistsError(
                f"refusing to replace {resolved} with --force; choose a dedicated output directory"
            )


def _replace(staging: Path, output: Path) -> None:
    if output.is_dir():
        shutil.rmtree(output)
    os.replace(staging, output)


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"
