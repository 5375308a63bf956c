"""translation on an exported generative model: one string per row: the translation (`translation_text` of the pipeline). MLflow tasks such as
``translation_en_to_de`` are served as this task (the exporter takes that pair's prefix and settings
from ``task_specific_params``)."""

from __future__ import annotations

from .generative import Seq2SeqGeneration, generative_spec

SPEC = generative_spec("translation", "translation_text", ("translation",))


class Translation(Seq2SeqGeneration):
    spec = SPEC
