"""Serving state: the pipeline being served, swapped atomically when a new model version is ready.

Not an HTTP concern: the HTTP resources read it, the server fills it, the reloader swaps it.
"""

from __future__ import annotations

import threading
from typing import Any

from .errors import NotReady
from .pipeline import Pipeline


class ModelState:
    """The pipeline being served; swapped atomically when a new model version is ready."""

    def __init__(self) -> None:
        # (pipeline, version) in one reference, so a request reads both atomically
        self._current: tuple[Pipeline, str | None] | None = None
        self.info: dict[str, Any] = {}
        self._lock = threading.Lock()

    def snapshot(self) -> tuple[Pipeline, str | None]:
        current = self._current
        if current is None:
            raise NotReady("The model is not ready yet (loading or warming up).")
        return current

    def current(self) -> Pipeline:
        return self.snapshot()[0]

    @property
    def version(self) -> str | None:
        current = self._current
        return None if current is None else current[1]

    @property
    def ready(self) -> bool:
        return self._current is not None

    def swap(
        self, pipeline: Pipeline, info: dict[str, Any], version: str | None = None
    ) -> Pipeline | None:
        with self._lock:
            old = None if self._current is None else self._current[0]
            self.info = info
            self._current = (pipeline, version)
        return old
