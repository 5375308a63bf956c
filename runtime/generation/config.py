"""What a generation needs to know: the model's facts (:class:`ModelFacts`, from the manifest)
and one row's settings (:class:`GenerationConfig`, the request params over the model defaults).

Semantics follow transformers' ``GenerationConfig``: ``max_length``/``min_length`` count the
whole decoder sequence (the prompt of a decoder-only model, the decoder start token of an
encoder-decoder), ``max_new_tokens``/``min_new_tokens`` only the generated tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InvalidParameter

ENCODER_DECODER = "encoder-decoder"
DECODER_ONLY = "decoder-only"
# transformers' GenerationConfig defaults (top_k=50 applies when do_sample is on)
DEFAULTS: dict[str, Any] = {
    "max_new_tokens": None,
    "max_length": 20,
    "min_new_tokens": 0,
    "min_length": 0,
    "num_beams": 1,
    "do_sample": False,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "length_penalty": 1.0,
    "early_stopping": False,
    "bad_words_ids": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
}


@dataclass(frozen=True)
class ModelFacts:
    """The manifest's ``generation`` section: files, special ids, cache shape."""

    architecture: str  # ENCODER_DECODER | DECODER_ONLY
    files: dict[str, str]  # {"encoder": ..., "decoder": ...} or {"decoder": ...}
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    decoder_start_token_id: int | None
    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int  # the encoder's output width (encoder-decoder)
    max_input_tokens: int
    max_positions: int | None  # decoder-only: prompt + new tokens must fit
    defaults: dict[str, Any] = field(default_factory=dict)
    prefix: str = ""

    @property
    def is_encoder_decoder(self) -> bool:
        return self.architecture == ENCODER_DECODER

    @classmethod
    def from_manifest(cls, gen: dict[str, Any]) -> ModelFacts:
        eos = gen.get("eos_token_id")
        eos_ids = tuple(int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None)
        pad = gen.get("pad_token_id")
        return cls(
            architecture=str(gen["architecture"]),
            files=dict(gen["files"]),
            eos_token_ids=eos_ids,
            pad_token_id=int(pad if pad is not None else (eos_ids[0] if eos_ids else 0)),
            decoder_start_token_id=gen.get("decoder_start_token_id"),
            num_layers=int(gen["num_layers"]),
            num_kv_heads=int(gen["num_kv_heads"]),
            head_dim=int(gen["head_dim"]),
            hidden_size=int(gen.get("hidden_size") or 0),
            max_input_tokens=int(gen["max_input_tokens"]),
            max_positions=gen.get("max_positions"),
            defaults={k: v for k, v in (gen.get("defaults") or {}).items() if k in DEFAULTS},
            prefix=str(gen.get("prefix") or ""),
        )


@dataclass(frozen=True)
class GenerationConfig:
    """One row's settings; :meth:`resolve` fixes the lengths for a prompt of known length."""

    max_new_tokens: int
    min_new_tokens: int = 0
    min_length: int = 0
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    forced_bos_token_id: int | None = None
    forced_eos_token_id: tuple[int, ...] = ()
    eos_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()
    seed: int | None = None
    start_len: int = 1  # tokens before the first generated one (prompt, or decoder start)

    @property
    def max_length(self) -> int:
        return self.start_len + self.max_new_tokens

    def for_prompt(self, start_len: int) -> GenerationConfig:
        return replace(self, start_len=start_len)


def build_config(
    facts: ModelFacts, params: dict[str, Any], new_tokens_limit: int
) -> tuple[GenerationConfig, int | None]:
    """The request's settings over the model's defaults, checked.

    Returns the config (``max_new_tokens`` resolved where it does not depend on the prompt)
    and the generation-config ``max_length`` to resolve per prompt when ``max_new_tokens``
    was given by neither the request nor the model (``None`` otherwise).
    """
    merged = {**DEFAULTS, **facts.defaults}
    merged.update({k: v for k, v in params.items() if v is not None and k in DEFAULTS})
    max_new = merged["max_new_tokens"]
    total = None
    if max_new is None:
        total = int(merged["max_length"])
        max_new = new_tokens_limit
    _check(max_new >= 1, f"max_new_tokens={max_new} must be >= 1")
    _check(
        max_new <= new_tokens_limit,
        f"max_new_tokens={max_new} is over this server's limit {new_tokens_limit} "
        "(--max-new-tokens-limit)",
    )
    beams = int(merged["num_beams"])
    _check(1 <= beams <= 16, f"num_beams={beams} must be between 1 and 16")
    _check(merged["temperature"] > 0, f"temperature={merged['temperature']} must be > 0")
    _check(merged["top_k"] >= 0, f"top_k={merged['top_k']} must be >= 0")
    _check(0 < merged["top_p"] <= 1, f"top_p={merged['top_p']} must be in (0, 1]")
    _check(merged["repetition_penalty"] > 0, "repetition_penalty must be > 0")
    _check(merged["no_repeat_ngram_size"] >= 0, "no_repeat_ngram_size must be >= 0")
    _check(merged["min_new_tokens"] >= 0, "min_new_tokens must be >= 0")
    early = merged["early_stopping"]
    _check(early in (True, False, "never"), f"early_stopping={early!r}: use true, false or never")
    forced_eos = merged["forced_eos_token_id"]
    if isinstance(forced_eos, int):
        forced_eos = [forced_eos]
    stop = params.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    _check(all(isinstance(s, str) and s for s in stop), "stop must be a string or list of strings")
    seed = params.get("seed")
    config = GenerationConfig(
        max_new_tokens=int(max_new),
        min_new_tokens=int(merged["min_new_tokens"]),
        min_length=int(merged["min_length"] or 0),
        num_beams=beams,
        do_sample=bool(merged["do_sample"]),
        temperature=float(merged["temperature"]),
        top_k=int(merged["top_k"]),
        top_p=float(merged["top_p"]),
        repetition_penalty=float(merged["repetition_penalty"]),
        no_repeat_ngram_size=int(merged["no_repeat_ngram_size"]),
        length_penalty=float(merged["length_penalty"]),
        early_stopping=early,
        bad_words_ids=tuple(tuple(int(t) for t in w) for w in merged["bad_words_ids"] or ()),
        forced_bos_token_id=merged["forced_bos_token_id"],
        forced_eos_token_id=tuple(int(t) for t in forced_eos or ()),
        eos_token_ids=facts.eos_token_ids,
        stop=tuple(stop),
        seed=None if seed is None else int(seed),
    )
    return config, total


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidParameter(f"Invalid parameters found: {message}.")
