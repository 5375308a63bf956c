"""Generation without torch: numpy + ONNX Runtime decoding loops for exported generative models.

``config`` (model facts, per-row settings), ``processors`` (logits processors and warpers),
``search`` (greedy, sampling, beam search), ``cache`` (the KV cache), ``model`` (the ONNX
parts as prefill/step), ``batch`` (one decoding batch), ``scheduler`` (step-level batching).
"""

from __future__ import annotations

from pathlib import Path

from ..session import OnnxRunner
from .config import ModelFacts
from .model import CausalLM, Seq2SeqLM


def open_model(
    model_dir: Path,
    facts: ModelFacts,
    device: str = "auto",
    threads: int = 1,
    precision: str = "fp32",
) -> CausalLM | Seq2SeqLM:
    """The ONNX parts named in the manifest, as a model the decoding loop drives (always on
    ONNX Runtime: the loop needs its IO binding and own-dtype outputs)."""
    kw = {"device": device, "threads": threads, "precision": precision}
    decoder = OnnxRunner(model_dir / facts.files["decoder"], **kw)
    if facts.is_encoder_decoder:
        encoder = OnnxRunner(model_dir / facts.files["encoder"], **kw)
        return Seq2SeqLM(encoder, decoder, facts)
    return CausalLM(decoder, facts)
