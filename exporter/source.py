"""Find and check the model to export: a local HF directory or a Hub id fetched into the HF cache.

Everything the later stages need about the source is gathered here, before any heavy work, so
that a missing file or an unreachable Hub fails in the first second with a clear message.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exasol_mlflow_server.exporter.errors import (
    HubUnreachableError,
    InsufficientDiskError,
    InvalidModelError,
    InvalidSettingError,
    ModelNotFoundError,
    TokenizerError,
)
from exasol_mlflow_server.exporter.tasks import read_json

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
WEIGHT_GLOBS = (
    "model.safetensors",
    "model-*-of-*.safetensors",
    "pytorch_model.bin",
    "pytorch_model-*-of-*.bin",
)
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "tokenizer*", "1_Pooling/*"]
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "added_tokens.json",
)
# Model types whose position ids start after the padding index (positions 0..pad_id are unused).
PADDED_POSITIONS = {
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "longformer",
    "mpnet",
    "data2vec-text",
    "ibert",
    "luke",
}


@dataclass(frozen=True)
class ModelSource:
    ref: str  # what the user passed (Hub id or path)
    path: Path  # a local directory holding config.json, weights and tokenizer files
    from_hub: bool
    config: dict[str, Any]
    weights: tuple[Path, ...]

    @property
    def weight_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.weights)

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @property
    def architecture(self) -> str | None:
        archs = self.config.get("architectures") or []
        return archs[0] if archs else None


def resolve(ref: str) -> ModelSource:
    """A checked local model directory for ``ref`` (downloading a Hub id into the HF cache)."""
    local = Path(ref).expanduser()
    if local.exists():
        if not local.is_dir():
            raise InvalidModelError(
                f"{local} is a file; MODEL must be a Hugging Face model directory or Hub id"
            )
        return _checked(ref, local, from_hub=False)
    if ref.startswith((".", "/", "~")) or not HUB_ID.match(ref):
        raise ModelNotFoundError(
            f"model directory {ref} does not exist (and it is not a Hugging Face Hub id)"
        )
    return _checked(ref, _download(ref), from_hub=True)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import Timeout

    unreachable = (
        f"cannot fetch {repo_id!r}: the Hugging Face Hub is unreachable (offline or no network) and the "
        f"model is not in the local Hugging Face cache; there is no local directory {repo_id!r} either. "
        "Download the model where the Hub is reachable and pass its local directory instead"
    )
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=[*HUB_PATTERNS, "*.safetensors"]))
        if not _weights(path):  # only PyTorch .bin weights in this repo
            path = Path(
                snapshot_download(repo_id, allow_patterns=[*HUB_PATTERNS, "pytorch_model*.bin"])
            )
    except LocalEntryNotFoundError as exc:
        raise HubUnreachableError(unreachable) from exc
    except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelNotFoundError(
            f"{repo_id!r} is not a local directory and the Hugging Face Hub has no accessible model with "
            f"that id ({type(exc).__name__})"
        ) from exc
    except (RequestsConnectionError, Timeout, HfHubHTTPError, OSError) as exc:
        raise HubUnreachableError(f"{unreachable} ({type(exc).__name__})") from exc
    return path


def _weights(path: Path) -> tuple[Path, ...]:
    for pattern in WEIGHT_GLOBS:
        found = sorted(path.glob(pattern))
        if found:
            return tuple(found)
    return ()


def _checked(ref: str, path: Path, from_hub: bool) -> ModelSource:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InvalidModelError(
            f"{path} is not a Hugging Face model directory: config.json is missing"
        )
    config = read_json(config_file)
    if not isinstance(config, dict) or not config.get("model_type"):
        raise InvalidModelError(
            f"{config_file} has no model_type; is it a transformers model config?"
        )
    weights = _weights(path)
    if not weights:
        raise InvalidModelError(
            f"{path} has no model weights (model.safetensors or pytorch_model.bin); "
            "TensorFlow/Flax-only checkpoints are not supported"
        )
    for weight in weights:
        _check_weights(weight)
    return ModelSource(
        ref=ref, path=path.resolve(), from_hub=from_hub, config=config, weights=weights
    )


def _check_weights(path: Path) -> None:
    """Cheap corruption check: readable, non-empty, and a parseable header for safetensors."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if path.suffix == ".safetensors":
                if len(head) < 8:
                    raise ValueError("file is truncated")
                (header_len,) = struct.unpack("<Q", head)
                if header_len <= 0 or header_len > min(size - 8, 100 << 20):
                    raise ValueError("bad header length")
                header = json.loads(fh.read(header_len))
                ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
                if 8 + header_len + max(ends, default=0) > size:
                    raise ValueError("file is truncated (tensor data missing)")
            elif size < 64:
                raise ValueError("file is truncated")
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise InvalidModelError(f"model weights {path} are unreadable or corrupt: {exc}") from exc


