"""question-answering (extractive): ``{"answer", "score", "start", "end"}`` per row.

Replicates transformers' ``QuestionAnsweringPipeline`` (fast-tokenizer path): the context is
split into overlapping windows of ``max_seq_len`` tokens (``doc_stride`` tokens of overlap), each
window is one sequence for the batcher; per window the start/end logits outside the context are
masked, softmaxed, and every span of at most ``max_answer_len`` tokens is scored start x end.
Spans are widened to whole words (``align_to_words``), equal answers (case-insensitive) add up
their scores, and the best ``top_k`` over all windows are returned. ``start``/``end`` are
character offsets into the context. Like the pipeline, one answer is a dict, several a list.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BadRequest, InvalidParameter
from ..tokenize import to_seq
from .base import Encoded, Task
from .spec import (
    DOUBLE_SQL,
    OFFSET_SQL,
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

NULL_SCORE = 1000000.0  # the pipeline's initial "min_null_score"


SPEC = TaskSpec(
    name="question-answering",
    kind="encoder",
    columns=(Column("question"), Column("context", sql_name="context_text")),
    params=(
        Param("top_k", int, 1, per_row=True),
        Param("max_answer_len", int, 15, per_row=True),
        Param("doc_stride", int, None, help="default: max_seq_len // 2, at most 128"),
        Param("max_question_len", int, 64, help="accepted; the fast-tokenizer pipeline ignores it"),
        Param("max_seq_len", int, None, help="default: the model's max length, at most 384"),
        Param("handle_impossible_answer", bool, False, per_row=True),
        Param("align_to_words", bool, True),
    ),
    outputs=(
        Field("answer", "string"),
        Field("score", "double"),
        Field("start", "long"),
        Field("end", "long"),
    ),
    mlflow_tasks=("question-answering",),
    export_task="question-answering",
    has_labels=False,
    quality=Quality("span_argmax", "answer_agreement"),
    udf=UdfSpec(
        ("question", "context"),
        (
            UdfOutput("answer", TEXT_SQL, "answer", "str"),
            UdfOutput("score", DOUBLE_SQL, "score", "float"),
            UdfOutput("start_pos", OFFSET_SQL, "start", "int"),
            UdfOutput("end_pos", OFFSET_SQL, "end", "int"),
            UdfOutput("rank", RANK_SQL, RANK_SOURCE, "int"),
        ),
        "items",
        "first",
        "the answer",
    ),
    example={
        "columns": ["question", "context"],
        "data": [
            ["Where is the database?", "The Exasol database runs in a data centre in Nuremberg."]
        ],
    },
    onnx_outputs=("start_logits", "end_logits"),
)


class QuestionAnswering(Task):
    spec = SPEC

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.cls_id = self.manifest.special_tokens.cls_token_id
        self.n_special = self.tokenizer.raw.num_special_tokens_to_add(True)

    # ---- stages ---------------------------------------------------------------------------
    def encode(self, columns: dict[str, list[Any]], params: dict[str, Any]) -> Encoded:
        max_seq_len, stride = self._lengths(params)
        if params["top_k"] < 1:
            raise InvalidParameter(
                f"Invalid parameters found: top_k={params['top_k']} must be >= 1."
            )
        if params["max_answer_len"] < 1:
            raise InvalidParameter(
                f"Invalid parameters found: max_answer_len={params['max_answer_len']} must be >= 1."
            )
        questions, contexts = columns["question"], columns["context"]
        for name, values in (("question", questions), ("context", contexts)):
            for i, v in enumerate(values):
                if not v:
                    raise BadRequest(f"Invalid input. Column {name!r} row {i} cannot be empty.")
        self._check_windows(questions, contexts, max_seq_len, stride)
        tok = self.tokenizer.truncating(max_seq_len, stride, "only_second")
        try:
            encodings = tok.encode_batch(list(zip(questions, contexts, strict=True)))
        except Exception as exc:  # e.g. a question longer than max_seq_len
            raise BadRequest(
                f"Invalid input. Cannot tokenize the question/context: {exc}"
            ) from None
        windows = [[enc, *enc.overflowing] for enc in encodings]
        seqs = [to_seq(w) for row in windows for w in row]
        return Encoded(seqs, (contexts, windows))

    def reduce(self, outputs: dict[str, np.ndarray], lengths: np.ndarray) -> list[Any]:
        start, end = outputs["start_logits"], outputs["end_logits"]
        return [
            np.stack([start[i, :n], end[i, :n]]).astype(np.float32, copy=False)
            for i, n in enumerate(lengths)
        ]

    def decode(self, encoded: Encoded, results: list[Any], params: dict[str, Any]) -> Any:
        contexts, windows = encoded.state
        out, pos = [], 0
        for context, row in zip(contexts, windows, strict=True):
            out.append(self._answers(context, row, results[pos : pos + len(row)], params))
            pos += len(row)
        return out

    # ---- helpers --------------------------------------------------------------------------
    def _lengths(self, params: dict[str, Any]) -> tuple[int, int]:
        limit = self.tokenizer.max_length
        max_seq_len = params.get("max_seq_len") or min(limit, 384)
        if not 0 < max_seq_len <= limit:
            raise InvalidParameter(
                f"Invalid parameters found: max_seq_len={max_seq_len} must be in 1..{limit} "
                "(the model's max_length)."
            )
        stride = params.get("doc_stride")
        stride = min(max_seq_len // 2, 128) if stride is None else stride
        if not 0 <= stride <= max_seq_len:
            raise InvalidParameter(
                f"Invalid parameters found: doc_stride={stride} must be in 0..max_seq_len "
                f"({max_seq_len})."
            )
        return max_seq_len, stride

    def _check_windows(
        self, questions: list[str], contexts: list[str], max_seq_len: int, stride: int
    ) -> None:
        """Reject rows the tokenizer cannot window (it would panic or fail on them)."""
        plain = self.tokenizer.truncating(1 << 30)
        q_lens = [len(e) for e in plain.encode_batch(questions, add_special_tokens=False)]
        for i, q_len in enumerate(q_lens):
            room = max_seq_len - q_len - self.n_special  # context tokens per window
            if room < 1:
                raise BadRequest(
                    f"Invalid input. The question of row {i} has {q_len} tokens: too long for "
                    f"max_seq_len={max_seq_len}."
                )
            if stride >= room and len(plain.encode(contexts[i], add_special_tokens=False)) > room:
                raise InvalidParameter(
                    f"Invalid parameters found: doc_stride={stride} must be smaller than the "
                    f"{room} context tokens per window of row {i}; lower doc_stride or raise "
                    "max_seq_len."
                )

    def _answers(
        self, context: str, windows: list[Any], logits: list[np.ndarray], params: dict[str, Any]
    ) -> Any:
        top_k = params["top_k"]
        impossible = params["handle_impossible_answer"]
        align = params["align_to_words"]
        pre_topk = top_k * 2 + 10 if align else top_k
        min_null = NULL_SCORE
        answers: list[dict[str, Any]] = []
        by_text: dict[str, dict[str, Any]] = {}
        for enc, window in zip(windows, logits, strict=True):
            starts, ends, scores, min_null = self._spans(
                enc, window, min_null, pre_topk, impossible, params["max_answer_len"]
            )
            for s, e, score in zip(starts.tolist(), ends.tolist(), scores.tolist(), strict=True):
                lo, hi = _char_span(enc, s, e, align)
                text = context[lo:hi]
                known = by_text.get(text.lower())
                if known is not None:
                    known["score"] += score
                else:
                    answer = {"answer": text, "score": score, "start": lo, "end": hi}
                    by_text[text.lower()] = answer
                    answers.append(answer)
        if impossible:
            answers.append({"answer": "", "score": min_null, "start": 0, "end": 0})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers

    def _spans(
        self,
        enc: Any,
        window: np.ndarray,
        min_null: float,
        topk: int,
        impossible: bool,
        max_answer_len: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """``select_starts_ends`` + ``decode_spans`` of the pipeline, for one window."""
        seq_ids = enc.sequence_ids
        allowed = np.fromiter((s == 1 for s in seq_ids), dtype=bool, count=len(seq_ids))
        if self.cls_id is not None:
            allowed |= np.asarray(enc.ids) == self.cls_id  # the pipeline keeps CLS unmasked
        start = np.where(allowed, window[0], np.float32(-10000.0))
        end = np.where(allowed, window[1], np.float32(-10000.0))
        start = np.exp(start - start.max())
        start = start / start.sum()
        end = np.exp(end - end.max())
        end = end / end.sum()
        if impossible:
            min_null = min(min_null, float(start[0] * end[0]))
        start[0] = end[0] = 0.0
        candidates = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)
        flat = candidates.ravel()
        if topk == 1:
            order = np.array([np.argmax(flat)])
        elif len(flat) < topk:
            order = np.argsort(-flat)
        else:
            idx = np.argpartition(-flat, topk)[:topk]
            order = idx[np.argsort(-flat[idx])]
        starts, ends = np.unravel_index(order, candidates.shape)
        ok_tokens = np.flatnonzero(allowed)
        if len(ok_tokens):  # np.nonzero of the pipeline's (1, n) mask also yields row 0
            ok_tokens = np.concatenate([ok_tokens, [0]])
        keep = np.isin(starts, ok_tokens) & np.isin(ends, ok_tokens)
        starts, ends = starts[keep], ends[keep]
        return starts, ends, candidates[starts, ends], min_null


def _char_span(enc: Any, s: int, e: int, align: bool) -> tuple[int, int]:
    """Token span -> character span in the context (widened to whole words if ``align``)."""
    if align:
        try:
            start_word, end_word = enc.token_to_word(s), enc.token_to_word(e)
            return (
                enc.word_to_chars(start_word, sequence_index=1)[0],
                enc.word_to_chars(end_word, sequence_index=1)[1],
            )
        except Exception:  # tokens outside any word (e.g. CLS): the pipeline keeps offsets
            pass
    return enc.offsets[s][0], enc.offsets[e][1]
