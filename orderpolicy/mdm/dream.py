"""Adapter for Dream (Ye et al., 2025), e.g. ``Dream-org/Dream-v0-Instruct-7B``.

Dream was initialised from an autoregressive model (Qwen2.5) and kept its
output convention: the logits at position i predict the token at position
i + 1. Dream's own sampler (``generation_utils.py`` in the checkpoint) shifts
them right by one before use, and so does this adapter::

    out[:, 0] = logits[:, 0]        out[:, i] = logits[:, i - 1]  for i >= 1

The first position has no predictor of its own. It is always a prompt token,
so its logits are never used to unmask anything. With left padding the same
holds for the first real token of each row (see :func:`shift_right`).
The last hidden state is shifted the same way, so that index i of both outputs
describes the prediction for position i.

Padding follows Dream's sampler: with no padding the model gets the string
``"full"`` as attention mask, otherwise a boolean mask of shape (B, 1, N, N)
and position ids that count only real tokens.

Shapes: B batch, N sequence length, V vocabulary, H hidden size.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from orderpolicy.mdm.hf_masked_lm import freeze, position_ids_from_mask, vocab_token_id
from orderpolicy.mdm.interface import DenoiserOutput, MDMAdapter

END_OF_TURN_TOKEN = "<|im_end|>"  # ends an assistant turn in Dream-Instruct's chat format


def shift_right(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Move predictions from "position i predicts i + 1" to "position i predicts i".

    Dream's sampler keeps position 0's own values. Here every position whose
    left neighbour is padding keeps its own values. So the first real token of
    a left-padded row never takes the logits of a padding position, and a
    padded batch gives each row the same output as that row alone.
    """
    shifted = torch.cat([values[:, :1], values[:, :-1]], dim=1)  # (B, N, ...)
    previous_real = torch.zeros_like(attention_mask, dtype=torch.bool)  # (B, N)
    previous_real[:, 1:] = attention_mask[:, :-1].bool()
    keep_own = ~previous_real
    keep_own = keep_own.reshape(*keep_own.shape, *([1] * (values.dim() - 2)))  # (B, N, 1, ...)
    return torch.where(keep_own, values, shifted)


def dream_attention_inputs(attention_mask: torch.Tensor) -> tuple[object, torch.Tensor | None]:
    """Build Dream's ``attention_mask`` and ``position_ids`` arguments from a (B, N) mask.

    NOTE: Dream's sampler masks both queries and keys at padding
    (``mask[b, 0, q, k] = real[q] and real[k]``). Here only keys are masked.
    So no query row is fully masked, and the result does not depend on what an
    attention backend returns for such a row (torch 2.13 on CPU returns zeros).
    A NaN there would spread to real positions in the next layer. At real
    positions both masks give the same outputs.
    """
    if bool(attention_mask.all()):
        return "full", None
    real = attention_mask.bool()  # (B, N)
    batch, length = real.shape
    key_mask = real[:, None, None, :].expand(batch, 1, length, length)  # (B, 1, N, N)
    return key_mask, position_ids_from_mask(attention_mask)  # position_ids (B, N)


class DreamAdapter(MDMAdapter):
    """Dream used as a denoiser, with its logits shifted to predict their own position.

    >>> adapter = DreamAdapter.from_pretrained("/models/Dream-v0-Instruct-7B", device="cuda")  # doctest: +SKIP
    >>> out = adapter.denoise(ids, attention_mask)                                           # doctest: +SKIP
    >>> out.logits.shape                                                                     # (B, N, V)

    ``end_of_turn_token_id`` is the id of ``<|im_end|>``, or None when the
    tokenizer lacks it.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, max_length: int | None = None):
        super().__init__()
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.mask_token_id = self._mask_id(tokenizer, model)
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token; Dream needs one")
        self.eos_token_id = int(tokenizer.eos_token_id)
        self.end_of_turn_token_id = vocab_token_id(tokenizer, END_OF_TURN_TOKEN)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        if int(pad_id) == self.mask_token_id:
            raise ValueError(
                f"pad id {pad_id} equals the mask id; padding would read as masked positions. "
                "Set tokenizer.pad_token to a token other than the mask token"
            )
        self.pad_token_id = int(pad_id)
        config_length = getattr(model.config, "max_position_embeddings", None)
        if max_length is None and config_length is None:
            raise ValueError("model config has no max_position_embeddings; pass max_length to DreamAdapter")
        self.max_length = int(max_length or config_length)

    @staticmethod
    def _mask_id(tokenizer, model) -> int:
        mask_id = tokenizer.mask_token_id
        if mask_id is None:
            # Dream's generation config carries the mask id as well.
            mask_id = getattr(getattr(model, "generation_config", None), "mask_token_id", None)
        if mask_id is None:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has no mask token and the model's generation "
                "config names none; load the tokenizer from the Dream checkpoint folder"
            )
        return int(mask_id)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str = "cuda",
        dtype: torch.dtype = torch.bfloat16,
        local_files_only: bool = False,
        **kwargs,
    ) -> "DreamAdapter":
        """Load Dream with its own modeling code from a folder or hub name.

        NOTE: Dream's README pins transformers 4.46.2. Loading its remote code
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
        return int(self.model.config.vocab_size)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, input_ids, attention_mask, output_hidden_states):
        mask_argument, position_ids = dream_attention_inputs(attention_mask)
        out = self.model(
            input_ids,
            attention_mask=mask_argument,
            position_ids=position_ids,
            output_hidden_states=output_hidden_states,
        )
        logits = shift_right(out.logits, attention_mask)  # (B, N, V)
        hidden = None
        if output_hidden_states:
            hidden = shift_right(out.hidden_states[-1], attention_mask).float()  # (B, N, H)
        return DenoiserOutput(logits=logits, hidden_states=hidden)
