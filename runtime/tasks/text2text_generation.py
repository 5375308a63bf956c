"""text2text-generation on an exported generative model: one string per row: the generated text (`generated_text` of the pipeline)."""

from __future__ import annotations

from .generative import Seq2SeqGeneration, generative_spec

SPEC = generative_spec("text2text-generation", "generated_text", ("text2text-generation",))


class Text2TextGeneration(Seq2SeqGeneration):
    spec = SPEC
