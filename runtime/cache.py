"""Cache entries shared by every cache writer: one locked, atomic builder, and the helpers it needs.

A leaf module (standard library only), so that the model resolver, the MLflow download cache
and the benchmarks can all use it without importing each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: best effort
            pass
        yield


def build_once(target: Path, is_ok: Callable[[Path], bool], build: Callable[[Path], Path]) -> Path:
    """The cache entry ``target``, built at most once even when several processes start at once.

    Under a file lock a good entry is reused and a partial or corrupt one is removed; ``build(tmp)``
    works in a temp dir beside the target and returns the directory that is renamed into place,
    so readers never see a half-written entry.
    """
    root = target.parent
    with file_lock(root / f".{target.name}.lock"):
        if is_ok(target):
            log.info("using cached %s", target)
            return target
        if target.exists():
            log.warning("cache entry %s is incomplete or corrupt; rebuilding it", target)
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}.tmp-"))
        try:
            os.replace(build(tmp), target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def fingerprint(source: str) -> str:
    path = Path(source)
    parts = [source]
    if path.is_dir():
        parts = [str(path.resolve())]
        for child in sorted(path.iterdir()):
            if child.is_file():
                stat = child.stat()
                parts.append(f"{child.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)
