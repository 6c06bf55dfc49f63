"""Small models and tokenizers for adapter tests, built offline in a fraction of a second.

``LLaDAStandin`` and ``DreamStandin`` take the arguments and return the outputs
that LLaDA's and Dream's own modeling code do, so the adapters can wrap them in
place of the 8B checkpoints. Both are randomly initialised, bidirectional and
mask attention to padding, so a padded batch must give each row the same
predictions as that row alone. ``DreamStandin`` adds learned absolute position
embeddings, so it also fails that check when position ids ignore padding.
``NextTokenOracle`` predicts a known token at a known position.

Tokenizers are the project's word-level tokenizer for the gsm-synth
vocabulary, with the special tokens of each model family added.

Shapes: B batch, N sequence length, V vocabulary, H hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    ModernBertConfig,
    ModernBertForMaskedLM,
    PreTrainedTokenizerFast,
)

from orderpolicy.tasks.gsm_synth import GsmSynthConfig, vocabulary_words
from orderpolicy.tokenizer import build_tokenizer

HIDDEN = 32
HEADS = 2
MAX_LENGTH = 128


@dataclass
class StandinOutput:
    """What LLaDA's and Dream's forward return, reduced to the fields adapters read."""

    logits: torch.Tensor  # (B, N, V)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # each (B, N, H)


def word_tokenizer(extra_special_tokens: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """Build the gsm-synth word tokenizer and add ``extra_special_tokens`` to it."""
    tokenizer = build_tokenizer(vocabulary_words(GsmSynthConfig()))
    if extra_special_tokens:
        tokenizer.add_tokens(list(extra_special_tokens), special_tokens=True)
    return tokenizer


def llada_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer with LLaDA's mask, end-of-text and end-of-turn tokens."""
    tokenizer = word_tokenizer(("<|mdm_mask|>", "<|eot_id|>", "<|endoftext|>"))
    tokenizer.eos_token = "<|endoftext|>"
    return tokenizer


