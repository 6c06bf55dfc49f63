"""Feed problems to the decoding environment as tensordicts of token ids.

Shapes: B batch, K samples per prompt, P prompt width, L response length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tensordict import TensorDict

from orderpolicy.batching import encode_prompts, encode_responses
from orderpolicy.tasks.base import Problem


def target_value(problem: Problem) -> float:
    """Return the numeric final answer, or NaN when it is not a number."""
    try:
        return float(problem.target)
    except ValueError:
        return math.nan


class ProblemSource:
    """Cycle through a fixed list of problems in order, K copies of each prompt in a row.

    With ``world_size`` > 1 each call takes the global batch of
    ``batch_size * world_size`` rows and returns the share of ``rank``.

    The position in the list is part of :meth:`state_dict`, so training resumes
    on the same problems.
    """

    def __init__(
        self,
        problems: Sequence[Problem],
        tokenizer,
        *,
        prompt_length: int,
        response_length: int,
        pad_id: int,
        eos_id: int,
        samples_per_prompt: int = 1,
        truncate_prompts: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not problems:
            raise ValueError("the problem list is empty; check the task name, data path and num_problems")
        self.problems = list(problems)
        self.samples_per_prompt = samples_per_prompt
        self.prompt_ids, self.prompt_mask = encode_prompts(
            tokenizer, [p.question for p in problems], prompt_length, pad_id=pad_id, truncate=truncate_prompts
        )
        self.reference = encode_responses(
            tokenizer, [p.answer for p in problems], response_length, eos_id=eos_id, truncate=True
        )
        self.target = torch.tensor([target_value(p) for p in problems], dtype=torch.float64)
        self.position = 0
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.problems)

    def next_indices(self, num_prompts: int) -> torch.Tensor:
        index = (self.position + torch.arange(num_prompts)) % len(self.problems)
        self.position = (self.position + num_prompts) % len(self.problems)
        return index

    def batch(self, index: torch.Tensor) -> TensorDict:
        """Return the rows ``index`` (each repeated K times) as a reset tensordict."""
        index = index.repeat_interleave(self.samples_per_prompt)  # (B * K,)
        return TensorDict(
            prompt_ids=self.prompt_ids[index],
            prompt_mask=self.prompt_mask[index],
            reference=self.reference[index],
            target=self.target[index].unsqueeze(-1),
            problem_index=index,
            batch_size=[len(index)],
        )

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> TensorDict:
        if batch_size % self.samples_per_prompt:
            raise ValueError(
                f"batch_size={batch_size} must be a multiple of samples_per_prompt={self.samples_per_prompt}"
            )
        # Every process advances through the same global batch and keeps its own
        # contiguous share, so N processes see exactly the prompts one process would.
        local = batch_size // self.samples_per_prompt
        index = self.next_indices(local * self.world_size)
        return self.batch(index[self.rank * local : (self.rank + 1) * local])

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
