"""Lay prompts and responses out as fixed-width token tensors.

Layout of one row: ``[PAD ... PAD | prompt | response]``. Prompts are left
padded to P tokens (padding has attention mask 0, as LLaDA does for batches),
responses are padded with EOS to exactly L tokens, and those EOS tokens are
part of the target. Shapes: B batch, P prompt width, L response length.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import torch

from orderpolicy.tokenizer import encode_texts


@dataclass
class TokenBatch:
    """Token ids of a batch in the fixed layout."""

    input_ids: torch.Tensor  # (B, P + L); the response holds the reference tokens
    attention_mask: torch.Tensor  # (B, P + L), 0 on left padding
    prompt_length: int  # P

    @property
    def response(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_length :]  # (B, L)


def encode_prompts(
    tokenizer, prompts: Sequence[str], prompt_length: int, *, pad_id: int, truncate: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad tokenized prompts to ``prompt_length``.

    A longer prompt raises ``ValueError`` naming its index and length, unless
    ``truncate`` is set, in which case its leading tokens are dropped.
    """
    rows = encode_texts(tokenizer, prompts)
    ids = torch.full((len(rows), prompt_length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), prompt_length), dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row) > prompt_length:
            if not truncate:
                raise ValueError(
                    f"prompt {i} has {len(row)} tokens, more than prompt_length={prompt_length}; "
                    "raise prompt_length (within the model's max_length) or enable truncation"
                )
            row = row[-prompt_length:]
        if len(row) == 0:
            raise ValueError(f"prompt {i} is empty after tokenization")
        ids[i, prompt_length - len(row) :] = torch.tensor(row)
        mask[i, prompt_length - len(row) :] = 1
    return ids, mask


def encode_responses(
    tokenizer, responses: Sequence[str], response_length: int, *, eos_id: int, truncate: bool = False
) -> torch.Tensor:
    """Tokenize references and pad each with EOS to exactly ``response_length`` tokens.

    A longer reference raises ``ValueError``, or keeps its first
    ``response_length`` tokens when ``truncate`` is set.
    """
    rows = encode_texts(tokenizer, responses)
    ids = torch.full((len(rows), response_length), eos_id, dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row) > response_length and truncate:
            row = row[:response_length]
        if len(row) > response_length:
            raise ValueError(
                f"response {i} has {len(row)} tokens, more than response_length={response_length}; "
                "raise response_length or make the task's answers shorter"
            )
        ids[i, : len(row)] = torch.tensor(row)
    return ids


def encode_batch(
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    prompt_length: int,
    response_length: int,
    *,
    pad_id: int,
    eos_id: int,
) -> TokenBatch:
    """Encode prompts with their reference responses."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, prompt_length, pad_id=pad_id)
    response_ids = encode_responses(tokenizer, responses, response_length, eos_id=eos_id)
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)  # (B, P + L)
    attention_mask = torch.cat([prompt_mask, torch.ones_like(response_ids)], dim=1)
    return TokenBatch(input_ids=input_ids, attention_mask=attention_mask, prompt_length=prompt_length)
