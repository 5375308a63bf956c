"""`export ... --register NAME`: log an exported directory as an MLflow model and register it.

The exported directory already is a complete MLflow model (``MLmodel`` with our ``exasol_onnx``
flavor and a ``python_function`` flavor whose loader is ``exasol_mlflow_server.runtime.pyfunc``).
It is logged with MLflow's own :meth:`mlflow.models.Model.log`, through a tiny "flavor" whose
``save_model`` copies the directory and re-stamps its ``MLmodel`` with the run and model ids
MLflow assigns. MLflow 3 thereby creates a LoggedModel, links the run's params and metrics to it
and registers it (``models:/<model_id>`` as the version's source), exactly as for its own
flavors; ``mlflow.pyfunc.load_model("models:/NAME@ALIAS")`` then loads it through our loader.

In the run: params (source model, task, precision, quantization, optimization level, max length,
CPU preset), metrics (every number in ``quality.json``, nested keys joined with ``.``) and tags
(our version, onnxruntime's version).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from exasol_mlflow_server.exporter.errors import ExportError
from exasol_mlflow_server.exporter.settings import RegisterSettings

from exasol_mlflow_server import __version__

log = logging.getLogger(__name__)
MLFLOW_MISSING = (
    "registering needs MLflow: pip install 'exasol-mlflow-server[mlflow]' (installs mlflow-skinny)"
)
ARTIFACT_NAME = "model"


class RegisterError(ExportError):
    """The export could not be logged or registered (tracking server, permissions, ...)."""


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    alias: str | None
    run_id: str
    model_uri: str  # models:/NAME/VERSION
    logged_model_uri: str  # models:/m-... (MLflow 3) or runs:/RUN/model

    def describe(self) -> str:
        alias = f" (alias @{self.alias})" if self.alias else ""
        return f"registered {self.model_uri}{alias}; run {self.run_id}, logged model {self.logged_model_uri}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def run_params(manifest: dict[str, Any], source: str | None = None) -> dict[str, str]:
    """The run's params, from the exported manifest."""
    quant = manifest.get("quantization") or {}
    src = manifest.get("source") or {}
    params = {
        "source_model": source or src.get("model"),
        "task": manifest.get("task"),
        "precision": manifest.get("precision"),
        "quantization": quant.get("mode", "none") if quant else "none",
        "optimization": manifest.get("optimization"),
        "max_length": manifest.get("max_length"),
        "cpu_preset": quant.get("preset") if quant else None,
        "per_channel": quant.get("per_channel") if quant else None,
        "model_type": src.get("model_type"),
        "architecture": src.get("architecture"),
    }
    # MLflow params are strings of at most a few thousand characters; None is left out.
    return {k: str(v)[:6000] for k, v in params.items() if v is not None}


def quality_metrics(report: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number in ``quality.json`` (nested keys joined by ``.``; booleans as 0/1)."""
    metrics: dict[str, float] = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            metrics.update(quality_metrics(value, f"{name}."))
        elif isinstance(value, (bool, int, float)):
            metrics[name] = float(value)
    return metrics


def run_tags(manifest: dict[str, Any]) -> dict[str, str]:
    versions = manifest.get("versions") or {}
    tags = {
        "exasol_mlflow_server.version": __version__,
        "onnxruntime.version": versions.get("onnxruntime") or _installed("onnxruntime"),
        "exasol_mlflow_server.task": manifest.get("task"),
        "exasol_mlflow_server.precision": manifest.get("precision"),
    }
    return {k: str(v) for k, v in tags.items() if v}


def _installed(dist: str) -> str | None:
    from importlib import metadata

    for name in (f"{dist}-gpu", dist):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _flavor(model_dir: Path) -> SimpleNamespace:
    """A minimal flavor module for :meth:`mlflow.models.Model.log`: copy the directory as it is."""

    def save_model(path: str, mlflow_model: Any, **_: Any) -> None:
        from mlflow.models import Model

        shutil.copytree(model_dir, path, dirs_exist_ok=True)
        ours = Model.load(str(Path(path) / "MLmodel"))
        mlflow_model.flavors = ours.flavors
        mlflow_model.signature = ours.signature
        mlflow_model.saved_input_example_info = ours.saved_input_example_info
        mlflow_model.save(str(Path(path) / "MLmodel"))

    return SimpleNamespace(__name__="exasol_onnx", save_model=save_model)


def register_export(
    model_dir: Path,
    name: str,
    alias: str | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    source: str | None = None,
) -> Registration:
    """Log ``model_dir`` (an exported directory) in a new run, register it as NAME, set ALIAS."""
    try:
        import mlflow
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
        from mlflow.models import Model
    except ImportError as exc:
        raise RegisterError(MLFLOW_MISSING) from exc
    model_dir = Path(model_dir)
    manifest = _read_json(model_dir / "exasol_model.json")
    if not manifest or not (model_dir / "MLmodel").is_file():
        raise RegisterError(
            f"{model_dir} is not an exported model directory (MLmodel/manifest missing)"
        )
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        if experiment:
            mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=f"export-{name}") as run:
            mlflow.log_params(run_params(manifest, source))
            mlflow.log_metrics(quality_metrics(_read_json(model_dir / "quality.json")))
            mlflow.set_tags(run_tags(manifest))
            if (model_dir / "quality.json").is_file():
                mlflow.log_artifact(str(model_dir / "quality.json"))
            info = _log(Model, mlflow.__version__, model_dir, name, run_tags(manifest))
        version = str(info.registered_model_version)
        if alias:
            MlflowClient().set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise RegisterError(f"registering {model_dir} as {name!r} failed: {exc.message}") from exc
    except OSError as exc:  # unreachable tracking server, unwritable artifact store
        raise RegisterError(f"registering {model_dir} as {name!r} failed: {exc}") from exc
    return Registration(
        name=name,
        version=version,
        alias=alias,
        run_id=run.info.run_id,
        model_uri=f"models:/{name}/{version}",
        logged_model_uri=info.model_uri,
    )


def _log(model_cls: Any, mlflow_version: str, model_dir: Path, name: str, tags: dict) -> Any:
    kwargs: dict[str, Any] = {"flavor": _flavor(model_dir), "registered_model_name": name}
    if int(mlflow_version.split(".")[0]) >= 3:  # a LoggedModel with the run's params and tags
        return model_cls.log(artifact_path=None, name=ARTIFACT_NAME, tags=tags, **kwargs)
    return model_cls.log(artifact_path=ARTIFACT_NAME, **kwargs)


def from_settings(reg: RegisterSettings, output: Path, source: str) -> Registration | None:
    """Register ``output`` when ``--register`` was given (``source``: the MODEL the user named)."""
    if not reg.register:
        return None
    return register_export(
        Path(output),
        reg.register,
        alias=reg.alias,
        tracking_uri=reg.tracking_uri,
        experiment=reg.experiment,
        source=source,
    )
