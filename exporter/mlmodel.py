"""The artifact's metadata: ``exasol_model.json`` (the runtime's manifest) and the MLflow model files.

MLflow's formats are written by hand (mlflow is optional): ``MLmodel`` YAML with the
``exasol_onnx`` and ``python_function`` flavors, the signature as JSON strings (what
``ModelSignature.to_dict()`` produces), a pandas-split input example, requirements and envs.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from exasol_mlflow_server.exporter.tasks import TASK_SPECS

from exasol_mlflow_server import __version__

MANIFEST_FILE = "exasol_model.json"
LOADER_MODULE = "exasol_mlflow_server.runtime.pyfunc"
MANIFEST_KEYS = (
    "format_version",
    "task",
    "model_file",
    "tokenizer_file",
    "max_length",
    "precision",
    "optimization",
    "quantization",
    "inputs",
    "outputs",
    "labels",
    "problem_type",
    "pooling",
    "special_tokens",
    "zero_shot",
    "provider_hints",
    "source",
    "versions",
    "created_at",
    "generation",  # generative tasks: files, special ids, cache shape, limits, defaults
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    ort = _version("onnxruntime-gpu") or _version("onnxruntime")
    return {
        "exasol_mlflow_server": __version__,
        "onnxruntime": ort,
        "optimum_onnx": _version("optimum-onnx"),
        "transformers": _version("transformers"),
        "torch": _version("torch"),
    }


def provider_hints(precision: str) -> dict[str, list[str]]:
    if precision == "int8":  # dynamic INT8 is a CPU format; the CUDA EP runs it slower than fp32
        return {"preferred": ["CPUExecutionProvider"]}
    return {"preferred": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def build_manifest(**values: Any) -> dict[str, Any]:
    """The manifest with exactly :data:`MANIFEST_KEYS` (missing ones are null)."""
    unknown = set(values) - set(MANIFEST_KEYS)
    if unknown:
        raise ValueError(f"not manifest keys: {sorted(unknown)}")
    manifest = dict.fromkeys(MANIFEST_KEYS)
    manifest.update(values)
    manifest["format_version"] = 1
    manifest["created_at"] = manifest["created_at"] or dt.datetime.now(dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    return manifest


# ---- signature ---------------------------------------------------------------------------------


def _prop(kind: str, required: bool = True) -> dict[str, Any]:
    return {"type": kind, "required": required}


def _obj(**props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": dict(sorted(props.items()))}


def _col(name: str, kind: Any, required: bool = True) -> dict[str, Any]:
    spec = {"type": kind} if isinstance(kind, str) else dict(kind)
    return {**spec, "name": name, "required": required}


def _param(name: str, kind: str, default: Any, shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "default": default, "shape": shape, "type": kind}


GENERATION_SIGNATURE = (
    ("max_new_tokens", "long"),
    ("min_new_tokens", "long"),
    ("num_beams", "long"),
    ("do_sample", "boolean"),
    ("temperature", "double"),
    ("top_k", "long"),
    ("top_p", "double"),
    ("repetition_penalty", "double"),
    ("no_repeat_ngram_size", "long"),
    ("length_penalty", "double"),
    ("early_stopping", "boolean"),
    ("seed", "long"),
    ("stop", "string"),
)


def signature(task: str, manifest: dict[str, Any], hidden_size: int | None) -> dict[str, str]:
    """MLflow signature dict (inputs/outputs/params as JSON strings) for ``task``."""
    inputs = [_col(name, "string", required) for name, required in TASK_SPECS[task].columns]
    if task == "feature-extraction":
        outputs = [
            {
                "type": "tensor",
                "tensor-spec": {"dtype": "float32", "shape": [-1, hidden_size or -1]},
            }
        ]
        pooling = manifest.get("pooling") or {}
        params = [_param("normalize", "boolean", bool(pooling.get("normalize", False)))]
    elif task == "text-classification":
        outputs = [_col("label", "string"), _col("score", "double")]
        params = [_param("top_k", "long", None), _param("function_to_apply", "string", None)]
    elif task == "token-classification":
        entity = _obj(
            entity=_prop("string", False),
            entity_group=_prop("string", False),
            score=_prop("double"),
            word=_prop("string"),
            start=_prop("long"),
            end=_prop("long"),
        )
        outputs = [_col("entities", {"type": "array", "items": entity})]
        params = [_param("aggregation_strategy", "string", "none")]
    elif task == "question-answering":
        outputs = [
            _col("answer", "string"),
            _col("score", "double"),
            _col("start", "long"),
            _col("end", "long"),
        ]
        params = [
            _param("top_k", "long", 1),
            _param("max_answer_len", "long", 15),
            _param("doc_stride", "long", 128),
            _param("handle_impossible_answer", "boolean", False),
        ]
    elif task == "zero-shot-classification":
        outputs = [
            _col("sequence", "string"),
            _col("labels", {"type": "array", "items": {"type": "string"}}),
            _col("scores", {"type": "array", "items": {"type": "double"}}),
        ]
        params = [
            _param("candidate_labels", "string", [], [-1]),
            _param("hypothesis_template", "string", "This example is {}."),
            _param("multi_label", "boolean", False),
        ]
    elif TASK_SPECS[task].generative:
        outputs = [{"type": "string", "required": True}]
        params = [_param(name, kind, None) for name, kind in GENERATION_SIGNATURE]
        if task == "text-generation":
            params.append(_param("return_full_text", "boolean", True))
    else:  # fill-mask
        candidate = _obj(
            score=_prop("double"),
            token=_prop("long"),
            token_str=_prop("string"),
            sequence=_prop("string"),
        )
        outputs = [_col("predictions", {"type": "array", "items": candidate})]
        params = [_param("top_k", "long", 5)]
    return {
        "inputs": json.dumps(inputs),
        "outputs": json.dumps(outputs),
        "params": json.dumps(params),
    }


def input_example(task: str, mask_token: str | None) -> dict[str, Any]:
    """A small pandas-split example (columns + rows) for ``task``."""
    if task == "question-answering":
        return {
            "columns": ["question", "context"],
            "data": [
                [
                    "Where is the database?",
                    "The Exasol database runs in a data centre in Nuremberg.",
                ]
            ],
        }
    if task == "zero-shot-classification":
        return {
            "columns": ["text", "candidate_labels"],
            "data": [["The match ended with a late goal.", "sports,politics,technology"]],
        }
    if task == "fill-mask":
        return {
            "columns": ["text"],
            "data": [[f"Paris is the {mask_token or '[MASK]'} of France."]],
        }
    if task == "token-classification":
        return {"columns": ["text"], "data": [["Angela Merkel met Emmanuel Macron in Brussels."]]}
    if TASK_SPECS[task].generative:
        return {"columns": ["text"], "data": [["The meeting was moved to Thursday."]]}
    return {
        "columns": ["text"],
        "data": [["Exasol is an in-memory analytics database."], ["Hello world"]],
    }


# ---- files -------------------------------------------------------------------------------------


def write_mlflow_files(
    out_dir: Path,
    manifest: dict[str, Any],
    hidden_size: int | None,
    extra_flavor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write MLmodel, the examples, requirements.txt, python_env.yaml and conda.yaml; return MLmodel's dict."""
    import yaml

    task = manifest["task"]
    python_version = platform.python_version()
    example = input_example(task, (manifest.get("special_tokens") or {}).get("mask_token"))
    (out_dir / "input_example.json").write_text(json.dumps(example))
    (out_dir / "serving_input_example.json").write_text(
        json.dumps({"dataframe_split": example}, indent=2)
    )
    requirements = [f"exasol-mlflow-server=={__version__}"]
    tokenizers_version = _version("tokenizers")
    if tokenizers_version:  # tokenizer.json written by this version; older ones may not read it
        major, minor = tokenizers_version.split(".")[:2]
        requirements.append(f"tokenizers>={major}.{minor}")
    (out_dir / "requirements.txt").write_text("\n".join(requirements) + "\n")
    build_deps = [
        f"pip=={_version('pip') or '24.0'}",
        f"setuptools=={_version('setuptools') or '69.0.0'}",
        "wheel",
    ]
    python_env = {
        "python": python_version,
        "build_dependencies": build_deps,
        "dependencies": ["-r requirements.txt"],
    }
    (out_dir / "python_env.yaml").write_text(yaml.safe_dump(python_env, sort_keys=False))
    conda = {
        "name": "mlflow-env",
        "channels": ["conda-forge"],
        "dependencies": [f"python={python_version}", "pip", {"pip": requirements}],
    }
    (out_dir / "conda.yaml").write_text(yaml.safe_dump(conda, sort_keys=False))

    mlmodel: dict[str, Any] = {
        "flavors": {
            "exasol_onnx": {**manifest, "manifest": MANIFEST_FILE, **(extra_flavor or {})},
            "python_function": {
                "loader_module": LOADER_MODULE,
                "python_version": python_version,
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
            },
        },
        "model_uuid": uuid.uuid4().hex,
        "utc_time_created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "signature": signature(task, manifest, hidden_size),
        "saved_input_example_info": {
            "artifact_path": "input_example.json",
            "pandas_orient": "split",
            "serving_input_path": "serving_input_example.json",
            "type": "dataframe",
        },
    }
    mlflow_version = _mlflow_version()
    if mlflow_version:
        mlmodel["mlflow_version"] = mlflow_version
    (out_dir / "MLmodel").write_text(
        yaml.safe_dump(mlmodel, sort_keys=False, default_flow_style=False)
    )
    return mlmodel


def _mlflow_version() -> str | None:
    """mlflow's version if mlflow is importable (checked without importing it: that is slow)."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        return None
    return _version("mlflow") or _version("mlflow-skinny")


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
