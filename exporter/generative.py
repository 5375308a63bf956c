"""Generative export: encoder-decoder and decoder-only models with a KV cache, and their report.

optimum-onnx 0.1.0's ``*-with-past`` export writes, for an encoder-decoder,
``encoder_model.onnx``, ``decoder_model.onnx``, ``decoder_with_past_model.onnx`` and
``decoder_model_merged.onnx`` (both decoders in one graph behind an ``If`` on the boolean input
``use_cache_branch``, the weights once); for a decoder-only model one ``model.onnx`` whose
``past_key_values.*`` may be empty on the first step (``attention_mask`` covers past + new
positions, ``position_ids`` are explicit). We keep the encoder and the merged decoder, or the
one model. ``--quantize int8`` quantises each part dynamically (the encoder models' recipe,
:mod:`.quantize`), ``fp16`` converts each part to float16 including its inputs and outputs (the
cache then lives in fp16; meant for CUDA). Graph optimisation is left to ONNX Runtime at load.

The quality report runs the runtime's own decoding loop (numpy + ONNX Runtime, all validation
texts in one batch, so padding is exercised) against transformers ``generate`` (one text at a
time) with the model's generation settings, greedy, at most ``QUALITY_NEW_TOKENS`` new tokens:
``exact_match`` (rows whose tokens are identical) and ``token_agreement`` (equal tokens per
position, over the longer of the two sequences).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from exasol_mlflow_server.exporter import mlmodel, quantize, report, source
from exasol_mlflow_server.exporter.errors import ConversionError
from exasol_mlflow_server.exporter.samples import builtin_samples, load_samples
from exasol_mlflow_server.runtime.tasks import task_spec

ENCODER_DECODER_FILES = {"encoder": "encoder_model.onnx", "decoder": "decoder_model_merged.onnx"}
DECODER_ONLY_FILES = {"decoder": "model.onnx"}
QUALITY_NEW_TOKENS = 32
QUALITY_TEXTS = 24
SAMPLING_KEYS = ("do_sample", "temperature", "top_k", "top_p", "max_length")
DEFAULT_KEYS = (
    "max_new_tokens", "max_length", "min_new_tokens", "min_length", "num_beams", "do_sample",
    "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size",
    "length_penalty", "early_stopping", "bad_words_ids", "forced_bos_token_id",
    "forced_eos_token_id",
)  # fmt: skip


def task_params(config: dict[str, Any], task: str, task_key: str | None) -> dict[str, Any]:
    """``task_specific_params`` for the pipeline task (``translation_en_to_de`` picks that pair;
    plain ``translation`` the model's only translation entry), as transformers' pipeline applies them."""
    tsp = config.get("task_specific_params") or {}
    if task_key and task_key in tsp:
        return dict(tsp[task_key])
    if task == "translation":
        pairs = [k for k in tsp if k.startswith("translation")]
        return dict(tsp[pairs[0]]) if len(pairs) == 1 else {}
    return dict(tsp.get(task) or {})


def generation_defaults(task: str, gen: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The settings a request gets when it names none, as transformers' pipeline for ``task``
    (which MLflow's transformers flavor runs) resolves them: the pipeline's own defaults
    (text2text/translation/summarization: ``max_new_tokens=256, num_beams=4``; text-generation:
    ``max_new_tokens=256, do_sample=True, temperature=0.7``), overridden by what the model's
    ``generation_config.json`` changes from transformers' defaults (a changed ``max_length``
    wins over the pipeline's ``max_new_tokens``), overridden by ``task_specific_params``."""
    from transformers import GenerationConfig, Text2TextGenerationPipeline, TextGenerationPipeline

    pipe = TextGenerationPipeline if task == "text-generation" else Text2TextGenerationPipeline
    base = pipe._default_generation_config
    plain = GenerationConfig()
    defaults = {k: getattr(base, k) for k in DEFAULT_KEYS if getattr(base, k) != getattr(plain, k)}
    changed = {k: getattr(gen, k, None) for k in DEFAULT_KEYS}
    changed = {k: v for k, v in changed.items() if v != getattr(plain, k, None)}
    defaults.update(changed)
    if "max_length" in changed and "max_new_tokens" not in changed:
        defaults.pop("max_new_tokens", None)
    defaults.update({k: v for k, v in params.items() if k in DEFAULT_KEYS})
    if "max_length" in params and "max_new_tokens" not in params:
        defaults.pop("max_new_tokens", None)
    return {k: v for k, v in defaults.items() if v is not None}


def build(
    settings: Any, plan: Any, staging: Path, steps: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Export ``plan.src`` for generative ``plan.task`` into ``staging``; returns the manifest,
    the quality report and the MLmodel dict."""
    from exasol_mlflow_server.exporter import onnx_export

    src, task = plan.src, plan.task
    work = staging / ".work"
    tokenizer, tokenizer_dir = source.load_tokenizer(src, work)
    steps.stage(f"exporting {task} to ONNX (with KV cache)")
    model = onnx_export.load_model(src, task)
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    fp32_dir = work / "fp32"
    onnx_export.run_export(
        model, task_spec(task).export_task + "-with-past", fp32_dir, settings.opset
    )
    files = ENCODER_DECODER_FILES if encoder_decoder else DECODER_ONLY_FILES
    for name in files.values():
        if not (fp32_dir / name).is_file():
            raise ConversionError(f"the ONNX export did not produce {name}")
    steps.stage("graph optimisation: left to ONNX Runtime at load")

    quantization = None
    final_dir = fp32_dir
    if settings.quantize == "int8":
        preset = settings.preset or quantize.detect_preset()
        steps.stage(f"quantising each part to INT8 (dynamic, {preset})")
        final_dir = work / "int8"
        final_dir.mkdir(parents=True)
        for name in files.values():
            path, quantization = quantize.quantize(
                fp32_dir / name, work / "int8-parts" / name, preset, settings.per_channel
            )
            shutil.move(str(path), final_dir / name)
    elif settings.quantize == "fp16":
        steps.stage("converting each part to fp16 (for CUDA)")
        final_dir = work / "fp16"
        final_dir.mkdir(parents=True)
        if encoder_decoder:  # the converter breaks the merged graph's If: merge the fp16 halves
            _merged_fp16(fp32_dir, final_dir / files["decoder"])
        for name in files.values():
            _to_fp16(fp32_dir / name, final_dir / name)
    else:
        steps.stage("quantising: skipped (fp32)")
    for name in files.values():
        shutil.copy2(final_dir / name, staging / name)

    source.copy_tokenizer(tokenizer_dir, src, staging)
    texts = _texts(settings, task)
    params = task_params(src.config, task, getattr(plan, "task_key", None))
    generation = _generation_section(task, src, model, tokenizer, settings, staging, files, params)
    steps.stage(f"validating against transformers generate ({len(texts)} texts)")
    del model  # the export patched it (T5 stacks keep use_cache): compare with a fresh copy
    model = onnx_export.load_model(src, task)
    quality = _quality(settings, task, model, tokenizer, texts, staging, fp32_dir, generation, src)
    del model

    steps.stage("writing MLflow model")
    inputs, outputs = _io_names(staging / files["decoder"])
    manifest = mlmodel.build_manifest(
        task=task,
        model_file=files["decoder"],
        tokenizer_file="tokenizer.json",
        max_length=generation["max_input_tokens"],
        precision=settings.precision,
        optimization="O0",
        quantization=quantization,
        inputs=inputs,
        outputs=outputs,
        special_tokens=source.special_tokens(tokenizer),
        provider_hints=mlmodel.provider_hints(settings.precision),
        source={
            "model": src.ref if src.from_hub else str(src.path),
            "model_type": src.model_type,
            "architecture": src.architecture,
        },
        versions=mlmodel.versions(),
        generation=generation,
    )
    mlmodel.write_manifest(staging, manifest)
    ml = mlmodel.write_mlflow_files(staging, manifest, None, {})
    (staging / "quality.json").write_text(_json(quality))
    shutil.rmtree(work, ignore_errors=True)
    return manifest, quality, ml


def _texts(settings: Any, task: str) -> list[str]:
    samples = (
        load_samples(settings.calibration, task) if settings.calibration else builtin_samples(task)
    )
    return [s["text"] for s in samples][:QUALITY_TEXTS]


def _generation_section(
    task: str, src: Any, model: Any, tokenizer: Any, settings: Any, staging: Path, files: dict[str, str],
    params: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The manifest's ``generation`` dict: files, special ids, cache shape, limits, defaults."""
    import onnx

    gen = model.generation_config
    decoder = onnx.load(str(staging / files["decoder"]), load_external_data=False).graph
    past = [i for i in decoder.input if i.name.startswith("past_key_values.")]
    dims = [d.dim_value for d in past[0].type.tensor_type.shape.dim]
    layers = len({i.name.split(".")[1] for i in past})
    hidden = None
    if "encoder" in files:
        encoder = onnx.load(str(staging / files["encoder"]), load_external_data=False).graph
        hidden = encoder.output[0].type.tensor_type.shape.dim[2].dim_value
    config = src.config
    positions = config.get("n_positions") or config.get("max_position_embeddings")
    max_input = source.max_length(src, tokenizer, settings.max_length)
    if "encoder" not in files and isinstance(positions, int):
        max_input = min(max_input, positions - 1)
    eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
    pad = gen.pad_token_id if gen.pad_token_id is not None else tokenizer.pad_token_id
    defaults = generation_defaults(task, gen, params)
    return {
        "architecture": "encoder-decoder" if "encoder" in files else "decoder-only",
        "files": dict(files),
        "eos_token_id": eos,
        "pad_token_id": pad if pad is not None else (eos[0] if isinstance(eos, list) else eos),
        "decoder_start_token_id": gen.decoder_start_token_id,
        "bos_token_id": gen.bos_token_id,
        "num_layers": layers,
        "num_kv_heads": dims[1],
        "head_dim": dims[3],
        "hidden_size": hidden,
        "cache_dtype": "float16" if settings.quantize == "fp16" else "float32",
        "max_input_tokens": int(max_input),
        "max_positions": positions if "encoder" not in files else None,
        "defaults": defaults,
        "prefix": params.get("prefix") or config.get("prefix") or "",
        "clean_up_tokenization_spaces": bool(
            getattr(tokenizer, "clean_up_tokenization_spaces", False)
        ),
    }


def _quality(
    settings: Any, task: str, model: Any, tokenizer: Any, texts: list[str], staging: Path,
    fp32_dir: Path, generation: dict[str, Any], src: Any,
) -> dict[str, Any]:  # fmt: skip
    run = {k: v for k, v in generation["defaults"].items() if k not in SAMPLING_KEYS}
    run.update(max_new_tokens=QUALITY_NEW_TOKENS, do_sample=False)
    reference, torch_s = _reference(model, tokenizer, texts, generation, run)
    tok = staging / "tokenizer.json"
    fp16 = settings.quantize == "fp16"
    ours, onnx_s, provider, skipped = _ours(staging, tok, texts, generation, run, fp16)
    vs_pytorch = agreement(reference, ours) if ours is not None else None
    vs_fp32 = None
    if settings.quantize != "none" and ours is not None:
        fp32, _, _, _ = _ours(fp32_dir, tok, texts, generation, run, False)
        vs_fp32 = agreement(fp32, ours)
    rows = len(texts)
    speed = None
    if ours is not None:
        speed = {"pytorch": round(rows / torch_s, 1), "onnx": round(rows / onnx_s, 1)}
    out = report.build(
        task=task,
        precision=settings.precision,
        optimization="O0",
        samples=str(settings.calibration) if settings.calibration else "built-in",
        n_samples=rows,
        max_length=generation["max_input_tokens"],
        batch_size=rows,
        provider=provider,
        vs_pytorch=vs_pytorch,
        vs_fp32_onnx=vs_fp32,
        speed=speed,
        onnx_bytes=sum((staging / f).stat().st_size for f in generation["files"].values()),
        pytorch_bytes=src.weight_bytes,
        skipped=skipped,
    )
    out["generation"] = run
    return out


def agreement(reference: list[list[int]], candidate: list[list[int]]) -> dict[str, float]:
    """``exact_match`` (identical rows) and ``token_agreement`` (equal tokens per position)."""
    exact = sum(a == b for a, b in zip(reference, candidate, strict=True))
    total = sum(max(len(a), len(b)) for a, b in zip(reference, candidate, strict=True))
    same = sum(
        sum(x == y for x, y in zip(a, b, strict=False))
        for a, b in zip(reference, candidate, strict=True)
    )
    return {
        "exact_match": round(exact / max(1, len(reference)), 6),
        "token_agreement": round(same / max(1, total), 6),
    }


def _reference(
    model: Any, tokenizer: Any, texts: list[str], generation: dict[str, Any], run: dict[str, Any]
) -> tuple[list[list[int]], float]:
    """transformers ``generate``, one text at a time, cut after the first EOS."""
    import torch

    eos = generation["eos_token_id"]
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    start = time.perf_counter()
    out = []
    for text in texts:
        enc = tokenizer([generation["prefix"] + text], return_tensors="pt")
        enc.pop("token_type_ids", None)
        with torch.inference_mode():
            seq = model.generate(
                **enc,
                **run,
                pad_token_id=generation["pad_token_id"],
            )[0].tolist()
        seq = (
            seq[1:]
            if generation["architecture"] == "encoder-decoder"
            else seq[enc["input_ids"].shape[1] :]
        )
        cut = next((i for i, t in enumerate(seq) if t in eos_ids), None)
        out.append(seq if cut is None else seq[: cut + 1])
    return out, time.perf_counter() - start


def _ours(
    model_dir: Path, tokenizer_file: Path, texts: list[str], generation: dict[str, Any],
    run: dict[str, Any], prefer_cuda: bool,
) -> tuple[list[list[int]] | None, float, str | None, str | None]:  # fmt: skip
    """The runtime's decoding loop on the exported parts (all texts in one batch)."""
    from exasol_mlflow_server.runtime.generation import open_model
    from exasol_mlflow_server.runtime.generation.batch import RowRequest
    from exasol_mlflow_server.runtime.generation.config import ModelFacts, build_config
    from exasol_mlflow_server.runtime.generation.scheduler import DirectGenerator
    from exasol_mlflow_server.runtime.tokenize import TextTokenizer

    facts = ModelFacts.from_manifest(generation)
    try:
        lm = open_model(model_dir, facts, device="auto" if prefer_cuda else "cpu", threads=0)
    except Exception as exc:  # an fp16 graph may not load on this machine: record it
        return None, 0.0, None, f"the ONNX model could not run here: {str(exc)[:300]}"
    tokenizer = TextTokenizer(tokenizer_file, 10**6)
    cfg, _ = build_config(facts, run, QUALITY_NEW_TOKENS)
    requests = []
    for enc in tokenizer.encode([facts.prefix + t for t in texts]):
        prompt = list(enc.ids)
        start = prompt
        if facts.is_encoder_decoder:
            first = facts.decoder_start_token_id
            start = [facts.pad_token_id if first is None else int(first)]
        requests.append(RowRequest(prompt, start, cfg.for_prompt(len(start))))
    began = time.perf_counter()
    try:
        result = DirectGenerator(lm).execute(requests)
    except Exception as exc:
        if not prefer_cuda:
            raise
        return None, 0.0, None, f"the fp16 ONNX model failed to run here: {str(exc)[:300]}"
    runner = getattr(lm, "decoder", None) or lm.runner
    return result, time.perf_counter() - began, runner.provider, None


def _to_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if dst.is_file():  # already written (the merged decoder from its fp16 halves)
        return
    try:
        converted = convert_float_to_float16(onnx.load(str(src)), keep_io_types=False)
    except Exception as exc:
        raise ConversionError(f"fp16 conversion of {src.name} failed: {str(exc)[:300]}") from exc
    onnx.save(converted, str(dst))


def _merged_fp16(fp32_dir: Path, target: Path) -> None:
    from optimum.onnx import merge_decoders

    halves = [
        target.parent / f"{n}.fp16.onnx" for n in ("decoder_model", "decoder_with_past_model")
    ]
    for half in halves:
        _to_fp16(fp32_dir / half.name.replace(".fp16", ""), half)
    try:
        merge_decoders(
            decoder=halves[0], decoder_with_past=halves[1], save_path=target, strict=False
        )
    except Exception as exc:
        raise ConversionError(f"merging the fp16 decoders failed: {str(exc)[:300]}") from exc
    for half in halves:
        half.unlink()


def _io_names(path: Path) -> tuple[list[str], list[str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [i.name for i in graph.input], [o.name for o in graph.output]


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"
