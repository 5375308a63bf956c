"""text-generation on an exported generative model: one string per row: the prompt and its continuation (`generated_text`;
``return_full_text=false``: the continuation only)."""

from __future__ import annotations

from .generative import CausalGeneration, generative_spec
from .spec import Column, Param

SPEC = generative_spec(
    "text-generation",
    "generated_text",
    ("text-generation",),
    export_task="text-generation",
    column=Column(
        "text", aliases=("prompt", "inputs", "text_data", "text_inputs"), sql_name="text_data"
    ),
    extra_params=(Param("return_full_text", bool, True, help="false: the continuation only"),),
    example="Exasol is",
    udf_defaults={"do_sample": False},  # SQL results are repeatable (the pipeline samples)
)


class TextGeneration(CausalGeneration):
    spec = SPEC
