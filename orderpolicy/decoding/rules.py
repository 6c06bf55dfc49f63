"""Decision rules over decoding states: heuristics by name, as plain objects and tensordict policies.

A rule sees the token statistics of the current state, the candidate positions
(masked positions in the current block) and the step counters, and returns the
set to unmask. The same :class:`HeuristicRule` drives the plain reference
sampler and, wrapped in :class:`HeuristicPolicy`, the torchrl environment.

Shapes: B batch, L response length.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from orderpolicy.decoding.stats import TokenStats
from orderpolicy.decoding.strategies import Selection, check_threshold, get_strategy


def block_candidates(masked: torch.Tensor, block_length: int | None) -> torch.Tensor:
    """Restrict masked positions (B, L) to each row's first block that still has one.

    Without blocks every masked position is a candidate. With blocks of
    ``block_length`` positions (LLaDA's semi-autoregressive decoding), a block is
    decoded completely before the next one opens.
    """
    if block_length is None:
        return masked
    batch, length = masked.shape
    positions = torch.arange(length, device=masked.device)  # (L,)
    first = torch.where(masked, positions, length).min(dim=1).values  # (B,) first masked position
    block_start = torch.div(first, block_length, rounding_mode="floor") * block_length  # (B,)
    in_block = (positions[None, :] >= block_start[:, None]) & (positions[None, :] < (block_start + block_length)[:, None])
    return masked & in_block


def num_blocks(response_length: int, block_length: int | None) -> int:
    """Number of semi-autoregressive blocks; the block length must divide the response length."""
    if block_length is None:
        return 1
    if block_length < 1 or response_length % block_length:
        raise ValueError(
            f"block_length={block_length} must be a positive divisor of response_length={response_length}"
        )
    return response_length // block_length


class HeuristicRule:
    """A named heuristic with its step budget or threshold.

    >>> rule = HeuristicRule("confidence", response_length=72, steps=4)
    >>> rule = HeuristicRule("threshold", response_length=72, threshold=0.9)
    """

    def __init__(
        self,
        name: str,
        response_length: int,
        steps: int | None = None,
        threshold: float | None = None,
        block_length: int | None = None,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.spec = get_strategy(name)
        self.blocks = num_blocks(response_length, block_length)
        if self.spec.fixed_steps:
            if steps is None or not 1 <= steps <= response_length:
                raise ValueError(
                    f"strategy {name!r} needs 1 <= steps <= response length {response_length}, got steps={steps}"
                )
            if steps % self.blocks:
                raise ValueError(
                    f"steps={steps} must be a multiple of the number of blocks ({self.blocks}) so that "
                    "every block gets the same budget; change --steps or --block-length"
                )
            self.steps_per_block = steps // self.blocks
        else:
            threshold = self.spec.default_threshold if threshold is None else threshold
            check_threshold(name, threshold)
        self.steps = steps
        self.threshold = threshold
        self.generator = torch.Generator()
        self.set_seed(seed)

    def set_seed(self, seed: int) -> None:
        """Seed the rule's own generator (used by the random rule)."""
        self.generator.manual_seed(seed)

    @property
    def label(self) -> str:
        """Short description for tables, such as ``confidence@4`` or ``threshold@0.9``."""
        return f"{self.name}@{self.steps}" if self.spec.fixed_steps else f"{self.name}@{self.threshold:g}"

    def decide(
        self,
        stats: TokenStats,
        candidates: torch.Tensor,  # (B, L) bool
        block_step: torch.Tensor,  # (B,) long, steps already spent in the current block
    ) -> torch.Tensor:
        """Return the unmask set (B, L) for the current state."""
        if self.spec.fixed_steps:
            steps_left = (self.steps_per_block - block_step).clamp(min=1)  # (B,)
            return self.spec.fn(Selection(stats, candidates, steps_left, self.generator))
        steps_left = torch.ones_like(block_step)
        return self.spec.fn(Selection(stats, candidates, steps_left, self.generator), self.threshold)


def stats_from_tensordict(td: TensorDictBase) -> TokenStats:
    """Read the token statistics an environment observation carries."""
    return TokenStats(
        predicted=td["predicted"], logp_pred=td["logp_pred"], margin=td["margin"], entropy=td["entropy"]
    )


class HeuristicPolicy(TensorDictModuleBase):
    """A :class:`HeuristicRule` as a tensordict policy: reads the observation, writes ``action``.

    >>> policy = HeuristicPolicy(HeuristicRule("margin", response_length=72, steps=8))
    >>> td = policy(env.reset())        # doctest: +SKIP
    >>> td["action"].shape              # (B, L) bool
    """

    in_keys = ["predicted", "logp_pred", "margin", "entropy", "candidates", "block_step", "finished"]
    out_keys = ["action"]

    def __init__(self, rule: HeuristicRule) -> None:
        super().__init__()
        self.rule = rule

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        candidates = td["candidates"] & ~td["finished"]  # (B, L); finished rows select nothing
        action = self.rule.decide(stats_from_tensordict(td), candidates, td["block_step"].squeeze(-1))
        td.set("action", action)
        return td
