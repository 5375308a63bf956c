"""text2text-generation on an exported generative model: one string per row: the generated text (`generated_text` of the pipeline)."""

from __future__ import annotations

from .generative import Seq2SeqGeneration


class Text2TextGeneration(Seq2SeqGeneration):
    name = "text2text-generation"
