"""fill-mask: the ``top_k`` best fillers of the mask token, like transformers' pipeline.

Per row: a list of ``{"score", "token", "token_str", "sequence"}`` (best first) for a single
mask; with several masks, one such list per mask (and, like the pipeline, ``sequence`` then keeps
the special tokens). A row without the mask token is a bad request.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BadRequest, InvalidParameter
from ..tokenize import to_seq
from .base import Encoded, Task, softmax
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

_CANDIDATE = {
    "type": "object",
    "properties": {
        "score": {"type": "double", "required": True},
        "sequence": {"type": "string", "required": True},
        "token": {"type": "long", "required": True},
        "token_str": {"type": "string", "required": True},
    },
}
SPEC = TaskSpec(
    name="fill-mask",
    kind="encoder",
    columns=(Column("text", aliases=("inputs", "sequences", "text_data"), sql_name="text_data"),),
    params=(Param("top_k", int, 5, per_row=True),),
    outputs=(Field("predictions", {"type": "array", "items": _CANDIDATE}),),
    mlflow_tasks=("fill-mask",),
    export_task="fill-mask",
    has_labels=False,
    quality=Quality("masked_argmax", "top1_agreement"),
    udf=UdfSpec(
        ("text",),
        (
            UdfOutput("filled_text", TEXT_SQL, "sequence", "str", echoes_input=True),
            UdfOutput("token_str", TEXT_SQL, "token_str", "str"),
            UdfOutput("score", DOUBLE_SQL, "score", "float"),
            UdfOutput("rank", RANK_SQL, RANK_SOURCE, "int"),
        ),
        "groups",
        "first",
        "the text with the best token filled in",
    ),
    example={"columns": ["text"], "data": [["Paris is the {mask} of France."]]},
    onnx_outputs=("logits",),
)


class FillMask(Task):
    spec = SPEC

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        special = self.manifest.special_tokens
        self.mask_token = special.mask_token or "[MASK]"
        mask_id = special.mask_token_id
        if mask_id is None:
            mask_id = self.tokenizer.token_to_id(self.mask_token)
        if mask_id is None:
            raise ValueError(f"the tokenizer has no mask token {self.mask_token!r}")
        self.mask_id = int(mask_id)
        self.pad_id = self.tokenizer.pad_id

    def warmup_payload(self):
        payload = super().warmup_payload()
        payload.columns["text"] = [f"warm {self.mask_token}"]
        return payload

    # ---- stages ---------------------------------------------------------------------------
    def encode(self, columns: dict[str, list[Any]], params: dict[str, Any]) -> Encoded:
        top_k = params["top_k"]
        if top_k < 1:
            raise InvalidParameter(f"Invalid parameters found: top_k={top_k} must be >= 1.")
        seqs = [to_seq(e) for e in self.tokenizer.encode(columns["text"])]
        masks = []
        for i, (ids, _) in enumerate(seqs):
            positions = np.flatnonzero(ids == self.mask_id)
            if not len(positions):
                raise BadRequest(
                    f"Invalid input. Row {i} has no mask token: fill-mask needs "
                    f"{self.mask_token!r} in every text."
                )
            masks.append(positions)
        return Encoded(seqs, masks)

    def reduce(self, outputs: dict[str, np.ndarray], lengths: np.ndarray) -> list[Any]:
        # Only the mask positions' logits (copies): a batch's full logits are tokens x vocab.
        logits, ids = outputs["logits"], outputs["input_ids"]
        return [logits[i, :n][ids[i, :n] == self.mask_id] for i, n in enumerate(lengths)]

    def decode(self, encoded: Encoded, results: list[Any], params: dict[str, Any]) -> Any:
        top_k = params["top_k"]
        return [
            self._row(ids, masks, logits, top_k)
            for (ids, _), masks, logits in zip(encoded.seqs, encoded.state, results, strict=True)
        ]

    # ---- helpers --------------------------------------------------------------------------
    def _row(self, ids: np.ndarray, masks: np.ndarray, logits: np.ndarray, top_k: int) -> Any:
        probs = softmax(np.asarray(logits, dtype=np.float32))  # (masks, vocab), from reduce
        top_k = min(top_k, probs.shape[1])
        if top_k < probs.shape[1]:
            part = np.argpartition(-probs, top_k - 1, axis=1)[:, :top_k]
        else:
            part = np.tile(np.arange(probs.shape[1]), (len(probs), 1))
        top_scores = np.take_along_axis(probs, part, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        best = np.take_along_axis(part, order, axis=1)
        single = len(masks) == 1
        raw = self.tokenizer.raw
        rows = []
        for i, pos in enumerate(masks.tolist()):
            row = []
            for token in best[i].tolist():
                tokens = ids.copy()
                tokens[pos] = token
                tokens = tokens[tokens != self.pad_id]
                row.append(
                    {
                        "score": float(probs[i, token]),
                        "token": token,
                        "token_str": raw.decode([token], skip_special_tokens=False),
                        "sequence": raw.decode(tokens.tolist(), skip_special_tokens=single),
                    }
                )
            rows.append(row)
        return rows[0] if single else rows
