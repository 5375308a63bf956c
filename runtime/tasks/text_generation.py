"""text-generation on an exported generative model: one string per row: the prompt and its continuation (`generated_text`; `return_full_text=false`: the continuation only)."""

from __future__ import annotations

from .generative import CausalGeneration


class TextGeneration(CausalGeneration):
    name = "text-generation"
