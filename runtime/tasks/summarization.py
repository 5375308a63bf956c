"""summarization on an exported generative model: one string per row: the summary (`summary_text` of the pipeline)."""

from __future__ import annotations

from .generative import Seq2SeqGeneration, generative_spec

SPEC = generative_spec("summarization", "summary_text", ("summarization",))


class Summarization(Seq2SeqGeneration):
    spec = SPEC
