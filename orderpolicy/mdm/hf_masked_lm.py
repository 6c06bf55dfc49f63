"""Adapter for any transformers masked LM, the built-in MDM included."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel

from orderpolicy.mdm.interface import DenoiserOutput, MDMAdapter


def _required_id(tokenizer, name: str) -> int:
    token_id = getattr(tokenizer, f"{name}_token_id", None)
    if token_id is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no {name} token; "
            f"an MDM needs one (set tokenizer.{name}_token)"
        )
    return int(token_id)


class HFMaskedLMAdapter(MDMAdapter):
    """A bidirectional ``AutoModelForMaskedLM`` used as a denoiser.

    >>> adapter = HFMaskedLMAdapter.from_pretrained(default_mdm_path())  # doctest: +SKIP
    >>> out = adapter.denoise(ids, attention_mask)                        # doctest: +SKIP
    >>> out.logits.shape                                                  # (B, N, V)
    """

    def __init__(self, model: PreTrainedModel, tokenizer, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.tokenizer = tokenizer
        self.mask_token_id = _required_id(tokenizer, "mask")
        self.pad_token_id = _required_id(tokenizer, "pad")
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if eos is None:
            raise ValueError("tokenizer has neither an EOS nor a SEP token to pad responses with")
        self.eos_token_id = int(eos)
        self.max_length = int(getattr(model.config, "max_position_embeddings", 512))
        self.autocast_dtype = autocast_dtype

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", **kwargs) -> "HFMaskedLMAdapter":
        model = AutoModelForMaskedLM.from_pretrained(str(path), dtype=torch.float32).to(device)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        return cls(model, tokenizer, **kwargs)

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
        enabled = self.autocast_dtype is not None
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=enabled):
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_hidden_states=output_hidden_states,
            )
        hidden = out.hidden_states[-1].float() if output_hidden_states else None
        return DenoiserOutput(logits=out.logits, hidden_states=hidden)
