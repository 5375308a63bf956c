"""The exporter on real models: all-MiniLM-L6-v2 (fp32, INT8, fp16) and the seeded task models.

Exports come from conftest's cached ``export_dir(task, quantize)``; every check runs the artifact
with plain ONNX Runtime (and the copied ``tokenizer.json``) against transformers/PyTorch.
Full pipeline parity (post-processing) is the runtime's tests' job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from exasol_mlflow_server.exporter.samples import BUILTIN_TEXTS
from exasol_mlflow_server.runtime.manifest import MANIFEST_KEYS
from exasol_mlflow_server.runtime.tasks import task_class, task_spec

from exasol_mlflow_server import fixtures

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SEEDED_TASKS = fixtures.TASK_MODELS
ALL_TASKS = ("feature-extraction", *SEEDED_TASKS)
QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QAttention", "DynamicQuantizeMatMul"}


# ---- helpers ----------------------------------------------------------------------------------
def session(model_dir: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])


def manifest_of(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "exasol_model.json").read_text())


def onnx_embeddings(model_dir: Path, texts: list[str]) -> np.ndarray:
    """Mean-pooled, normalised embeddings from the artifact alone (tokenizer.json + model.onnx)."""
    from tokenizers import Tokenizer

    manifest = manifest_of(model_dir)
    tok = Tokenizer.from_file(str(model_dir / manifest["tokenizer_file"]))
    tok.no_padding()
    tok.enable_truncation(manifest["max_length"])
    tok.enable_padding(pad_id=manifest["special_tokens"]["pad_token_id"])
    sess = session(model_dir)
    names = {i.name for i in sess.get_inputs()}
    out = []
    for start in range(0, len(texts), 16):
        enc = tok.encode_batch(texts[start : start + 16])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = sess.run(["last_hidden_state"], feed)
        out.append(mean_pool_normalize(hidden, mask))
    return np.concatenate(out)


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    vec = (hidden * m).sum(axis=1) / m.sum(axis=1)
    return vec / np.linalg.norm(vec, axis=1, keepdims=True)


def op_types(model_dir: Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(model_dir / "model.onnx")).graph.node)


# ---- all-MiniLM-L6-v2 ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch_minilm_embeddings(minilm_dir: Path) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir).eval()
    enc = tok(BUILTIN_TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state.numpy()
    return mean_pool_normalize(hidden, enc["attention_mask"].numpy())


def test_minilm_fp32_matches_pytorch(export_dir, torch_minilm_embeddings: np.ndarray) -> None:
    model_dir = export_dir("feature-extraction", "none")
    emb = onnx_embeddings(model_dir, BUILTIN_TEXTS)
    cosine = np.sum(emb * torch_minilm_embeddings, axis=1)
    assert cosine.min() >= 0.9999, cosine.min()
    quality = json.loads((model_dir / "quality.json").read_text())
    assert quality["task"] == "feature-extraction" and quality["precision"] == "fp32"
    assert quality["n_samples"] == len(BUILTIN_TEXTS)
    assert quality["cosine_min"] >= 0.9999 and quality["max_abs_diff"] < 1e-3
    assert quality["size_bytes"]["onnx"] > 0 and quality["size_bytes"]["pytorch"] > 0
    assert quality["speed_rows_per_s"]["onnx"] > 0 and quality["speed_rows_per_s"]["pytorch"] > 0
    assert quality["vs_fp32_onnx"] is None


def test_minilm_int8_is_quantized_smaller_and_close(export_dir) -> None:
    fp32_dir = export_dir("feature-extraction", "none")
    int8_dir = export_dir("feature-extraction", "int8")
    ops = op_types(int8_dir)
    assert QUANTIZED_OPS & set(ops), ops
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    assert (int8_dir / "model.onnx").stat().st_size < 0.75 * (
        fp32_dir / "model.onnx"
    ).stat().st_size

    cosine = np.sum(
        onnx_embeddings(int8_dir, BUILTIN_TEXTS) * onnx_embeddings(fp32_dir, BUILTIN_TEXTS), axis=1
    )
    assert cosine.mean() >= 0.99, cosine.mean()
    assert cosine.min() >= 0.95, cosine.min()

    manifest = manifest_of(int8_dir)
    assert manifest["precision"] == "int8" and manifest["optimization"] == "O2"
    quant = manifest["quantization"]
    assert quant["mode"] == "dynamic" and quant["per_channel"] is True
    assert quant["preset"] in ("avx2", "avx512", "avx512_vnni", "arm64")
    assert manifest["provider_hints"]["preferred"][0] == "CPUExecutionProvider"

    quality = json.loads((int8_dir / "quality.json").read_text())
    assert quality["precision"] == "int8"
    assert quality["vs_fp32_onnx"]["cosine_mean"] >= 0.99
    assert quality["cosine_mean"] >= 0.99  # vs PyTorch
    assert quality["primary"] == {"metric": "cosine_min", "value": quality["cosine_min"]}
    assert quality["size_bytes"]["onnx"] < quality["size_bytes"]["pytorch"]


def test_fp16_export_is_a_valid_fp16_graph(export_dir) -> None:
    import onnx

    model_dir = export_dir("feature-extraction", "fp16")
    proto = onnx.load(str(model_dir / "model.onnx"))
    onnx.checker.check_model(proto)
    dtypes = Counter(t.data_type for t in proto.graph.initializer)
    assert dtypes[onnx.TensorProto.FLOAT16] > dtypes[onnx.TensorProto.FLOAT]
    manifest = manifest_of(model_dir)
    assert manifest["precision"] == "fp16" and manifest["quantization"] is None
    assert manifest["provider_hints"]["preferred"][0] == "CUDAExecutionProvider"
    quality = json.loads((model_dir / "quality.json").read_text())
    if quality["skipped"] is None:  # it ran (CUDA, or ORT's CPU fallback kernels)
        assert quality["cosine_min"] >= 0.999


def test_manifest_has_exactly_the_contract_keys(export_dir) -> None:
    manifest = manifest_of(export_dir("feature-extraction", "none"))
    assert tuple(manifest) == MANIFEST_KEYS
    assert manifest["format_version"] == 1
    assert manifest["task"] == "feature-extraction"
    assert manifest["model_file"] == "model.onnx" and manifest["tokenizer_file"] == "tokenizer.json"
    assert manifest["max_length"] == 256  # sentence_bert_config.json max_seq_length
    assert manifest["pooling"] == {"mode": "mean", "normalize": True}  # 1_Pooling + 2_Normalize
    assert manifest["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest["outputs"] == ["last_hidden_state"]
    assert (
        manifest["labels"] is None
        and manifest["zero_shot"] is None
        and manifest["quantization"] is None
    )
    assert manifest["special_tokens"] == {
        "pad_token_id": 0,
        "mask_token": "[MASK]",
        "mask_token_id": 103,
        "cls_token_id": 101,
        "sep_token_id": 102,
    }
    assert (
        manifest["source"]["model_type"] == "bert"
        and manifest["source"]["architecture"] == "BertModel"
    )
    assert set(manifest["versions"]) == {
        "exasol_mlflow_server",
        "onnxruntime",
        "optimum_onnx",
        "transformers",
        "torch",
    }
    assert manifest["created_at"].endswith("Z")


# ---- seeded task models: raw ONNX outputs vs PyTorch ------------------------------------------
TASK_INPUTS: dict[str, Any] = {
    "text-classification": (
        ["I love this product, it works great.", "Terrible service, never again.", "It is okay."],
        None,
    ),
    "token-classification": (
        [
            "Angela Merkel met Emmanuel Macron in Brussels.",
            "Exasol is based in Nuremberg, Germany.",
        ],
        None,
    ),
    "question-answering": (
        ["Where is Exasol based?", "What does the model predict?"],
        [
            "Exasol is an analytics database based in Nuremberg.",
            "The model predicts a missing word.",
        ],
    ),
    "zero-shot-classification": (
        ["The match ended with a late goal.", "Parliament passed the budget."],
        ["This example is about sports.", "This example is about politics."],
    ),
    "fill-mask": (["Paris is the [MASK] of France.", "The [MASK] sat on the mat."], None),
}


@pytest.mark.parametrize("task", SEEDED_TASKS)
def test_seeded_task_raw_outputs_match_pytorch(export_dir, task: str) -> None:
    import torch
    from exasol_mlflow_server.exporter.onnx_export import load_model
    from exasol_mlflow_server.exporter.source import resolve
    from transformers import AutoTokenizer

    model_dir = export_dir(task, "none")
    src = resolve(str(fixtures.task_model_dir(task)))
    model = load_model(src, task)
    tok = AutoTokenizer.from_pretrained(model_dir)  # the copied tokenizer files
    texts, pairs = TASK_INPUTS[task]
    enc = tok(texts, pairs, padding=True, truncation=True, return_tensors="np")
    with torch.inference_mode():
        ref = model(**{k: torch.from_numpy(v) for k, v in enc.items()})
    sess = session(model_dir)
    feed = {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    mask = enc["attention_mask"].astype(bool)
    for name, got in zip(names, sess.run(names, feed), strict=True):
        want = getattr(ref, name).numpy()
        assert got.shape == want.shape, name
        if task in ("text-classification", "zero-shot-classification"):
            assert np.abs(got - want).max() < 1e-3, name
            assert (got.argmax(-1) == want.argmax(-1)).all(), name
        elif got.ndim == 3:  # token classification / fill-mask: per real (non-padding) token
            assert np.abs(got - want)[mask].max() < 1e-3, name
            assert (got.argmax(-1)[mask] == want.argmax(-1)[mask]).all(), name
        else:  # question answering start/end logits: argmax over real tokens
            assert np.abs(got - want)[mask].max() < 1e-3, name
            assert (
                np.where(mask, got, -1e9).argmax(-1) == np.where(mask, want, -1e9).argmax(-1)
            ).all()
    quality = json.loads((model_dir / "quality.json").read_text())
    assert quality["primary"]["value"] == 1.0, quality
    assert quality["max_abs_diff"] < 1e-3


def test_task_manifests(export_dir) -> None:
    cls = manifest_of(export_dir("text-classification", "none"))
    assert cls["labels"] == ["NEGATIVE", "POSITIVE"] and cls["outputs"] == ["logits"]
    ner = manifest_of(export_dir("token-classification", "none"))
    assert ner["labels"] == fixtures.NER_LABELS
    qa = manifest_of(export_dir("question-answering", "none"))
    assert qa["outputs"] == ["start_logits", "end_logits"] and qa["labels"] is None
    nli = manifest_of(export_dir("zero-shot-classification", "none"))
    assert nli["labels"] == fixtures.NLI_LABELS
    assert nli["zero_shot"] == {"entailment_id": 2, "contradiction_id": 0}
    mlm = manifest_of(export_dir("fill-mask", "none"))
    assert mlm["special_tokens"]["mask_token"] == "[MASK]" and mlm["outputs"] == ["logits"]
    for manifest in (cls, ner, qa, nli, mlm):
        assert tuple(manifest) == MANIFEST_KEYS and manifest["pooling"] is None
        assert manifest["max_length"] == 512


# ---- the MLflow model ----------------------------------------------------------------------------
# the MLmodel signature's input columns: None = MLflow's one unnamed string column
EXPECTED_COLUMNS = {
    "feature-extraction": [None],
    "text-classification": [None],
    "token-classification": [None],
    "question-answering": ["question", "context"],
    "zero-shot-classification": ["text", "candidate_labels"],
    "fill-mask": [None],
}


@pytest.mark.parametrize("task", ALL_TASKS)
def test_signature_params_are_the_runtime_params(export_dir, task: str) -> None:
    """Names, defaults and order: what MLflow validates is exactly what the runtime parses."""
    mlmodel = yaml.safe_load((export_dir(task, "none") / "MLmodel").read_text())
    params = json.loads(mlmodel["signature"]["params"])
    runtime = task_class(task).params_spec
    assert [(p["name"], p["default"]) for p in params] == [(p.name, p.default) for p in runtime]
    mlflow = pytest.importorskip("mlflow")
    schema = mlflow.models.Model.load(str(export_dir(task, "none"))).signature.params
    assert [p.name for p in schema.params] == [p.name for p in runtime]


@pytest.mark.parametrize("task", ALL_TASKS)
def test_mlmodel_yaml(export_dir, task: str) -> None:
    model_dir = export_dir(task, "none")
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    manifest = manifest_of(model_dir)
    flavor = mlmodel["flavors"]["exasol_onnx"]
    assert flavor.pop("manifest") == "exasol_model.json"
    assert flavor == manifest
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "exasol_mlflow_server.runtime.pyfunc"
    assert pyfunc["env"] == {"virtualenv": "python_env.yaml", "conda": "conda.yaml"}
    assert pyfunc["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert len(mlmodel["model_uuid"]) == 32 and mlmodel["utc_time_created"]
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [c.get("name") for c in inputs] == EXPECTED_COLUMNS[task]
    assert all(c["type"] in ("string", "array") for c in inputs)
    outputs = json.loads(mlmodel["signature"]["outputs"])
    assert [o.get("name") for o in outputs] == [f.name for f in task_spec(task).outputs]
    info = mlmodel["saved_input_example_info"]
    assert info["type"] == "dataframe" and info["pandas_orient"] == "split"
    example = json.loads((model_dir / info["artifact_path"]).read_text())
    assert example["columns"] == list(task_spec(task).example["columns"])
    serving = json.loads((model_dir / info["serving_input_path"]).read_text())
    assert serving == {"dataframe_split": example}
    requirements = (model_dir / "requirements.txt").read_text().splitlines()
    assert requirements[0] == "exasol-mlflow-server==0.1.0"
    assert yaml.safe_load((model_dir / "python_env.yaml").read_text())["dependencies"] == [
        "-r requirements.txt"
    ]
    assert yaml.safe_load((model_dir / "conda.yaml").read_text())["dependencies"]
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "config.json",
    ):
        assert (model_dir / name).is_file(), name
    assert sorted(p.name for p in model_dir.glob("*.onnx*")) == [
        "model.onnx"
    ]  # one file, no external data


@pytest.mark.parametrize(
    "task", ["feature-extraction", "question-answering", "zero-shot-classification"]
)
def test_mlflow_loads_model_signature_and_example(export_dir, task: str) -> None:
    mlflow = pytest.importorskip("mlflow")
    model_dir = export_dir(task, "none")
    model = mlflow.models.Model.load(str(model_dir))
    named = [c for c in EXPECTED_COLUMNS[task] if c is not None]
    assert model.signature.inputs.has_input_names() == bool(named)
    if named:
        assert model.signature.inputs.input_names() == named
    assert model.signature.params is not None
    example = model.load_input_example(str(model_dir))
    assert list(example.columns) == list(task_spec(task).example["columns"])
    assert "exasol_onnx" in model.flavors and "python_function" in model.flavors


def test_mlflow_pyfunc_load_model(export_dir) -> None:
    mlflow = pytest.importorskip("mlflow")
    import importlib.util

    if importlib.util.find_spec("exasol_mlflow_server.runtime.pyfunc") is None:
        pytest.skip(
            "exasol_mlflow_server.runtime.pyfunc (the runtime's pyfunc loader) does not exist yet"
        )
    import pandas as pd

    # fp32: the loader is under test, not int8 (whose rows depend on their batch-mates)
    model_dir = export_dir("feature-extraction", "none")
    model = mlflow.pyfunc.load_model(str(model_dir))
    texts = ["Exasol is an in-memory analytics database.", "Hello world"]
    predictions = np.asarray(model.predict(pd.DataFrame({"text": texts})), dtype=np.float32)
    assert predictions.shape == (2, 384)
    cosine = np.sum(predictions * onnx_embeddings(model_dir, texts), axis=1)
    assert cosine.min() > 0.99999


# ---- the CLI end to end: Hub id (from a local HF cache), flags, calibration file ----------------
def fake_hub_cache(tmp_path: Path, repo_id: str, model_dir: Path) -> Path:
    """A Hugging Face cache holding ``repo_id`` (files symlinked from ``model_dir``)."""
    cache = tmp_path / "hub"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    for path in model_dir.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            target = snapshot / path.relative_to(model_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return cache


def test_cli_export_hub_id_from_cache_with_flags(tmp_path: Path, minilm_dir: Path) -> None:
    repo_id = "sentence-transformers/all-MiniLM-L6-v2"
    cache = fake_hub_cache(tmp_path, repo_id, minilm_dir)
    calibration = tmp_path / "calib.jsonl"
    lines = [json.dumps({"text": t}) for t in BUILTIN_TEXTS[:10]] + BUILTIN_TEXTS[10:14]
    calibration.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "EMS_EXPORT_QUANTIZE": "int8",
    }
    cmd = [sys.executable, "-m", "exasol_mlflow_server", "export", repo_id, "--output", str(out)]
    cmd += [
        "--quantize",
        "none",
        "--optimize",
        "O1",
        "--max-length",
        "128",
        "--calibration",
        str(calibration),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "[1/6]" in proc.stderr and "[6/6] writing MLflow model" in proc.stderr
    assert "cosine_min" in proc.stdout and "ONNX vs PyTorch" in proc.stdout
    manifest = manifest_of(out)
    assert manifest["task"] == "feature-extraction"  # inferred from modules.json
    assert manifest["precision"] == "fp32"  # the flag beat EMS_EXPORT_QUANTIZE
    assert manifest["optimization"] == "O1" and manifest["max_length"] == 128
    assert manifest["source"]["model"] == repo_id
    quality = json.loads((out / "quality.json").read_text())
    assert quality["n_samples"] == 14 and quality["samples"] == str(calibration)
    assert quality["cosine_min"] >= 0.9999
