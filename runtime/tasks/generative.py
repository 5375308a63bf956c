"""The generative tasks' shared stages: rows -> prompts -> generated token ids -> one string per row.

``encode`` tokenizes each row (with the model's task prefix, e.g. T5's ``"translate English to
German: "``), rejects inputs over the input limit, and builds one
:class:`~..generation.batch.RowRequest` per row with the request's generation settings over
the model's ``generation_config.json`` defaults; the executor (the generation scheduler, or
the synchronous generator) decodes them; ``decode`` turns token ids into text as transformers'
pipelines do (special tokens skipped, optional tokenization-space clean-up). Sampling with a
``seed`` gives each row its own generator seeded by ``(seed, row)``, so a result does not
depend on which rows shared a batch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from ..errors import BadRequest, ModelLoadError
from ..generation.batch import RowRequest
from ..generation.config import DECODER_ONLY, ENCODER_DECODER, ModelFacts, build_config
from .base import Encoded, Task
from .spec import (
    TEXT_SQL,
    VECTOR_SOURCE,
    Column,
    Field,
    Param,
    Quality,
    TaskSpec,
    UdfOutput,
    UdfSpec,
)

GENERATION_PARAMS = (
    Param("max_new_tokens", int, None, help="new tokens at most (default: the model's)"),
    Param("min_new_tokens", int, None),
    Param("num_beams", int, None, help="beam search with this many beams (1: greedy/sampling)"),
    Param("do_sample", bool, None, help="sample instead of greedy/beam search"),
    Param("temperature", float, None),
    Param("top_k", int, None),
    Param("top_p", float, None),
    Param("repetition_penalty", float, None),
    Param("no_repeat_ngram_size", int, None),
    Param("length_penalty", float, None),
    Param("early_stopping", (bool, str), None, help='true, false or "never" (beam search)'),
    Param("seed", int, None, help="sampling: the same seed gives the same text"),
    Param("stop", (str, list), None, help="stop strings: generation ends after one appears"),
)
TEXT_COLUMN = Column(
    "text", aliases=("inputs", "text_data", "text_inputs", "documents"), sql_name="text_data"
)


def generative_spec(
    name: str,
    output: str,
    mlflow_tasks: tuple[str, ...],
    export_task: str = "text2text-generation",
    column: Column = TEXT_COLUMN,
    extra_params: tuple[Param, ...] = (),
    example: str = "The meeting was moved to Thursday.",
    udf_defaults: dict[str, Any] | None = None,
) -> TaskSpec:
    """The descriptor of a generative task: one text in, one string out (``output`` names it
    as the transformers pipeline does), the generation settings as params."""
    return TaskSpec(
        name=name,
        kind="generative",
        columns=(column,),
        params=(*GENERATION_PARAMS, *extra_params),
        outputs=(Field(output, "string"),),
        mlflow_tasks=mlflow_tasks,
        export_task=export_task,
        has_labels=False,
        quality=Quality("generate", "exact_match"),
        udf=UdfSpec(
            (column.name,),
            (UdfOutput(output, TEXT_SQL, VECTOR_SOURCE, "str"),),
            "items",
            "first",
            f"the {output.replace('_', ' ')}",
            udf_defaults or {},
        ),
        example={"columns": [column.name], "data": [[example]]},
    )


def clean_up_spaces(text: str) -> str:
    """transformers' ``clean_up_tokenization`` (for tokenizers configured to use it)."""
    for old, new in (
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
        (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ):  # fmt: skip
        text = text.replace(old, new)
    return text


class GenerativeTask(Task):
    """Base of the four generative tasks; subclasses set ``name`` and ``architecture``."""

    architecture: ClassVar[str] = ENCODER_DECODER

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        gen = self.manifest.extra.get("generation")
        if not isinstance(gen, dict):
            raise ModelLoadError(
                f"the manifest of this {self.name} model has no generation section"
            )
        self.facts = ModelFacts.from_manifest(gen)
        if self.facts.architecture != self.architecture:
            raise ModelLoadError(
                f"task {self.name} needs an {self.architecture} model, this one is "
                f"{self.facts.architecture}"
            )
        limit = self.options.max_input_tokens
        self.max_input = (
            min(limit, self.facts.max_input_tokens) if limit else self.facts.max_input_tokens
        )
        self.new_tokens_limit = self.options.max_new_tokens_limit
        self.clean_up = bool(gen.get("clean_up_tokenization_spaces"))

    def warmup_payload(self):
        payload = super().warmup_payload()
        payload.params = {"max_new_tokens": 2}
        return payload

    def shares_results(self, params: dict[str, Any]) -> bool:
        """Sampled texts are drawn per row: identical prompts must not share one draw."""
        config, _ = build_config(self.facts, params, self.new_tokens_limit)
        return not config.do_sample

    # ---- stages ---------------------------------------------------------------------------
    def encode(self, columns: dict[str, list[Any]], params: dict[str, Any]) -> Encoded:
        config, total = build_config(self.facts, params, self.new_tokens_limit)
        texts = columns["text"]
        encodings = self.tokenizer.encode([self.facts.prefix + t for t in texts])
        requests = []
        for i, enc in enumerate(encodings):
            prompt = list(enc.ids)
            if len(prompt) > self.max_input:
                raise BadRequest(
                    f"Invalid input. Row {i} has more than {self.max_input} tokens, the most this "
                    f"model takes (--max-input-tokens); shorten the text."
                )
            if not prompt:
                raise BadRequest(f"Invalid input. Row {i} is empty after tokenization.")
            start = prompt if self.architecture == DECODER_ONLY else [self._decoder_start()]
            cfg = config.for_prompt(len(start))
            if total is not None:  # the model's max_length, as transformers counts it
                cfg = replace(
                    cfg, max_new_tokens=max(1, min(self.new_tokens_limit, total - len(start)))
                )
            self._check_positions(i, len(prompt), cfg.max_new_tokens)
            rng = np.random.default_rng(None if cfg.seed is None else [cfg.seed, i])
            requests.append(RowRequest(prompt, start, cfg, self._stop(cfg.stop), rng))
        return Encoded(requests, [(t, r.prompt) for t, r in zip(texts, requests, strict=True)])

    def reduce(self, outputs: dict[str, np.ndarray], lengths: np.ndarray) -> list[Any]:
        raise NotImplementedError("generative tasks are decoded by the generation scheduler")

    def decode(self, encoded: Encoded, results: list[Any], params: dict[str, Any]) -> Any:
        return [self.text(tokens) for tokens in results]

    # ---- helpers --------------------------------------------------------------------------
    def text(self, tokens: list[int]) -> str:
        text = self.tokenizer.decode(tokens)
        return clean_up_spaces(text) if self.clean_up else text

    def _decoder_start(self) -> int:
        start = self.facts.decoder_start_token_id
        return self.facts.pad_token_id if start is None else int(start)

    def _check_positions(self, row: int, prompt: int, new: int) -> None:
        limit = self.facts.max_positions
        if self.architecture == DECODER_ONLY and limit and prompt + new > limit:
            raise BadRequest(
                f"Invalid input. Row {row}: {prompt} prompt tokens + max_new_tokens={new} exceed "
                f"the model's {limit} positions; shorten the prompt or lower max_new_tokens."
            )

    def _stop(self, stop: tuple[str, ...]):
        if not stop:
            return None

        def hit(generated: list[int]) -> bool:
            tail = self.tokenizer.decode(generated[-16:])
            return any(s in tail for s in stop)

        return hit


class Seq2SeqGeneration(GenerativeTask):
    architecture = ENCODER_DECODER


class CausalGeneration(GenerativeTask):
    """text-generation: the prompt plus its continuation (``return_full_text``, as the pipeline)."""

    architecture = DECODER_ONLY

    def decode(self, encoded: Encoded, results: list[Any], params: dict[str, Any]) -> Any:
        out = []
        for (text, prompt), tokens in zip(encoded.state, results, strict=True):
            new = self.text(prompt + tokens)[len(self.text(prompt)) :]
            out.append(text + new if params["return_full_text"] else new)
        return out
