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

from exasol_mlflow_server.runtime.manifest import MANIFEST_FILE, from_dict, new_manifest
from exasol_mlflow_server.runtime.manifest import write_manifest as write
from exasol_mlflow_server.runtime.tasks import task_spec

from exasol_mlflow_server import __version__

LOADER_MODULE = "exasol_mlflow_server.runtime.pyfunc"


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


def source_record(src: Any) -> dict[str, Any]:
    """The manifest's ``source``: the model as the user named it, its type and architecture."""
    return {
        "model": src.ref if src.from_hub else str(src.path),
        "model_type": src.model_type,
        "architecture": src.architecture,
    }


def build_manifest(**values: Any) -> dict[str, Any]:
    """The manifest as written to ``exasol_model.json`` (checked by the runtime's own reader)."""
    return new_manifest(**values).to_dict()


# ---- signature ---------------------------------------------------------------------------------


def _col(name: str | None, kind: Any, required: bool = True) -> dict[str, Any]:
    spec = {"type": kind} if isinstance(kind, str) else dict(kind)
    if name is not None:
        spec["name"] = name
    return {**spec, "required": required} if spec["type"] != "tensor" else spec


def signature(task: str, manifest: dict[str, Any], hidden_size: int | None) -> dict[str, str]:
    """MLflow signature dict (inputs/outputs/params as JSON strings), from the task's SPEC.

    One-text tasks declare one unnamed string column, as MLflow's transformers flavor does, so
    ``mlflow.pyfunc.load_model(DIR).predict(["a", "b"])`` passes schema enforcement.
    """
    spec = task_spec(task)
    if spec.single_text:
        inputs = [_col(None, "string")]
    else:
        string_list = {"type": "array", "items": {"type": "string"}}
        inputs = [
            _col(c.name, string_list if c.is_list else "string", c.required) for c in spec.columns
        ]
    outputs = []
    for out in spec.outputs:
        kind = out.type
        if isinstance(kind, dict) and kind.get("type") == "tensor":
            tensor = dict(kind["tensor-spec"])
            tensor["shape"] = [*tensor["shape"][:-1], hidden_size or -1]  # (rows, hidden size)
            kind = {"type": "tensor", "tensor-spec": tensor}
        outputs.append(_col(out.name, kind, out.required))
    params = [
        {
            "name": p.name,
            "default": p.default,
            "shape": list(p.shape) if p.shape else None,
            "type": p.schema_type,
        }
        for p in spec.params
    ]
    return {
        "inputs": json.dumps(inputs),
        "outputs": json.dumps(outputs),
        "params": json.dumps(params),
    }


def input_example(task: str, mask_token: str | None) -> dict[str, Any]:
    """The task's pandas-split input example (``{mask}`` becomes the model's mask token)."""
    example = task_spec(task).example
    data = [
        [v.replace("{mask}", mask_token or "[MASK]") if isinstance(v, str) else v for v in row]
        for row in example["data"]
    ]
    return {"columns": list(example["columns"]), "data": data}


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
    write(out_dir, from_dict(manifest, "the new manifest"))