def dream_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer with Dream's mask, end-of-text and end-of-turn tokens."""
    tokenizer = word_tokenizer(("<|mask|>", "<|im_end|>", "<|endoftext|>"))
    tokenizer.mask_token = "<|mask|>"
    tokenizer.eos_token = "<|endoftext|>"
    tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def tiny_bert(tokenizer, seed: int = 0) -> BertForMaskedLM:
    """A randomly initialised two-layer BERT masked LM (learned absolute positions)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=2 * HIDDEN,
        max_position_embeddings=MAX_LENGTH,
        pad_token_id=tokenizer.pad_token_id,
    )
    return BertForMaskedLM(config).eval()


def tiny_modernbert(tokenizer, seed: int = 0) -> ModernBertForMaskedLM:
    """A randomly initialised two-layer ModernBERT masked LM (rotary positions)."""
    torch.manual_seed(seed)
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        max_position_embeddings=MAX_LENGTH,
        layer_types=["full_attention"] * 2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        cls_token_id=None,
        sep_token_id=None,
        attn_implementation="sdpa",
    )
    return ModernBertForMaskedLM(config).eval()


class _BidirectionalStandin(nn.Module):
    """Embedding, one self-attention layer over real tokens, and an output head."""

    def __init__(self, vocab_size: int, logit_width: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab_size, HIDDEN)
        self.attention = nn.MultiheadAttention(HIDDEN, HEADS, batch_first=True)
        self.norm = nn.LayerNorm(HIDDEN)
        self.head = nn.Linear(HIDDEN, logit_width)
        self.calls: list[dict] = []  # keyword arguments of every forward, for tests to inspect

    def _run(self, embedded, blocked, output_hidden_states) -> StandinOutput:
        # blocked: (B, N, N) bool, True where query q may not attend to key k.
        attn_mask = blocked.repeat_interleave(HEADS, dim=0)  # (B * heads, N, N)
        mixed, _ = self.attention(embedded, embedded, embedded, attn_mask=attn_mask, need_weights=False)
        hidden = self.norm(embedded + mixed)  # (B, N, H)
        hidden_states = (embedded, hidden) if output_hidden_states else None
        return StandinOutput(logits=self.head(hidden), hidden_states=hidden_states)


class LLaDAStandin(_BidirectionalStandin):
    """Takes ``model(input_ids, attention_mask=(B, N) mask, output_hidden_states=...)`` like LLaDA.

    Like LLaDA it has no position ids. Its logit width is ``embedding_size``,
    which is larger than ``vocab_size`` as in LLaDA's padded output layer.
    """

    def __init__(self, tokenizer, seed: int = 0, padded_vocab: int = 8):
        vocab_size = len(tokenizer)
        super().__init__(vocab_size, vocab_size + padded_vocab, seed)
        self.config = SimpleNamespace(
            d_model=HIDDEN,
            vocab_size=vocab_size,
            embedding_size=vocab_size + padded_vocab,
            max_sequence_length=MAX_LENGTH,
        )

    def forward(self, input_ids, attention_mask=None, output_hidden_states=None):
        self.calls.append({"attention_mask": attention_mask, "output_hidden_states": output_hidden_states})
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        real = attention_mask.bool()  # (B, N)
        blocked = ~real[:, None, :].expand(batch, length, length)  # (B, N, N)
        return self._run(self.embed(input_ids), blocked, output_hidden_states)


class DreamStandin(_BidirectionalStandin):
    """Takes ``model(input_ids, attention_mask="full" or (B, 1, N, N) bool, position_ids=...)`` like Dream.

    Learned absolute position embeddings make its output depend on the
    position ids it receives.
    """

    def __init__(self, tokenizer, seed: int = 0, mask_token_id: int | None = None):
        vocab_size = len(tokenizer)
        super().__init__(vocab_size, vocab_size, seed)
        self.positions = nn.Embedding(MAX_LENGTH, HIDDEN)
        self.config = SimpleNamespace(
            hidden_size=HIDDEN, vocab_size=vocab_size, max_position_embeddings=MAX_LENGTH
        )
        self.generation_config = SimpleNamespace(mask_token_id=mask_token_id)

    def forward(self, input_ids, attention_mask=None, position_ids=None, output_hidden_states=None):
        self.calls.append(
            {"attention_mask": attention_mask, "position_ids": position_ids,
             "output_hidden_states": output_hidden_states}
        )
        batch, length = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(length).expand(batch, length)  # (B, N)
        if isinstance(attention_mask, torch.Tensor):
            blocked = ~attention_mask[:, 0]  # (B, N, N)
        elif attention_mask in (None, "full"):
            blocked = torch.zeros(batch, length, length, dtype=torch.bool)
        else:
            raise TypeError(f"Dream takes 'full', None or a (B, 1, N, N) mask, got {attention_mask!r}")
        embedded = self.embed(input_ids) + self.positions(position_ids)  # (B, N, H)
        return self._run(embedded, blocked, output_hidden_states)


class NextTokenOracle(nn.Module):
    """A Dream-style model built around the clean sequence, which it predicts autoregressively.

    Its logits at position i put a high score on ``target_ids[:, i + 1]`` (the
    last position repeats the last token), and its hidden state at position i
    is the vector filled with the value i.
    """

    def __init__(self, target_ids: torch.Tensor, vocab_size: int):
        super().__init__()
        self.target_ids = target_ids  # (B, N) clean sequence
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the adapter a device to read
        self.config = SimpleNamespace(
            hidden_size=HIDDEN, vocab_size=vocab_size, max_position_embeddings=MAX_LENGTH
        )

    def forward(self, input_ids, attention_mask=None, position_ids=None, output_hidden_states=None):
        batch, length = input_ids.shape
        following = torch.cat([self.target_ids[:, 1:], self.target_ids[:, -1:]], dim=1)  # (B, N)
        logits = torch.zeros(batch, length, self.config.vocab_size)
        logits.scatter_(2, following[:, :, None], 10.0)  # (B, N, V)
        index = torch.arange(length, dtype=torch.float32)[None, :, None]  # (1, N, 1)
        hidden = index.expand(batch, length, HIDDEN)  # (B, N, H)
        return StandinOutput(logits=logits, hidden_states=(hidden,) if output_hidden_states else None)
