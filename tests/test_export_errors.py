"""Exporter errors and decisions: every failure gives a clear ``error: ...`` line, exit 2, no traceback.

The CLI cases run ``python -m exasol_mlflow_server export ...`` in a subprocess; they all fail
before (or instead of) the slow conversion. Task inference, pooling, presets, settings and the
quality gate are checked in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from exasol_mlflow_server.exporter import report, tasks
from exasol_mlflow_server.exporter.errors import (
    InvalidModelError,
    InvalidSettingError,
    UnknownTaskError,
)
from exasol_mlflow_server.exporter.quantize import detect_preset
from exasol_mlflow_server.exporter.settings import ExportSettings, from_args, from_env

from exasol_mlflow_server import fixtures

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    cmd = [sys.executable, "-m", "exasol_mlflow_server", "export", *args, "--quiet"]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=REPO, timeout=600)


def assert_clean_error(
    proc: subprocess.CompletedProcess[str], *fragments: str, code: int = 2
) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    line = next(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    for fragment in fragments:
        assert fragment in line, line
    return line


def copy_model(src: Path, dest: Path, skip: tuple[str, ...] = ()) -> Path:
    dest.mkdir(parents=True)
    for path in src.iterdir():
        if path.is_file() and path.name not in skip and not path.name.startswith("."):
            (dest / path.name).symlink_to(path)
    return dest


# ---- CLI error cases ----------------------------------------------------------------------------
def test_unknown_task(tmp_path: Path, minilm_dir: Path) -> None:
    proc = run_cli(str(minilm_dir), "--task", "summarisation", "--output", str(tmp_path / "out"))
    assert_clean_error(proc, "unknown task 'summarisation'", "feature-extraction")


def test_missing_model_directory(tmp_path: Path) -> None:
    proc = run_cli(str(tmp_path / "no-such-model"), "--output", str(tmp_path / "out"))
    assert_clean_error(proc, "no-such-model", "does not exist")


def test_directory_without_config(tmp_path: Path, minilm_dir: Path) -> None:
    model = copy_model(minilm_dir, tmp_path / "model", skip=("config.json",))
    proc = run_cli(str(model), "--output", str(tmp_path / "out"))
    assert_clean_error(proc, "config.json is missing")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_weights(tmp_path: Path, minilm_dir: Path, damage: str) -> None:
    model = copy_model(minilm_dir, tmp_path / "model", skip=("model.safetensors",))
    if damage == "garbage":
        data = b"\xff" * 8 + b"this is not a safetensors file" * 10
    else:  # a download that stopped half-way: valid header, tensor data missing
        data = (minilm_dir / "model.safetensors").read_bytes()[:1_000_000]
    (model / "model.safetensors").write_bytes(data)
    proc = run_cli(str(model), "--output", str(tmp_path / "out"))
    assert_clean_error(
        proc, "model.safetensors", "corrupt", *(["truncated"] if damage == "truncated" else [])
    )


def test_directory_without_weights(tmp_path: Path, minilm_dir: Path) -> None:
    model = copy_model(minilm_dir, tmp_path / "model", skip=("model.safetensors",))
    proc = run_cli(str(model), "--output", str(tmp_path / "out"))
    assert_clean_error(proc, "no model weights")


def test_output_not_empty(tmp_path: Path, minilm_dir: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    proc = run_cli(str(minilm_dir), "--output", str(out))
    assert_clean_error(proc, str(out), "not empty", "--force")
    assert (out / "keep.txt").read_text() == "precious"


def test_not_enough_disk(tmp_path: Path, minilm_dir: Path) -> None:
    proc = run_cli(
        str(minilm_dir), "--output", str(tmp_path / "out"), env={"EMS_EXPORT_DISK_FACTOR": "1e9"}
    )
    assert_clean_error(proc, "not enough disk space", "MB free")
    assert not (tmp_path / "out").exists()


def test_hub_unreachable(tmp_path: Path) -> None:
    repo_id = "sentence-transformers/all-MiniLM-L6-v2"
    proc = run_cli(
        repo_id,
        "--output",
        str(tmp_path / "out"),
        env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")},
    )
    assert_clean_error(proc, repo_id, "unreachable", "local directory")


def test_unsupported_architecture(tmp_path: Path, minilm_dir: Path) -> None:
    from transformers import ErnieConfig, ErnieForSequenceClassification

    config = ErnieConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )
    model_dir = tmp_path / "ernie"
    ErnieForSequenceClassification(config).save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, model_dir / name)
    proc = run_cli(str(model_dir), "--output", str(tmp_path / "out"))
    assert_clean_error(proc, "cannot export model type 'ernie'")


def test_no_tokenizer(tmp_path: Path, minilm_dir: Path) -> None:
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
    model = copy_model(minilm_dir, tmp_path / "model", skip=names)
    proc = run_cli(str(model), "--output", str(tmp_path / "out"))
    assert_clean_error(proc, "tokenizer")
    assert not (tmp_path / "out").exists()


def test_zero_shot_needs_nli_labels_and_failure_keeps_old_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old export")
    model = fixtures.task_model_dir("text-classification")
    proc = run_cli(
        str(model), "--task", "zero-shot-classification", "--output", str(out), "--force"
    )
    assert_clean_error(proc, "entailment", "NEGATIVE")
    assert (out / "old.txt").read_text() == "old export"  # --force replaces only on success
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging directory left behind


def test_invalid_settings(tmp_path: Path, minilm_dir: Path) -> None:
    proc = run_cli(str(minilm_dir), "--optimize", "O4", "--output", str(tmp_path / "out"))
    assert_clean_error(proc, "O4", "--quantize fp16")
    proc = run_cli(str(minilm_dir))
    assert_clean_error(proc, "--output is required")
    proc = run_cli(
        str(minilm_dir), "--output", str(tmp_path / "out"), env={"EMS_EXPORT_MAX_LENGTH": "lots"}
    )
    assert_clean_error(proc, "EMS_EXPORT_MAX_LENGTH", "'lots'")


@pytest.mark.slow
def test_quality_gate_fails_with_exit_3_and_keeps_the_model(
    tmp_path: Path, minilm_dir: Path
) -> None:
    calibration = tmp_path / "short.txt"
    calibration.write_text("ok\nno\nHello world\nParis\n")
    out = tmp_path / "out"
    proc = run_cli(
        str(minilm_dir),
        "--output",
        str(out),
        "--min-quality",
        "0.9999",
        "--calibration",
        str(calibration),
    )
    line = assert_clean_error(proc, "quality gate failed", "cosine_min", "0.9999", str(out), code=3)
    assert "below" in line
    assert "gate: cosine_min >= 0.9999: FAILED" in proc.stdout
    quality = json.loads((out / "quality.json").read_text())
    assert quality["gate"]["passed"] is False and quality["gate"]["metric"] == "cosine_min"
    assert quality["n_samples"] == 4
    assert (out / "MLmodel").is_file() and (out / "model.onnx").is_file()


# ---- in-process decisions -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("architecture", "id2label", "expected"),
    [
        ("BertModel", None, "feature-extraction"),
        (
            "BertForSequenceClassification",
            {"0": "NEGATIVE", "1": "POSITIVE"},
            "text-classification",
        ),
        (
            "BertForSequenceClassification",
            {"0": "contradiction", "1": "neutral", "2": "entailment"},
            "zero-shot-classification",
        ),
        (
            "DebertaV2ForSequenceClassification",
            {"0": "ENTAILMENT", "1": "NOT_ENTAILMENT"},
            "zero-shot-classification",
        ),
        ("BertForTokenClassification", {"0": "O", "1": "B-PER"}, "token-classification"),
        ("RobertaForQuestionAnswering", None, "question-answering"),
        ("BertForMaskedLM", None, "fill-mask"),
    ],
)
def test_infer_task_from_architecture(
    tmp_path: Path, architecture: str, id2label: dict | None, expected: str
) -> None:
    config = {"model_type": "bert", "architectures": [architecture]}
    if id2label:
        config["id2label"] = id2label
    assert tasks.infer_task(config, tmp_path) == expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]},
            "text2text-generation",
        ),
        ({"model_type": "marian", "architectures": ["MarianMTModel"]}, "translation"),
        (
            {
                "model_type": "bart",
                "architectures": ["BartForConditionalGeneration"],
                "task_specific_params": {"summarization": {"num_beams": 4}},
            },
            "summarization",
        ),
        ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "text-generation"),
        ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "text-generation"),
    ],
)
def test_infer_generative_tasks(tmp_path: Path, config: dict, expected: str) -> None:
    config = {
        "is_encoder_decoder": config["model_type"] != "gpt2"
        and "CausalLM" not in config["architectures"][0],
        **config,
    }
    assert tasks.infer_task(config, tmp_path) == expected
    assert tasks.split_task("translation_en_to_de") == ("translation", "translation_en_to_de")


def test_infer_task_sentence_transformers_dir_and_failure(tmp_path: Path, minilm_dir: Path) -> None:
    assert (
        tasks.infer_task({"architectures": ["BertForMaskedLM"]}, minilm_dir) == "feature-extraction"
    )
    with pytest.raises(UnknownTaskError, match=r"ViTForImageClassification.*--task"):
        tasks.infer_task({"architectures": ["ViTForImageClassification"]}, tmp_path)
    with pytest.raises(UnknownTaskError, match="--task"):
        tasks.infer_task({}, tmp_path)


def test_seeded_models_infer_their_task() -> None:
    for task in fixtures.TASK_MODELS:
        path = fixtures.task_model_dir(task)
        config = json.loads((path / "config.json").read_text())
        assert tasks.infer_task(config, path) == task


def test_pooling_config(tmp_path: Path, minilm_dir: Path) -> None:
    assert tasks.pooling_config(minilm_dir) == {"mode": "mean", "normalize": True}
    assert tasks.pooling_config(tmp_path) == {"mode": "mean", "normalize": False}  # plain HF dir
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True})
    )
    assert tasks.pooling_config(tmp_path) == {"mode": "cls", "normalize": False}
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_sqrt_len_tokens": True})
    )
    with pytest.raises(InvalidModelError, match="mean_sqrt_len"):
        tasks.pooling_config(tmp_path)


def test_zero_shot_ids() -> None:
    assert tasks.zero_shot_ids(["contradiction", "neutral", "entailment"]) == {
        "entailment_id": 2,
        "contradiction_id": 0,
    }
    assert tasks.zero_shot_ids(["ENTAILMENT", "NOT_ENTAILMENT"]) == {
        "entailment_id": 0,
        "contradiction_id": 1,
    }
    with pytest.raises(UnknownTaskError, match="entailment"):
        tasks.zero_shot_ids(["NEGATIVE", "POSITIVE"])


@pytest.mark.parametrize(
    ("flags", "machine", "expected"),
    [
        ("fpu sse avx2 avx512f avx512bw avx512_vnni", "x86_64", "avx512_vnni"),
        ("fpu sse avx2 avx512f avx512bw", "x86_64", "avx512"),
        ("fpu sse avx2 fma", "x86_64", "avx2"),
        ("fp asimd", "aarch64", "arm64"),
    ],
)
def test_detect_preset(flags: str, machine: str, expected: str) -> None:
    cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n"
    assert detect_preset(cpuinfo, machine) == expected


def test_settings_env_and_cli_precedence(tmp_path: Path) -> None:
    env = {
        "EMS_EXPORT_MODEL": "org/model",
        "EMS_EXPORT_OUTPUT": str(tmp_path / "env-out"),
        "EMS_EXPORT_QUANTIZE": "none",
        "EMS_EXPORT_MAX_LENGTH": "128",
        "EMS_EXPORT_PER_TENSOR": "yes",
        "EMS_EXPORT_FORCE": "1",
    }
    assert from_env(env)["per_tensor"] is True
    args = argparse.Namespace(
        model=None, output=str(tmp_path / "cli-out"), quantize="int8", per_tensor=None, force=None
    )
    settings = from_args(args, env)
    assert settings.model == "org/model" and settings.output == tmp_path / "cli-out"
    assert settings.quantize == "int8" and settings.max_length == 128
    assert settings.per_channel is False and settings.force is True
    defaults = ExportSettings(model="m", output=tmp_path)
    assert (defaults.quantize, defaults.optimize, defaults.per_channel, defaults.task) == (
        "int8",
        "O2",
        True,
        None,
    )
    with pytest.raises(InvalidSettingError, match="EMS_EXPORT_FORCE"):
        from_env({"EMS_EXPORT_FORCE": "maybe"})
    with pytest.raises(UnknownTaskError):
        ExportSettings(model="m", output=tmp_path, task="summarisation")
    with pytest.raises(InvalidSettingError, match="fp16"):
        ExportSettings(model="m", output=tmp_path, quantize="fp16", optimize="O0")
    with pytest.raises(InvalidSettingError, match="min-quality"):
        ExportSettings(model="m", output=tmp_path, min_quality=2.0)


def test_quality_gate_and_table() -> None:
    quality = report.build(
        task="text-classification",
        precision="int8",
        optimization="O2",
        samples="built-in",
        n_samples=32,
        max_length=512,
        batch_size=16,
        provider="CPUExecutionProvider",
        vs_pytorch={"max_abs_diff": 0.2, "label_agreement": 0.96875},
        vs_fp32_onnx={"max_abs_diff": 0.2, "label_agreement": 0.96875},
        speed={"pytorch": 10.0, "onnx": 25.0, "onnx_fp32": 12.0},
        onnx_bytes=50_000_000,
        pytorch_bytes=90_000_000,
    )
    assert report.apply_gate(quality, None) is None and quality["gate"] is None
    assert report.apply_gate(quality, 0.9) is None and quality["gate"]["passed"] is True
    message = report.apply_gate(quality, 0.99)
    assert message and "label_agreement = 0.9688 is below --min-quality 0.99" in message
    table = report.format_table(quality)
    assert "label_agreement" in table and "x2.5" in table and "FAILED" in table


def test_fast_tokenizer_is_created_when_tokenizer_json_is_missing(
    tmp_path: Path, minilm_dir: Path
) -> None:
    from exasol_mlflow_server.exporter import source

    model = copy_model(minilm_dir, tmp_path / "model", skip=("tokenizer.json",))
    tokenizer, tokenizer_dir = source.load_tokenizer(source.resolve(str(model)), tmp_path / "work")
    assert tokenizer.is_fast and (tokenizer_dir / "tokenizer.json").is_file()
    assert tokenizer("Hello world")["input_ids"] == [101, 7592, 2088, 102]
