"""An MLflow model URI as ``export``'s MODEL: ``export models:/clf@champion --quantize int8 ...``.

The model is fetched with MLflow's client into the same cache the server uses
(``<cache dir>/mlflow/downloads``; see ``runtime/mlflow_uri.py``), its flavor is checked, and the
export runs on the Hugging Face directory inside it: ``model/`` + ``components/tokenizer/`` of
the ``transformers`` flavor, or ``model.sentence_transformer/`` of the ``sentence_transformers``
flavor. The task comes from the flavor (MLflow's task name mapped to ours) unless ``--task``
says otherwise.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from exasol_mlflow_server.exporter.errors import InvalidModelError, ModelNotFoundError
from exasol_mlflow_server.exporter.settings import ExportSettings
from exasol_mlflow_server.runtime import mlflow_cache, mlflow_uri
from exasol_mlflow_server.runtime.errors import ModelLoadError
from exasol_mlflow_server.runtime.settings import Settings, from_sources

is_mlflow_uri = mlflow_uri.is_mlflow_uri


@dataclass(frozen=True)
class MlflowSource:
    uri: str  # as given
    path: Path  # the Hugging Face model directory to export
    task: str  # our task name
    flavor: str
    name: str | None = None  # registered model name and version, when the URI names one
    version: str | None = None


def _serve_settings(tracking_uri: str | None) -> Settings:
    try:
        settings = from_sources(None)  # EMS_CACHE_DIR / MLFLOW_TRACKING_URI, as for `serve`
    except ValueError:
        settings = Settings()
    return settings.replace(tracking_uri=tracking_uri or settings.tracking_uri)


def resolve_source(uri: str, tracking_uri: str | None = None) -> MlflowSource:
    """Fetch (cached) the MLflow model at ``uri`` and return its Hugging Face directory and task."""
    settings = _serve_settings(tracking_uri)
    try:
        ref = mlflow_uri.parse_uri(uri)
        client = mlflow_uri.mlflow_client(settings)
        pinned = mlflow_uri.pin(ref, settings, client)
        entry = mlflow_uri.fetch_pinned(pinned, settings)
        flavors = mlflow_cache.read_flavors(entry / "MLmodel")
        flavor = mlflow_cache.check_flavors(flavors, uri)
        if flavor == "exasol_onnx":
            raise InvalidModelError(
                f"{uri} already is a model written by `exasol-mlflow-server export`; serve it "
                "directly, or export the transformers model it was made from"
            )
        task = mlflow_cache.flavor_task(flavor, flavors[flavor], uri)
    except ModelLoadError as exc:
        error = ModelNotFoundError if "cannot" in exc.message else InvalidModelError
        raise error(exc.message) from None
    return MlflowSource(uri, entry / "hf", task, flavor, ref.name, pinned.version)


def prepare(settings: ExportSettings, tracking_uri: str | None = None) -> ExportSettings:
    """``settings`` unchanged, or -- for an MLflow URI -- pointing at the fetched HF directory."""
    if not is_mlflow_uri(str(settings.model)):
        return settings
    source = resolve_source(str(settings.model), tracking_uri)
    print(
        f"{settings.model}: {source.flavor} flavor, task {source.task}"
        + (f", version {source.version}" if source.version else "")
        + f" (fetched into {source.path.parent})",
        file=sys.stderr,
        flush=True,
    )
    return dataclasses.replace(settings, model=str(source.path), task=settings.task or source.task)
