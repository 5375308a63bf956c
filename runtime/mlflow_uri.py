"""MLflow model URIs -> an exported model directory to serve.

``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/latest`` (or ``/STAGE``),
``models:/<model id>``, ``runs:/RUN_ID/PATH``, ``file:`` URIs and other artifact URIs are resolved
with MLflow's own client (``mlflow-skinny``, imported lazily; its usual ``MLFLOW_TRACKING_URI`` /
auth variables apply, ``--tracking-uri`` overrides). What the URI holds decides what happens:

* our flavor (``exasol_onnx``): the downloaded directory is served as it is;
* MLflow's ``transformers`` or ``sentence_transformers`` flavor: the Hugging Face weights and
  tokenizer are exported to ONNX on first use (``autoexport.export_to_cache``, a child process);
* anything else: a :class:`ModelLoadError` naming the supported flavors.

Cache (``<cache dir>/mlflow``, see ``mlflow_cache.py``): downloads are keyed by the tracking URI
and the model's identity (name + version, run id + path, model id, or a local path's
fingerprint); their exports live in ``exports/``, keyed by the download and the export options.
An alias is resolved to a version first, so a moved alias is a new cache entry. The served
directory gets a small ``mlflow_source.json`` saying what it is (name, version).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .autoexport import export_precision, export_to_cache
from .cache import atomic_write_json, fingerprint
from .errors import ModelLoadError
from .manifest import is_exported_dir
from .mlflow_cache import (
    AliasCache,
    check_flavors,
    downloads_dir,
    entry_ok,
    fetch,
    flavor_task,
    is_unreachable,
    read_flavors,
    short,
)
from .settings import Settings

log = logging.getLogger(__name__)
MLFLOW_MISSING = (
    "MLflow model URIs need MLflow's client, which is not installed: "
    "pip install 'exasol-mlflow-server[mlflow]'"
)
SOURCE_FILE = "mlflow_source.json"


def is_mlflow_uri(model: str) -> bool:
    return "://" in model or model.startswith(("models:/", "runs:/", "file:"))


@dataclass(frozen=True)
class ModelRef:
    """A parsed MLflow model URI. ``kind``: version, alias, latest, stage, logged, run, local, artifact."""

    uri: str
    kind: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    stage: str | None = None
    run_id: str | None = None
    path: str | None = None


def parse_uri(uri: str) -> ModelRef:
    bad = (
        f"not a valid MLflow model URI: {uri!r} (use models:/NAME/VERSION, models:/NAME@ALIAS, "
        "models:/NAME/latest, runs:/RUN_ID/PATH or file:/PATH)"
    )
    if uri.startswith("models:/"):
        rest = uri[len("models:/") :].strip("/")
        if not rest:
            raise ModelLoadError(bad)
        if "/" in rest:
            name, suffix = rest.rsplit("/", 1)
            if not name or not suffix:
                raise ModelLoadError(bad)
            if suffix.isdigit():
                return ModelRef(uri, "version", name=name, version=suffix)
            if suffix.lower() == "latest":
                return ModelRef(uri, "latest", name=name)
            return ModelRef(uri, "stage", name=name, stage=suffix)
        if "@" in rest:
            name, alias = rest.rsplit("@", 1)
            if not name or not alias:
                raise ModelLoadError(bad)
            return ModelRef(uri, "alias", name=name, alias=alias)
        return ModelRef(uri, "logged", path=rest)  # models:/<model id> (MLflow 3)
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/") :].strip("/").partition("/")
        if not run_id or not path:
            raise ModelLoadError(bad)
        return ModelRef(uri, "run", run_id=run_id, path=path)
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        parsed = urlparse(uri)
        path = unquote(parsed.path) if parsed.netloc in ("", "localhost") else uri[5:]
        return ModelRef(uri, "local", path=str(Path(path).expanduser()))
    return ModelRef(uri, "artifact")


@dataclass(frozen=True)
class Pinned:
    """An immutable model: what to download, and the identity that keys the cache."""

    ref: ModelRef
    tracking_uri: str
    download_uri: str
    version: str | None = None  # registry version (or run id / model id for other URIs)

    @property
    def key(self) -> str:
        ident = [self.tracking_uri, self.download_uri]
        if self.ref.kind == "local":
            ident = [fingerprint(self.download_uri)]
        return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        ref = self.ref
        if ref.name:
            text = f"{ref.name}-v{self.version}"
        elif ref.kind == "run":
            text = f"run-{ref.run_id}-{ref.path}"
        else:
            text = Path(self.download_uri.rstrip("/")).name or "model"
        return re.sub(r"[^\w.-]+", "_", text)[:60]

    @property
    def entry(self) -> str:
        """The name of its download cache entry."""
        return f"{self.label}-{self.key}"

    def identity(self) -> dict[str, Any]:
        return {
            "uri": self.ref.uri,
            "name": self.ref.name,
            "version": self.version,
            "run_id": self.ref.run_id,
            "tracking_uri": self.tracking_uri,
        }


# ---- MLflow client ------------------------------------------------------------------------------


def mlflow_client(settings: Settings) -> Any:
    """``MlflowClient`` for ``settings`` (``--tracking-uri`` wins over ``MLFLOW_TRACKING_URI``)."""
    try:
        import mlflow
        from mlflow.environment_variables import (
            MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR,
            MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
            MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        )
    except ImportError:
        raise ModelLoadError(MLFLOW_MISSING) from None
    # MLflow retries an unreachable server for minutes by default; answer within seconds
    # unless the user tuned it.
    if not MLFLOW_HTTP_REQUEST_MAX_RETRIES.defined:
        MLFLOW_HTTP_REQUEST_MAX_RETRIES.set(2)
    if not MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.defined:
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.set(1)
    if not MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.defined:  # progress bars flood server logs
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.set(False)
    retries = logging.getLogger("urllib3.connectionpool")
    if retries.level == logging.NOTSET:  # one clear message of ours instead of one per retry
        retries.setLevel(logging.ERROR)
    if settings.tracking_uri:
        mlflow.set_tracking_uri(settings.tracking_uri)
    return mlflow.MlflowClient()


def tracking_uri() -> str:
    import mlflow

    return str(mlflow.get_tracking_uri())


def pin(ref: ModelRef, settings: Settings, client: Any) -> Pinned:
    """Resolve aliases, ``latest`` and stages to a version (alias: from the cache when offline)."""
    uri = tracking_uri()
    if ref.kind == "version":
        return Pinned(ref, uri, f"models:/{ref.name}/{ref.version}", ref.version)
    if ref.kind in ("alias", "latest", "stage"):
        try:
            version = current_version(ref, client)
        except Exception as exc:
            if not is_unreachable(exc):
                raise ModelLoadError(f"cannot resolve {ref.uri}: {short(exc)}") from None
            cached = None
            if ref.kind == "alias":
                cached = AliasCache(settings).get(uri, str(ref.name), str(ref.alias))
            if cached is None or not entry_ok(
                downloads_dir(settings) / _entry_name(ref, uri, cached)
            ):
                raise ModelLoadError(
                    f"cannot reach the MLflow tracking server {uri} to resolve {ref.uri} "
                    f"({short(exc)}), and there is no cached copy of it"
                ) from None
            log.warning(
                "the MLflow tracking server %s is unreachable (%s); serving the cached version %s "
                "of %s",
                uri,
                short(exc),
                cached,
                ref.uri,
            )
            version = cached
        else:
            if ref.kind == "alias":
                AliasCache(settings).put(uri, str(ref.name), str(ref.alias), version)
        return Pinned(ref, uri, f"models:/{ref.name}/{version}", version)
    if ref.kind == "run":
        return Pinned(ref, uri, ref.uri, ref.run_id)
    if ref.kind == "logged":
        return Pinned(ref, uri, ref.uri, ref.path)
    if ref.kind == "local":
        path = Path(ref.path or "")
        if not path.is_dir():
            raise ModelLoadError(f"{ref.uri}: {path} is not a directory")
        return Pinned(ref, uri, str(path.resolve()))
    return Pinned(ref, uri, ref.uri)


def current_version(ref: ModelRef, client: Any) -> str:
    """The version an alias / ``latest`` / stage points at now (asks the registry)."""
    if ref.kind == "alias":
        return str(client.get_model_version_by_alias(ref.name, ref.alias).version)
    with warnings.catch_warnings():  # get_latest_versions is deprecated for stages only
        warnings.simplefilter("ignore")
        found = client.get_latest_versions(ref.name, None if ref.stage is None else [ref.stage])
    if not found:
        raise ModelLoadError(f"{ref.uri}: the registered model {ref.name!r} has no versions")
    return str(max(int(v.version) for v in found))


def _entry_name(ref: ModelRef, uri: str, version: str) -> str:
    return Pinned(ref, uri, f"models:/{ref.name}/{version}", version).entry


def fetch_pinned(pinned: Pinned, settings: Settings) -> Path:
    """The downloaded (cached) MLflow model directory of ``pinned``."""
    server = None if pinned.ref.kind == "local" else pinned.tracking_uri
    return fetch(settings, pinned.entry, pinned.download_uri, pinned.ref.uri, server)


# ---- the served directory -----------------------------------------------------------------------


def served_dir(entry: Path, pinned: Pinned, settings: Settings) -> Path:
    """The exported directory for a downloaded entry (exporting transformers models, cached)."""
    flavors = read_flavors(entry / "MLmodel")
    flavor = check_flavors(flavors, pinned.ref.uri)
    if flavor == "exasol_onnx":
        if not is_exported_dir(entry):
            raise ModelLoadError(f"{pinned.ref.uri}: exasol_model.json is missing")
        model_dir = entry
    else:
        task = flavor_task(flavor, flavors[flavor], pinned.ref.uri)
        model_dir = export_to_cache(
            str(entry / "hf"),
            settings,
            export_precision(settings),
            cache_dir=settings.resolved_cache_dir() / "mlflow" / "exports",
            name=pinned.label,
            task=task,
        )
    if model_dir != Path(pinned.download_uri):  # never write into a user's directory
        with contextlib.suppress(OSError):
            atomic_write_json(model_dir / SOURCE_FILE, pinned.identity())
    return model_dir


def resolve_pinned(pinned: Pinned, settings: Settings) -> Path:
    if pinned.ref.kind == "local":
        path = Path(pinned.download_uri)
        if is_exported_dir(path):
            return path
    return served_dir(fetch_pinned(pinned, settings), pinned, settings)


def resolve_mlflow_uri(uri: str, settings: Settings) -> Path:
    """The exported model directory to serve for the MLflow model URI ``uri``."""
    ref = parse_uri(uri)
    client = mlflow_client(settings)
    return resolve_pinned(pin(ref, settings, client), settings)


@dataclass(frozen=True)
class Identity:
    """What the server reports about the model: ``X-Model-Version`` and ``model_info`` labels."""

    uri: str | None = None
    name: str | None = None
    version: str | None = None
    alias: str | None = None

    def as_info(self) -> dict[str, Any]:
        return {f"model_{k}" if k == "uri" else k: v for k, v in asdict(self).items()}


def identity_of(model: str | None, model_dir: Path) -> Identity:
    """The served model's identity: the URI's alias plus what the resolver recorded."""
    if not model or not is_mlflow_uri(model):
        return Identity()
    try:
        ref = parse_uri(model)
        recorded = json.loads((model_dir / SOURCE_FILE).read_text(encoding="utf-8"))
    except (ModelLoadError, OSError, ValueError):
        return Identity(uri=model)
    return Identity(model, recorded.get("name"), recorded.get("version"), ref.alias)
