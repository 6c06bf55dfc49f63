"""Task reward for decoded responses: 1 when the extracted answer equals the target, else 0.

Shapes: B batch, L response length.

A response ends at its first EOS token. MDMs write EOS padding after the
answer, and a model may also write EOS in the middle and more tokens after
it. Those trailing tokens are not part of the response, and with a word-level
tokenizer a digit after ``#### 5 [EOS]`` would otherwise join the answer
(``#### 57``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection

import torch

from orderpolicy.tasks.scoring import SCORING_MODES, extract_flexible, extract_strict

TaskReward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def decode_responses(
    tokenizer,
    response_ids: torch.Tensor,
    *,
    eos_id: int | None = None,
    skip_ids: Collection[int] | None = None,
) -> list[str]:
    """Decode response ids (B, L) to text, cut at the first EOS and without PAD or MASK tokens.

    ``eos_id`` and ``skip_ids`` default to the tokenizer's EOS id and its PAD
    and MASK ids. Pass the adapter's ids where they differ from the tokenizer's
    attributes, for example when an adapter pads with EOS or finds its mask
    token in the vocabulary. Other special tokens, such as ``[UNK]``, stay in
    the text so that they remain visible.
    """
    if response_ids.dim() != 2:
        raise ValueError(f"response_ids must have shape (B, L), got {tuple(response_ids.shape)}")
    if skip_ids is None:
        skip_ids = (tokenizer.pad_token_id, tokenizer.mask_token_id)
    drop = set(skip_ids) - {None}
    eos = tokenizer.eos_token_id if eos_id is None else eos_id
    texts = []
    for row in response_ids.tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        kept = [token for token in row if token not in drop]
        texts.append(tokenizer.decode(kept, skip_special_tokens=False))
    return texts


def answer_matches(text: str, target: float, mode: str = "strict") -> bool:
    """Check whether the answer extracted from ``text`` equals the number ``target``.

    A NaN target (a problem without a numeric answer) never matches.
    """
    if math.isnan(target):
        return False
    answer = extract_strict(text) if mode == "strict" else extract_flexible(text)
    return answer is not None and float(answer) == target


def make_task_reward(
    tokenizer,
    mode: str = "strict",
    *,
    eos_id: int | None = None,
    skip_ids: Collection[int] | None = None,
) -> TaskReward:
    """Build ``reward(response_ids (B, L) long, target (B, 1) float64) -> (B,) float32``.

    ``mode`` picks the answer extraction of :mod:`orderpolicy.tasks.scoring`:
    "strict" reads the number after ``####``, "flexible" the last number.
    ``eos_id`` and ``skip_ids`` are passed to :func:`decode_responses`.

    >>> reward = make_task_reward(adapter.tokenizer)              # doctest: +SKIP
    >>> reward(response_ids, target)                               # doctest: +SKIP
    tensor([1., 0.])
    """
    if mode not in SCORING_MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; expected one of {SCORING_MODES}")

    def reward(response_ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape[0] != response_ids.shape[0]:
            raise ValueError(
                f"target has {target.shape[0]} rows but response_ids has {response_ids.shape[0]}; "
                "pass one target per response"
            )
        texts = decode_responses(tokenizer, response_ids.cpu(), eos_id=eos_id, skip_ids=skip_ids)
        targets = target.reshape(-1).double().tolist()  # (B,)
        scores = [float(answer_matches(text, value, mode)) for text, value in zip(texts, targets)]
        return torch.tensor(scores, dtype=torch.float32, device=response_ids.device)  # (B,)

    return reward
