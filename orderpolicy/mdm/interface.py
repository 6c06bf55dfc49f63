"""The interface every masked diffusion model (MDM) adapter implements.

Shapes: B batch, N = P + L sequence length (prompt then response), V vocabulary,
H hidden size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass
class DenoiserOutput:
    """Output of one denoiser forward pass."""

    logits: torch.Tensor  # (B, N, V), float32
    hidden_states: torch.Tensor | None = None  # (B, N, H) last layer, when requested


class MDMAdapter(ABC):
    """One masked diffusion model: its tokenizer, special ids and denoiser.

    ``denoise`` runs exactly one forward pass of the model and increments
    ``nfe``, the count of denoiser calls that decoding code reports as its cost.
    Token ids are read from the tokenizer or the model config, never written
    inline.
    """

    tokenizer: object
    mask_token_id: int
    pad_token_id: int
    eos_token_id: int
    max_length: int  # longest prompt + response the model accepts, in tokens

    def __init__(self) -> None:
        self.nfe = 0

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of logits per position."""

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """Width of the last hidden state."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Device the model's weights live on."""

    @abstractmethod
    def _forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool
    ) -> DenoiserOutput:
        """Run the model once; subclasses implement this."""

    def denoise(
        self,
        input_ids: torch.Tensor,  # (B, N) token ids, masked positions hold mask_token_id
        attention_mask: torch.Tensor,  # (B, N) 1 for real tokens, 0 for padding
        output_hidden_states: bool = False,
    ) -> DenoiserOutput:
        """Predict every position of ``input_ids`` in one forward pass (one NFE)."""
        if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"denoise expects input_ids and attention_mask of the same shape (B, N), got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        if input_ids.shape[1] > self.max_length:
            raise ValueError(
                f"sequence of {input_ids.shape[1]} tokens exceeds the model's maximum of "
                f"{self.max_length}; shorten the prompt or the response length"
            )
        out_of_range = (input_ids < 0) | (input_ids >= self.vocab_size)  # (B, N)
        if out_of_range.any():
            rows = out_of_range.any(dim=1).nonzero().flatten().tolist()
            raise ValueError(
                f"token ids {input_ids[out_of_range].unique()[:10].tolist()} in batch rows {rows} lie outside "
                f"the model's vocabulary [0, {self.vocab_size}); encode the text with this model's tokenizer"
            )
        self.nfe += 1
        out = self._forward(input_ids, attention_mask, output_hidden_states)
        out.logits = out.logits.float()
        return out
