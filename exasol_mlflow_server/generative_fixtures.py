"""Tiny seeded generative models for tests and benchmarks, built from configs in seconds.

* ``t5``: a T5-style encoder-decoder (``T5ForConditionalGeneration``; pad = decoder start = 0,
  eos = 1), trained a few steps to copy its input, so greedy and beam outputs depend on the
  input, run several tokens and usually end with EOS.
* ``gpt2``: a GPT-2 decoder (``GPT2LMHeadModel``; no pad token, bos = eos = 0, as the real one),
  trained a few steps as a language model on the sample text (two sentences, then EOS).
* ``llama``: a Llama-style decoder (``LlamaForCausalLM``; rotary positions, grouped-query
  attention with 2 key/value heads, bos = 1, eos = 2), trained like ``gpt2``.

Each gets a fast ``tokenizer.json`` trained with ``tokenizers`` on the same text. All dims are
tiny (d_model 64, 2 layers), so one ``generate`` call takes milliseconds. Use
:func:`exasol_mlflow_server.fixtures.generative_model_dir` (cached); :func:`build` writes one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

KINDS = ("t5", "gpt2", "llama")
VOCAB = 512
TRAIN_STEPS = 240
MAX_TOKENS = 40


def sample_sentences() -> list[str]:
    """The exporter's built-in validation texts, split into sentences (the training text)."""
    from exasol_mlflow_server.exporter.samples import BUILTIN_TEXTS

    sentences: dict[str, None] = {}
    for text in BUILTIN_TEXTS:
        for part in re.split(r"(?<=[.!?])\s+", text):
            if part.strip():
                sentences[part.strip()] = None
    return list(sentences)


def _tokenizer(kind: str, texts: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    fast = {"model_input_names": ["input_ids", "attention_mask"]}
    if kind == "t5":
        specials = ["<pad>", "</s>", "<unk>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials)
        tok.train_from_iterator(texts, trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", **fast
        )
    specials = ["<|endoftext|>"] if kind == "gpt2" else ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    if kind == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            unk_token="<|endoftext|>",
            **fast,
        )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", **fast
    )


def _model(kind: str, vocab: int) -> Any:
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    if kind == "t5":
        config = T5Config(
            vocab_size=vocab,
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
        return T5ForConditionalGeneration(config)
    if kind == "gpt2":
        config = GPT2Config(
            vocab_size=vocab,
            n_positions=256,
            n_embd=64,
            n_layer=2,
            n_head=4,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        )
        return GPT2LMHeadModel(config)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config)


def _train(kind: str, model: Any, tokenizer: Any, texts: list[str], seed: int) -> None:
    """A few optimizer steps: copy the input (t5) or model the text (decoder-only)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    eos = tokenizer.eos_token_id
    for _ in range(TRAIN_STEPS):
        idx = torch.randint(len(texts), (8,), generator=gen).tolist()
        batch = [texts[i] for i in idx]
        if kind == "t5":
            enc = tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS)
            ids = torch.tensor(enc["input_ids"])
            labels = ids.masked_fill(ids == tokenizer.pad_token_id, -100)
            out = model(
                input_ids=ids, attention_mask=torch.tensor(enc["attention_mask"]), labels=labels
            )
        else:
            # two sentences per row, EOS only at the end: a prompt is continued for a while
            pairs = [f"{t} {texts[(i + 1) % len(texts)]}" for t, i in zip(batch, idx, strict=True)]
            rows = [(tokenizer(t)["input_ids"] + [eos])[: 2 * MAX_TOKENS] for t in pairs]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [eos] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            labels = ids.masked_fill(mask == 0, -100)
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()


def build(kind: str, out_dir: Path, seed: int) -> None:
    """Write the ``kind`` model, its tokenizer and generation config into ``out_dir``."""
    import torch

    if kind not in KINDS:
        raise ValueError(f"unknown generative fixture {kind!r}; choose from {', '.join(KINDS)}")
    torch.manual_seed(seed)
    texts = sample_sentences()
    tokenizer = _tokenizer(kind, texts)
    model = _model(kind, len(tokenizer))
    _train(kind, model, tokenizer, texts, seed)
    model.generation_config.max_length = 64
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
