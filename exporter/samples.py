"""Validation texts: ~32 built-in varied sentences, or the user's ``--calibration`` file.

The file holds one text per line, or JSON Lines with a ``"text"`` field (question answering also
reads ``"question"``/``"context"``, pair classification ``"text_pair"``). The samples feed the
quality report (ONNX vs PyTorch); dynamic INT8 quantisation itself needs no calibration data.
"""

from __future__ import annotations

import json
from pathlib import Path

from exasol_mlflow_server.exporter.errors import InvalidSettingError

MAX_SAMPLES = 512

_SHORT = [
    "Hello world",
    "Paris",
    "I love pizza!",
    "How do I reset my password?",
    "The meeting was moved to Thursday.",
    "Stock prices fell sharply on Monday.",
    "Is this product available in blue?",
    "Exasol is an in-memory analytics database.",
    "She sells sea shells by the sea shore.",
    "Quantum computers use qubits that can be in superposition.",
    "My flight from Berlin to New York was delayed by three hours.",
    "The new smartphone has an excellent camera but poor battery life.",
    "Angela Merkel met Emmanuel Macron in Brussels to discuss the budget.",
    "Please send the quarterly report to the finance team by Friday.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
    "Ich habe heute keine Zeit, vielleicht morgen.",
]
_MEDIUM = [
    "Machine learning models can be exported to ONNX so that they run quickly on ordinary CPUs "
    "without a deep learning framework installed, which makes deployment in databases much easier.",
    "The customer complained that the delivery arrived two weeks late, the box was damaged, and "
    "nobody from support answered the three emails she sent during that time.",
    "Researchers at the University of Cambridge published a study showing that regular exercise "
    "improves memory and concentration in adults over sixty.",
    "To configure the server, set the model path, choose the number of threads, and make sure the "
    "port is not already used by another process on the same machine.",
    "After the match, the coach said the team played well in the first half but lost focus after "
    "the opponents scored an early goal in the second.",
    "The recipe calls for two cups of flour, one teaspoon of baking soda, a pinch of salt, three "
    "eggs, and a generous amount of butter.",
    "Global temperatures have risen by more than one degree since pre-industrial times, and the "
    "last decade was the warmest on record.",
    "Our quarterly revenue grew by twelve percent, driven mainly by strong sales in Europe and a "
    "successful product launch in Japan.",
]
_LONG_PARTS = [
    "Exasol is a high-performance, in-memory, massively parallel processing analytics database.",
    "User defined functions let analysts run Python, Java, R or Lua code right next to the data.",
    "Calling a model server from a UDF keeps heavy machine learning dependencies out of the database.",
    "The server batches requests from many UDF instances, which keeps the CPU or GPU busy.",
    "Quantised INT8 models are usually two to three times faster than fp32 on modern CPUs.",
    "Sentence embeddings map texts to vectors so that similar meanings end up close together.",
    "Classification models assign labels such as positive or negative to whole sentences.",
    "Token classification finds names of people, organisations and places inside a text.",
    "Question answering extracts the span of a context that answers a given question.",
    "Fill-mask models predict a missing word from the words around it.",
]


def _long(n_parts: int, offset: int) -> str:
    parts = [_LONG_PARTS[(offset + i) % len(_LONG_PARTS)] for i in range(n_parts)]
    return " ".join(parts)


BUILTIN_TEXTS: list[str] = [
    *_SHORT,
    *_MEDIUM,
    _long(3, 0),
    _long(5, 3),
    _long(7, 1),
    _long(10, 5),  # about 200 tokens
    _long(10, 0),
    _long(4, 7),
    _long(6, 2),
    _long(8, 4),
]

_QUESTIONS = [
    ("What is Exasol?", 0),
    ("What do user defined functions let analysts do?", 1),
    ("How much faster are INT8 models?", 4),
    ("What do sentence embeddings map texts to?", 5),
    ("What does token classification find?", 7),
    ("What does a fill-mask model predict?", 9),
]
_HYPOTHESES = ["politics", "sports", "technology", "business", "food", "travel"]


def builtin_samples(task: str) -> list[dict[str, str]]:
    """The built-in validation set for ``task`` (varied lengths, a few words to ~200 tokens)."""
    if task == "question-answering":
        samples = []
        for n_parts in (2, 3, 5, 10):
            for question, idx in _QUESTIONS:
                context = " ".join(
                    _LONG_PARTS[(idx - 1 + i) % len(_LONG_PARTS)] for i in range(n_parts)
                )
                samples.append({"question": question, "context": context})
        return samples
    if task == "zero-shot-classification":
        return [
            {
                "text": text,
                "text_pair": f"This example is about {_HYPOTHESES[i % len(_HYPOTHESES)]}.",
            }
            for i, text in enumerate(BUILTIN_TEXTS)
        ]
    return [{"text": text} for text in BUILTIN_TEXTS]


def load_samples(path: Path, task: str) -> list[dict[str, str]]:
    """Samples from a calibration file (plain lines or JSON Lines); at most MAX_SAMPLES."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSettingError(f"cannot read --calibration file {path}: {exc}") from exc
    samples: list[dict[str, str]] = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        sample = _parse_line(line, path, number)
        if task == "question-answering":
            if "context" not in sample:
                sample = {
                    "question": sample.get("question", "What is this about?"),
                    "context": sample["text"],
                }
            sample.setdefault("question", "What is this about?")
        elif "text" not in sample:
            raise InvalidSettingError(f"{path}:{number}: JSON line has no 'text' field")
        samples.append(sample)
        if len(samples) >= MAX_SAMPLES:
            break
    if not samples:
        raise InvalidSettingError(f"--calibration file {path} holds no texts")
    return samples


def _parse_line(line: str, path: Path, number: int) -> dict[str, str]:
    if not line.startswith("{"):
        return {"text": line}
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidSettingError(f"{path}:{number}: invalid JSON line: {exc}") from exc
    fields = {
        k: str(v)
        for k, v in data.items()
        if k in ("text", "text_pair", "question", "context") and v
    }
    if not fields:
        raise InvalidSettingError(f"{path}:{number}: JSON line has no 'text' field")
    return fields
