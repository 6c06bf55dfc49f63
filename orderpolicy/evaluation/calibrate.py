"""Calibrate the greedy policy's inclusion threshold to a target mean step count.

Greedy decoding (every candidate with q_i >= tau, plus the most probable one)
takes a different number of steps than sampling from q_phi, so after training
tau is chosen on training-split problems, never on the test split, to make
greedy decoding use the trained step budget on average.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from orderpolicy.evaluation.rollout import evaluate_rule
from orderpolicy.posterior.network import PosteriorNet
from orderpolicy.posterior.policy import OrderPolicy
from orderpolicy.tasks.base import Problem

log = logging.getLogger(__name__)

DEFAULT_GRID = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)


def calibrate_greedy_threshold(
    adapter,
    net: PosteriorNet,
    problems: Sequence[Problem],
    target_mean_steps: float,
    *,
    prompt_length: int,
    response_length: int,
    grid: Sequence[float] = DEFAULT_GRID,
    batch_size: int = 64,
) -> tuple[float, float]:
    """Return the grid threshold whose greedy mean steps is closest to the target, and those mean steps."""
    best = (0.5, float("inf"))
    best_gap = float("inf")
    for threshold in grid:
        policy = OrderPolicy(net, mode="greedy", threshold=threshold)
        summary = evaluate_rule(
            adapter, problems, policy, batch_size=batch_size, prompt_length=prompt_length,
            response_length=response_length, progress=False, truncate_prompts=True,
        ).summary()
        gap = abs(summary["mean_steps"] - target_mean_steps)
        log.info("greedy threshold %.2f: mean steps %.2f", threshold, summary["mean_steps"])
        if gap < best_gap:
            best, best_gap = (threshold, summary["mean_steps"]), gap
    return best
