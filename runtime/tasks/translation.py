"""translation on an exported generative model: one string per row: the translation (`translation_text` of the pipeline)."""

from __future__ import annotations

from .generative import Seq2SeqGeneration


class Translation(Seq2SeqGeneration):
    name = "translation"
