"""Adapter for LLaDA (Nie et al., 2025), e.g. ``GSAI-ML/LLaDA-8B-Base`` and ``-Instruct``.

LLaDA is a bidirectional transformer trained as a masked diffusion model, so
its logits at position i predict the token at position i and need no shift.
Its modeling code ships with the checkpoint (``trust_remote_code``). The call
``model(input_ids, attention_mask=...)`` returns ``.logits``. With
``output_hidden_states=True`` it also returns ``.hidden_states``, whose last
entry is taken after the final layer norm.

Padding: LLaDA's own batched ``generate.py`` passes the 2-D attention mask,
which the model turns into an additive bias over keys. LLaDA has no position
ids argument, so a left-padded row sees absolute positions shifted by its
padding; rotary attention scores depend only on relative positions, so the
real tokens see the same scores as without padding.

Shapes: B batch, N sequence length, V vocabulary (logit width), H hidden size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from orderpolicy.mdm.hf_masked_lm import freeze, vocab_token_id
from orderpolicy.mdm.interface import DenoiserOutput, MDMAdapter

log = logging.getLogger(__name__)

MASK_TOKEN = "<|mdm_mask|>"  # LLaDA's mask token, looked up by name before tokenizer.mask_token
END_OF_TURN_TOKEN = "<|eot_id|>"  # ends an assistant turn in LLaDA-Instruct's chat format


def _llada_mask_id(tokenizer) -> int:
    mask_id = vocab_token_id(tokenizer, MASK_TOKEN)
    if mask_id is None:
        mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has neither the token {MASK_TOKEN!r} nor a "
            "mask_token; LLaDA needs its mask token, so load the tokenizer from the LLaDA "
            "checkpoint folder"
        )
    return int(mask_id)


class LLaDAAdapter(MDMAdapter):
    """LLaDA used as a denoiser; ``__init__`` takes an already built model and tokenizer.

    >>> adapter = LLaDAAdapter.from_pretrained("/models/LLaDA-8B-Instruct", device="cuda")  # doctest: +SKIP
    >>> out = adapter.denoise(ids, attention_mask, output_hidden_states=True)  # doctest: +SKIP
    >>> out.logits.shape, out.hidden_states.shape                             # (B, N, V), (B, N, H)

    ``end_of_turn_token_id`` is the id of ``<|eot_id|>``, or None when the
    tokenizer lacks it (the Base model's prompts need no chat turns).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, max_length: int | None = None):
        super().__init__()
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.mask_token_id = _llada_mask_id(tokenizer)
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token; LLaDA needs one")
        self.eos_token_id = int(tokenizer.eos_token_id)
        self.end_of_turn_token_id = vocab_token_id(tokenizer, END_OF_TURN_TOKEN)
        self.pad_token_id = self._pad_id(tokenizer)
        self.max_length = int(max_length or self._config_max_length(model.config))

    def _pad_id(self, tokenizer) -> int:
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            # Padding is hidden by the attention mask, so any id other than the mask id works.
            log.info("tokenizer has no pad token; padding LLaDA prompts with EOS id %d", self.eos_token_id)
            pad_id = self.eos_token_id
        if int(pad_id) == self.mask_token_id:
            raise ValueError(
                f"pad id {pad_id} equals the mask id; padding would read as masked positions. "
                "Set tokenizer.pad_token to a token other than the mask token"
            )
        return int(pad_id)

    @staticmethod
    def _config_max_length(config) -> int:
        for name in ("max_sequence_length", "max_position_embeddings"):
            value = getattr(config, name, None)
            if value:
                return int(value)
        raise ValueError(
            f"model config {type(config).__name__} has neither max_sequence_length nor "
            "max_position_embeddings; pass max_length to LLaDAAdapter"
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str = "cuda",
        dtype: torch.dtype = torch.bfloat16,
        local_files_only: bool = False,
        **kwargs,
    ) -> "LLaDAAdapter":
        """Load LLaDA with its own modeling code from a folder or hub name.

        NOTE: LLaDA's remote code was written before transformers 5; loading it
        with the transformers 5 pinned here has not been run in this project.
        """
        model = AutoModel.from_pretrained(
            str(path), trust_remote_code=True, dtype=dtype, local_files_only=local_files_only
        )
        tokenizer = AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=True, local_files_only=local_files_only
        )
        return cls(model.to(device), tokenizer, **kwargs)

    @property
    def vocab_size(self) -> int:
        # LLaDA's output layer has embedding_size rows when set (padded vocabulary).
        config = self.model.config
        return int(getattr(config, "embedding_size", None) or config.vocab_size)

    @property
    def hidden_size(self) -> int:
        config = self.model.config
        return int(getattr(config, "d_model", None) or config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, input_ids, attention_mask, output_hidden_states):
        out = self.model(
            input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
        )
        hidden = out.hidden_states[-1].float() if output_hidden_states else None  # (B, N, H)
        return DenoiserOutput(logits=out.logits, hidden_states=hidden)  # logits (B, N, V)
