"""Serving state: the models being served, each swapped atomically when a new version is ready.

Not an HTTP concern: the HTTP resources read it, the server fills it, the reloader swaps it.
:class:`Models` holds one :class:`ModelState` per served model, in the order given on the
command line; the first is the default (plain ``POST /invocations``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import NotReady, ShuttingDown, UnknownModel
from .pipeline import Pipeline


class ModelState:
    """One served model: its pipeline, swapped atomically when a new version is ready."""

    def __init__(self, name: str = "model") -> None:
        self.name = name
        # (pipeline, version) in one reference, so a request reads both atomically
        self._current: tuple[Pipeline, str | None] | None = None
        self.info: dict[str, Any] = {}
        self._lock = threading.Lock()

    def snapshot(self) -> tuple[Pipeline, str | None]:
        current = self._current
        if current is None:
            raise NotReady(f"The model {self.name!r} is not ready yet (loading or warming up).")
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

    def close(self) -> None:
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            current[0].close()


class Models:
    """The served models by name; the first one is the default."""

    def __init__(self, states: Sequence[ModelState]) -> None:
        if not states:
            raise ValueError("no models")
        self._states = {state.name: state for state in states}
        if len(self._states) != len(states):
            raise ValueError("model names must be unique")
        self.default = states[0]
        self.draining = False

    def __iter__(self) -> Iterator[ModelState]:
        return iter(self._states.values())

    def __len__(self) -> int:
        return len(self._states)

    @property
    def names(self) -> list[str]:
        return list(self._states)

    def get(self, name: str | None) -> ModelState:
        """The model called ``name`` (None: the default); :class:`UnknownModel` if none is."""
        if name is None:
            return self.default
        state = self._states.get(name)
        if state is None:
            raise UnknownModel(
                f"No model named {name!r} is served here (served: {', '.join(self._states)})."
            )
        return state

    @property
    def ready(self) -> bool:
        return all(state.ready for state in self)

    def check_ready(self, state: ModelState | None = None) -> None:
        """Raise unless the server (or one model) takes traffic: every model loaded, not draining."""
        if self.draining:
            raise ShuttingDown("The server is shutting down; retry on another server.")
        for each in [state] if state is not None else list(self):
            each.snapshot()

    def close(self) -> None:
        for state in self:
            state.close()
