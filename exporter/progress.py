"""Stage lines on stderr (``[2/6] exporting to ONNX ... 1.8s``) and a lid on library log noise."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from typing import TextIO

NOISY_LOGGERS = ("optimum", "transformers", "onnxruntime", "torch", "huggingface_hub", "root", "")


class Progress:
    """Numbered stage lines; each stage line is finished with its duration (or 'failed')."""

    def __init__(self, total: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.index = 0
        self._open: float | None = None
        self.started = time.perf_counter()

    def stage(self, text: str) -> None:
        self._close("")
        self.index += 1
        if self.enabled:
            self.stream.write(f"[{self.index}/{self.total}] {text} ...")
            self.stream.flush()
        self._open = time.perf_counter()

    def note(self, text: str) -> None:
        if self.enabled:
            self._close("")
            self.stream.write(f"      {text}\n")
            self.stream.flush()

    def _close(self, suffix: str) -> None:
        if self._open is not None and self.enabled:
            self.stream.write(f" {time.perf_counter() - self._open:.1f}s{suffix}\n")
            self.stream.flush()
        self._open = None

    def done(self, text: str) -> None:
        self._close("")
        if self.enabled:
            self.stream.write(f"{text} in {time.perf_counter() - self.started:.1f}s\n")
            self.stream.flush()

    def failed(self) -> None:
        if self._open is not None and self.enabled:
            self.stream.write(" failed\n")
            self.stream.flush()
        self._open = None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence warnings and INFO/WARNING logs of torch, transformers, optimum and ONNX Runtime."""
    saved = {name: logging.getLogger(name or None).level for name in NOISY_LOGGERS}
    for name in saved:
        logging.getLogger(name or None).setLevel(logging.ERROR)
    verbosity = []  # (library logging module, previous verbosity)
    for module_name in ("transformers.utils.logging", "optimum.utils.logging"):
        with contextlib.suppress(ImportError):
            module = importlib.import_module(module_name)
            verbosity.append((module, module.get_verbosity()))
            module.set_verbosity_error()
    with contextlib.suppress(ImportError):
        import onnxruntime as ort

        ort.set_default_logger_severity(3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name or None).setLevel(level)
        for module, level in verbosity:
            module.set_verbosity(level)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Mute file descriptor 2 (C++ logs). onnxruntime-gpu lists the CUDA EP even where its
    libraries are missing, then logs an error while falling back to CPU; we handle the fallback."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
