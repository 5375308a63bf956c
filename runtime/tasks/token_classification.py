"""token-classification (NER): entities per row, exactly like transformers' pipeline.

``aggregation_strategy="none"`` (the pipeline's default) gives one ``{"entity", "score", "index",
"word", "start", "end"}`` per token whose best label is not ignored; ``simple`` groups adjacent
tokens of the same tag (B-/I- scheme) into ``{"entity_group", "score", "word", "start", "end"}``;
``first``/``average``/``max`` first force one label per word (word boundaries as the pipeline
finds them: a WordPiece/BPE token whose text differs in length from its span in the input is a
subword), then group. ``ignore_labels`` (default ``["O"]``) drops entities with those labels.
``start``/``end`` are character offsets into the input text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidParameter
from ..tokenize import to_seq
from .base import Encoded, Task, softmax
from .spec import (
    DOUBLE_SQL,
    OFFSET_SQL,
    TEXT_SQL,
    Column,
    Field,
    Param,
    Quality,
    TaskSpec,
    UdfOutput,
    UdfSpec,
)

STRATEGIES = ("none", "simple", "first", "average", "max")


_ENTITY = {
    "type": "object",
    "properties": {
        "end": {"type": "long", "required": True},
        "entity": {"type": "string", "required": False},
        "entity_group": {"type": "string", "required": False},
        "score": {"type": "double", "required": True},
        "start": {"type": "long", "required": True},
        "word": {"type": "string", "required": True},
    },
}
SPEC = TaskSpec(
    name="token-classification",
    kind="encoder",
    columns=(Column("text", aliases=("inputs", "sequences", "text_data"), sql_name="text_data"),),
    params=(
        Param("aggregation_strategy", str, "none", choices=(None, *STRATEGIES), per_row=True),
        Param(
            "ignore_labels", (list, str), ["O"], shape=(-1,), help="labels that are not entities"
        ),
    ),
    outputs=(Field("entities", {"type": "array", "items": _ENTITY}),),
    mlflow_tasks=("token-classification", "ner"),
    export_task="token-classification",
    has_labels=True,
    quality=Quality("token_argmax", "token_label_agreement"),
    udf=UdfSpec(
        ("text",),
        (
            UdfOutput("start_pos", OFFSET_SQL, "start", "int"),
            UdfOutput("end_pos", OFFSET_SQL, "end", "int"),
            UdfOutput("word", TEXT_SQL, "word", "str"),
            UdfOutput("entity", TEXT_SQL, "entity_group|entity", "str"),
            UdfOutput("score", DOUBLE_SQL, "score", "float"),
        ),
        "items",
        "json",
        "the entities as a JSON array of {start_pos, end_pos, word, entity, score}",
        {"aggregation_strategy": "simple"},
    ),
    example={"columns": ["text"], "data": [["Angela Merkel met Emmanuel Macron in Brussels."]]},
    onnx_outputs=("logits",),
)


class TokenClassification(Task):
    spec = SPEC

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        raw = self.tokenizer.raw
        # The pipeline's test for a "word aware" tokenizer (WordPiece "##", BPE prefixes).
        self.word_aware = bool(getattr(raw.model, "continuing_subword_prefix", None))
        unk = getattr(raw.model, "unk_token", None)
        self.unk_id = raw.token_to_id(unk) if unk else None
        self.decoder = raw.decoder

    # ---- stages ---------------------------------------------------------------------------
    def encode(self, columns: dict[str, list[Any]], params: dict[str, Any]) -> Encoded:
        texts = columns["text"]
        encodings = self.tokenizer.encode(texts)
        return Encoded([to_seq(e) for e in encodings], (texts, encodings))

    def reduce(self, outputs: dict[str, np.ndarray], lengths: np.ndarray) -> list[Any]:
        logits = outputs["logits"]
        return [np.array(logits[i, :n], dtype=np.float32) for i, n in enumerate(lengths)]

    def decode(self, encoded: Encoded, results: list[Any], params: dict[str, Any]) -> Any:
        strategy = params.get("aggregation_strategy") or "none"
        ignore = self._ignore_labels(params.get("ignore_labels"))
        texts, encodings = encoded.state
        out = []
        for text, enc, logits in zip(texts, encodings, results, strict=True):
            entities = self._row(text, enc, softmax(logits), strategy)
            out.append(
                [
                    e
                    for e in entities
                    if e.get("entity") not in ignore and e.get("entity_group") not in ignore
                ]
            )
        return out

    # ---- post-processing (transformers' TokenClassificationPipeline) -----------------------
    @staticmethod
    def _ignore_labels(value: Any) -> set[str]:
        if value is None:
            return {"O"}
        if isinstance(value, str):
            return {value}
        if not all(isinstance(v, str) for v in value):
            raise InvalidParameter(
                f"Invalid parameters found: ignore_labels={value!r} must be a list of strings."
            )
        return set(value)

    def _tokens_to_string(self, tokens: Sequence[str]) -> str:
        """``convert_tokens_to_string`` of a fast tokenizer: the backend decoder on tokens."""
        if self.decoder is None:
            return " ".join(tokens)
        return self.decoder.decode(list(tokens))

    def _row(self, text: str, enc: Any, scores: np.ndarray, strategy: str) -> list[dict[str, Any]]:
        labels = self.labels
        special = np.asarray(enc.special_tokens_mask, dtype=bool)
        keep = np.flatnonzero(~special[: len(scores)])
        best = scores.argmax(axis=1)
        tokens, offsets, ids = enc.tokens, enc.offsets, enc.ids
        pre: list[dict[str, Any]] = []
        for idx in keep.tolist():
            word = tokens[idx]
            start, end = offsets[idx]
            word_ref = text[start:end]
            if self.word_aware:
                is_subword = len(word) != len(word_ref)
            else:  # the pipeline's fallback heuristic for tokenizers without word pieces
                is_subword = start > 0 and " " not in text[start - 1 : start + 1]
            if self.unk_id is not None and ids[idx] == self.unk_id:
                word, is_subword = word_ref, False
            pre.append(
                {
                    "word": word,
                    "scores": scores[idx],
                    "best": int(best[idx]),
                    "start": start,
                    "end": end,
                    "index": idx,
                    "is_subword": is_subword,
                }
            )
        if strategy in ("none", "simple"):
            entities = [
                {
                    "entity": labels[p["best"]],
                    "score": float(p["scores"][p["best"]]),
                    "index": p["index"],
                    "word": p["word"],
                    "start": p["start"],
                    "end": p["end"],
                }
                for p in pre
            ]
            if strategy == "none":
                return entities
        else:
            entities = self._aggregate_words(pre, strategy)
        return self._group_entities(entities)

    def _aggregate_words(self, pre: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        groups: list[list[dict[str, Any]]] = []
        for p in pre:
            if groups and p["is_subword"]:
                groups[-1].append(p)
            else:
                groups.append([p])
        return [self._aggregate_word(g, strategy) for g in groups]

    def _aggregate_word(self, group: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
        if strategy == "first":
            scores = group[0]["scores"]
        elif strategy == "max":
            scores = max(group, key=lambda p: p["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([p["scores"] for p in group]), axis=0)
        idx = int(scores.argmax())
        return {
            "entity": self.labels[idx],
            "score": float(scores[idx]),
            "word": self._tokens_to_string([p["word"] for p in group]),
            "start": group[0]["start"],
            "end": group[-1]["end"],
        }

    def _group_entities(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        groups: list[list[dict[str, Any]]] = []
        last_tag = None
        for entity in entities:
            bi, tag = _bi_tag(entity["entity"])
            if groups and tag == last_tag and bi != "B":
                groups[-1].append(entity)
            else:
                groups.append([entity])
            last_tag = tag
        return [
            {
                "entity_group": g[0]["entity"].split("-", 1)[-1],
                "score": float(np.nanmean([e["score"] for e in g])),
                "word": self._tokens_to_string([e["word"] for e in g]),
                "start": g[0]["start"],
                "end": g[-1]["end"],
            }
            for g in groups
        ]


def _bi_tag(label: str) -> tuple[str, str]:
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label  # not in B-/I- form: a continuation
