"""zero-shot-classification: ``{"sequence", "labels", "scores"}`` per row, best label first.

Like transformers' ``ZeroShotClassificationPipeline``: every (text, candidate label) becomes one
NLI pair ``(text, hypothesis_template.format(label))`` (its own sequence for the batcher). Single
label mode softmaxes the entailment logits across the row's labels; ``multi_label`` (or a single
candidate label) scores each label on its own: softmax over [contradiction, entailment].
Labels come per row from the ``candidate_labels`` column, or from the ``candidate_labels`` param.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tokenizers import Encoding

from ..errors import BadRequest, InvalidParameter
from ..tokenize import to_seq
from .base import Encoded, Task, _as_label_list, softmax
from .spec import (
    DOUBLE_SQL,
    RANK_SOURCE,
    RANK_SQL,
    TEXT_SQL,
    Column,
    Field,
    Param,
    Quality,
    TaskSpec,
    UdfOutput,
    UdfSpec,
)

DEFAULT_TEMPLATE = "This example is {}."


SPEC = TaskSpec(
    name="zero-shot-classification",
    kind="encoder",
    columns=(
        Column("text", aliases=("sequences", "inputs", "text_data"), sql_name="text_data"),
        Column("candidate_labels", required=False, is_list=True),
    ),
    params=(
        Param(
            "candidate_labels",
            (list, str),
            [],
            shape=(-1,),
            help="labels for every row (or a per-row candidate_labels column)",
        ),
        Param("hypothesis_template", str, DEFAULT_TEMPLATE, per_row=True),
        Param("multi_label", bool, False, per_row=True),
    ),
    outputs=(
        Field("sequence", "string"),
        Field("labels", {"type": "array", "items": {"type": "string"}}),
        Field("scores", {"type": "array", "items": {"type": "double"}}),
    ),
    mlflow_tasks=("zero-shot-classification",),
    export_task="text-classification",  # an NLI sequence classifier; the runtime builds the pairs
    has_labels=True,
    quality=Quality("argmax", "label_agreement"),
    udf=UdfSpec(
        ("text", "candidate_labels"),
        (
            UdfOutput("label", TEXT_SQL, "labels", "str"),
            UdfOutput("score", DOUBLE_SQL, "scores", "float"),
            UdfOutput("rank", RANK_SQL, RANK_SOURCE, "int"),
        ),
        "parallel",
        "first",
        "the best candidate label",
    ),
    example={
        "columns": ["text", "candidate_labels"],
        "data": [["The match ended with a late goal.", ["sports", "politics", "technology"]]],
    },
    onnx_outputs=("logits",),
)


class ZeroShotClassification(Task):
    spec = SPEC

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        ids = self.manifest.zero_shot
        entail = ids.entailment_id if ids else None
        if entail is None:  # the pipeline's fallback: the first label named "entail..."
            entail = next(
                (i for i, lab in enumerate(self.labels) if lab.lower().startswith("entail")), -1
            )
        contra = ids.contradiction_id if ids else None
        if contra is None:  # the pipeline's choice
            contra = -1 if entail == 0 else 0
        self.entailment_id, self.contradiction_id = int(entail), int(contra)

    def warmup_payload(self):
        payload = super().warmup_payload()
        payload.columns["candidate_labels"] = [["a", "b"]]
        return payload

    # ---- stages ---------------------------------------------------------------------------
    def encode(self, columns: dict[str, list[Any]], params: dict[str, Any]) -> Encoded:
        texts = columns["text"]
        per_row = columns.get("candidate_labels")
        if per_row is None:
            shared = params.get("candidate_labels")
            if shared is None or shared == []:  # [] is the declared default: none given
                raise BadRequest(
                    "Invalid input. zero-shot-classification needs candidate labels: send a "
                    "'candidate_labels' column or a 'candidate_labels' param."
                )
            try:
                shared = _as_label_list(shared, "candidate_labels", 0)
            except BadRequest:
                raise InvalidParameter(
                    f"Invalid parameters found: candidate_labels={shared!r} must be a non-empty "
                    "list of strings (or a comma-separated string)."
                ) from None
            per_row = [shared] * len(texts)
        template = params.get("hypothesis_template") or DEFAULT_TEMPLATE
        hypotheses = [[self._hypothesis(template, lab) for lab in labels] for labels in per_row]
        pairs = [(t, h) for t, hs in zip(texts, hypotheses, strict=True) for h in hs]
        encodings = self._encode_pairs(pairs)
        return Encoded([to_seq(e) for e in encodings], (texts, per_row))

    def reduce(self, outputs: dict[str, np.ndarray], lengths: np.ndarray) -> list[Any]:
        return list(np.array(outputs["logits"], dtype=np.float32))

    def decode(self, encoded: Encoded, results: list[Any], params: dict[str, Any]) -> Any:
        texts, per_row = encoded.state
        multi = bool(params.get("multi_label"))
        out, pos = [], 0
        for text, labels in zip(texts, per_row, strict=True):
            logits = np.stack(results[pos : pos + len(labels)])
            pos += len(labels)
            if multi or len(labels) == 1:
                pair = logits[:, [self.contradiction_id, self.entailment_id]]
                scores = softmax(pair, axis=-1)[:, 1]
            else:
                scores = softmax(logits[:, self.entailment_id])
            order = list(reversed(scores.argsort()))  # the pipeline's order, ties included
            out.append(
                {
                    "sequence": text,
                    "labels": [labels[i] for i in order],
                    "scores": scores[order].tolist(),
                }
            )
        return out

    # ---- helpers --------------------------------------------------------------------------
    @staticmethod
    def _hypothesis(template: str, label: str) -> str:
        try:
            hypothesis = template.format(label)
        except (IndexError, KeyError, ValueError) as exc:
            raise InvalidParameter(
                f"Invalid parameters found: hypothesis_template={template!r} cannot be formatted "
                f"with a label ({exc}); use one '{{}}' where the label goes."
            ) from None
        if hypothesis == template:
            raise InvalidParameter(
                f"Invalid parameters found: hypothesis_template={template!r} has no '{{}}' where "
                "the label should go."
            )
        return hypothesis

    def _encode_pairs(self, pairs: list[tuple[str, str]]) -> list[Encoding]:
        """Truncate only the text (never the hypothesis), like the pipeline."""
        max_length = self.tokenizer.max_length
        tok = self.tokenizer.truncating(max_length, 0, "only_first")
        try:
            return tok.encode_batch(pairs)
        except Exception:  # some hypothesis alone is too long: those pairs truncate both sides
            fallback = self.tokenizer.truncating(max_length, 0, "longest_first")
            out = []
            for pair in pairs:
                try:
                    out.append(tok.encode(*pair))
                except Exception:
                    out.append(fallback.encode(*pair))
            return out
