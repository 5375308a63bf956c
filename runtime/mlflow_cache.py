"""The on-disk side of MLflow models: downloads, flavors, and the alias -> version memory.

``<cache dir>/mlflow/downloads/<label>-<key>`` holds one downloaded MLflow model. It is written
into a temp dir and renamed under a file lock (several workers starting at once download once),
and ``.ems-complete.json`` lists the size of every file, so a partial or corrupt entry is
detected and fetched again. For the ``transformers`` / ``sentence_transformers`` flavors the
entry also gets ``hf/``: relative symlinks that form the Hugging Face model directory the
exporter reads. ``aliases/`` remembers the version an alias pointed at when it was last
resolved, so a server can start from the cache while the tracking server is down.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from .cache import atomic_write_json, build_once
from .errors import ModelLoadError
from .settings import Settings
from .tasks import mlflow_task_map

log = logging.getLogger(__name__)
SUPPORTED_FLAVORS = ("exasol_onnx", "transformers", "sentence_transformers")
COMPLETE = ".ems-complete.json"
ST_DATA_PATH = "model.sentence_transformer"  # mlflow.sentence_transformers' data path


def is_unreachable(exc: BaseException) -> bool:
    """True when the tracking server did not answer (as opposed to answering with an error)."""
    from mlflow.exceptions import RestException

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RestException):
            return False  # it answered
        if isinstance(seen, (ConnectionError, TimeoutError)) or type(seen).__name__ in (
            "ConnectionError",
            "ConnectTimeout",
            "ReadTimeout",
            "MaxRetryError",
            "NewConnectionError",
        ):
            return True
        text = str(getattr(seen, "message", seen))
        if "failed with exception" in text or "Max retries exceeded" in text:
            return True  # mlflow.utils.rest_utils wraps requests' errors in this message
        seen = seen.__cause__ or seen.__context__
    return False


NETWORK_REASONS = (
    "Connection refused",
    "Connection reset",
    "timed out",
    "Name or service not known",
    "Temporary failure in name resolution",
    "No route to host",
    "Network is unreachable",
)


def short(exc: BaseException) -> str:
    """One line about ``exc``: the network reason when there is one, else its first line."""
    text = getattr(exc, "message", None) or str(exc)
    for reason in NETWORK_REASONS:
        if reason.lower() in text.lower():
            return reason.lower()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class AliasCache:
    """``aliases/<key>.json``: the version an alias pointed at when last resolved."""

    def __init__(self, settings: Settings) -> None:
        self.dir = settings.resolved_cache_dir() / "mlflow" / "aliases"

    def _path(self, uri: str, name: str, alias: str) -> Path:
        key = hashlib.sha256(json.dumps([uri, name, alias]).encode()).hexdigest()[:16]
        return self.dir / f"{key}.json"

    def get(self, uri: str, name: str, alias: str) -> str | None:
        try:
            data = json.loads(self._path(uri, name, alias).read_text(encoding="utf-8"))
            return str(data["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, uri: str, name: str, alias: str, version: str) -> None:
        record = {"tracking_uri": uri, "name": name, "alias": alias, "version": version}
        with contextlib.suppress(OSError):
            atomic_write_json(self._path(uri, name, alias), record)


# ---- download cache -----------------------------------------------------------------------------


def downloads_dir(settings: Settings) -> Path:
    return settings.resolved_cache_dir() / "mlflow" / "downloads"


def _files(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != COMPLETE
    }


def entry_ok(path: Path) -> bool:
    """A complete download: its size manifest matches the files on disk."""
    try:
        expected = json.loads((path / COMPLETE).read_text(encoding="utf-8"))["files"]
        return bool(expected) and all(
            (path / name).is_file() and (path / name).stat().st_size == size
            for name, size in expected.items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def read_flavors(mlmodel: Path) -> dict[str, Any]:
    import yaml  # comes with mlflow

    try:
        data = yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"cannot read {mlmodel}: {exc}") from None
    flavors = data.get("flavors") if isinstance(data, dict) else None
    if not isinstance(flavors, dict):
        raise ModelLoadError(f"{mlmodel} has no flavors; is it an MLflow model?")
    return flavors


def check_flavors(flavors: dict[str, Any], uri: str) -> str:
    """The flavor we serve the model by, or a :class:`ModelLoadError` naming the supported ones."""
    for flavor in SUPPORTED_FLAVORS:
        if flavor in flavors:
            return flavor
    raise ModelLoadError(
        f"{uri} is an MLflow model with flavor(s) {', '.join(sorted(flavors))}; this server runs "
        f"models with the flavors {', '.join(SUPPORTED_FLAVORS)} (a model written by "
        "`exasol-mlflow-server export`, or one logged with mlflow.transformers / "
        "mlflow.sentence_transformers)"
    )


def _download(uri: str, dst: Path) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))


def fetch(
    settings: Settings, entry: str, download_uri: str, uri: str, server: str | None = None
) -> Path:
    """The downloaded model ``download_uri`` as cache entry ``entry`` (cached when complete).

    ``uri`` is what the user named and ``server`` the tracking server (for messages).
    """

    def build(tmp: Path) -> Path:
        try:  # MLmodel first: an unsupported flavor fails before a large download
            head = _download(download_uri.rstrip("/") + "/MLmodel", tmp / "head")
            flavor = check_flavors(read_flavors(head), uri)
            log.info("downloading %s (%s flavor) ...", download_uri, flavor)
            local = _download(download_uri, tmp / "dl")
        except ModelLoadError:
            raise
        except Exception as exc:
            if server and is_unreachable(exc):
                raise ModelLoadError(
                    f"cannot reach the MLflow tracking server {server} to fetch {uri} "
                    f"({short(exc)})"
                ) from None
            where = f" from {server}" if server else ""
            raise ModelLoadError(f"cannot fetch {uri}{where}: {short(exc)}") from None
        if flavor != "exasol_onnx":
            link_hf_dir(local, flavor, read_flavors(local / "MLmodel")[flavor], uri)
        record = {"uri": download_uri, "files": _files(local)}
        (local / COMPLETE).write_text(json.dumps(record, indent=1))
        return local

    return build_once(downloads_dir(settings) / entry, entry_ok, build)


def link_hf_dir(model_dir: Path, flavor: str, conf: dict[str, Any], uri: str) -> None:
    """``hf/``: the Hugging Face model directory the exporter reads (relative symlinks)."""
    if flavor == "sentence_transformers":
        sources = [model_dir / ST_DATA_PATH]
    else:
        if conf.get("peft_adaptor"):
            raise ModelLoadError(f"{uri}: PEFT adapter models are not supported")
        binary = conf.get("model_binary")
        if not binary:
            raise ModelLoadError(
                f"{uri} was logged without its weights (save_pretrained=False); log it with "
                "the weights, or serve the Hugging Face model id instead"
            )
        components = [c for c in conf.get("components") or [] if c == "tokenizer"]
        sources = [model_dir / binary, *(model_dir / "components" / c for c in components)]
    if not (sources[0] / "config.json").is_file():
        raise ModelLoadError(f"{uri}: {sources[0].name}/config.json is missing")
    hf = model_dir / "hf"
    hf.mkdir()
    for src in sources:
        for item in sorted(src.iterdir()):
            link = hf / item.name
            if not link.exists():
                link.symlink_to(os.path.relpath(item, hf), target_is_directory=item.is_dir())


def flavor_task(flavor: str, conf: dict[str, Any], uri: str) -> str:
    if flavor == "sentence_transformers":
        return "feature-extraction"
    task = str(conf.get("task") or "")
    tasks = mlflow_task_map()  # from every task's SPEC.mlflow_tasks
    if task.startswith("translation_") and tasks.get("translation") == "translation":
        return task  # translation_en_to_de: the exporter takes that pair's prefix and settings
    if task not in tasks:
        supported = ", ".join(sorted(set(tasks.values())))
        raise ModelLoadError(
            f"{uri}: the transformers task {task or '(none)'!r} is not supported; supported: "
            f"{supported}"
        )
    return tasks[task]