def check_disk(output: Path, source: ModelSource, factor: float) -> None:
    """Refuse to start unless the output's file system has ``factor`` x the weight size free."""
    probe = output.resolve()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    needed = int(source.weight_bytes * factor)
    if free < needed:
        raise InsufficientDiskError(
            f"not enough disk space at {probe}: {free / 1e6:.0f} MB free, the export needs about "
            f"{needed / 1e6:.0f} MB ({factor:g} x the {source.weight_bytes / 1e6:.0f} MB of weights)"
        )


def load_tokenizer(source: ModelSource, scratch: Path) -> tuple[Any, Path]:
    """The fast tokenizer and a directory holding its ``tokenizer.json`` (created if missing)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.path), use_fast=True)
    except Exception as exc:  # transformers raises many types for missing/odd tokenizer files
        raise TokenizerError(f"cannot load a tokenizer from {source.path}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError(
            f"{source.ref} has no fast tokenizer (tokenizer.json) and transformers cannot convert its "
            "slow tokenizer; the runtime needs tokenizer.json"
        )
    if (source.path / "tokenizer.json").is_file():
        return tokenizer, source.path
    target = scratch / "tokenizer"
    tokenizer.save_pretrained(str(target))
    if not (target / "tokenizer.json").is_file():
        raise TokenizerError(f"could not create tokenizer.json for {source.ref}")
    return tokenizer, target


def copy_tokenizer(tokenizer_dir: Path, source: ModelSource, dest: Path) -> list[str]:
    """Copy tokenizer files and config.json into the export; returns the copied names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, dest / name)
            copied.append(name)
    shutil.copy2(source.path / "config.json", dest / "config.json")
    return [*copied, "config.json"]


def max_length(source: ModelSource, tokenizer: Any, requested: int | None) -> int:
    """Truncation length: ``--max-length``, else the sentence-transformers / tokenizer / config limit."""
    config = source.config
    limit = config.get("max_position_embeddings")
    if isinstance(limit, int) and source.model_type in PADDED_POSITIONS:
        limit -= int(config.get("pad_token_id") or 1) + 1
    if requested is not None:
        if isinstance(limit, int) and requested > limit:
            raise InvalidSettingError(
                f"--max-length {requested} exceeds the model's limit of {limit} positions"
            )
        return requested
    candidates: list[int] = []
    st_config = source.path / "sentence_bert_config.json"
    if st_config.is_file():
        value = read_json(st_config).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            candidates.append(value)
    if not candidates:
        value = getattr(tokenizer, "model_max_length", None)
        if isinstance(value, int) and 0 < value < 100_000:
            candidates.append(value)
    if isinstance(limit, int) and limit > 0:
        candidates.append(limit)
    return min(candidates) if candidates else 512


def special_tokens(tokenizer: Any) -> dict[str, Any]:
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "mask_token": tokenizer.mask_token,
        "mask_token_id": tokenizer.mask_token_id,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
    }
