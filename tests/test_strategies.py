"""Unmasking rules on hand-made statistics, checked against plain per-row Python loops."""

from __future__ import annotations

import math

import pytest
import torch

from orderpolicy.decoding.rules import HeuristicRule, block_candidates
from orderpolicy.decoding.stats import TokenStats
from orderpolicy.decoding.strategies import (
    STRATEGIES,
    Selection,
    fixed_counts,
    get_strategy,
    select_eb,
    select_factor,
    select_threshold,
    top_k,
)

FIXED = [name for name, spec in STRATEGIES.items() if spec.fixed_steps]
ADAPTIVE = [name for name, spec in STRATEGIES.items() if not spec.fixed_steps]


def stats_from_confidence(confidence: torch.Tensor, entropy: torch.Tensor | None = None) -> TokenStats:
    """Build statistics (B, L) whose argmax probability is ``confidence``."""
    entropy = torch.zeros_like(confidence) if entropy is None else entropy
    return TokenStats(
        predicted=torch.zeros_like(confidence, dtype=torch.long),
        logp_pred=confidence.log(),
        margin=confidence,
        entropy=entropy,
    )


def random_stats(generator: torch.Generator, batch: int, length: int) -> TokenStats:
    confidence = torch.rand(batch, length, generator=generator) * 0.99 + 0.01
    entropy = torch.rand(batch, length, generator=generator) * 0.3
    return stats_from_confidence(confidence, entropy)


def random_candidates(generator: torch.Generator, batch: int, length: int) -> torch.Tensor:
    candidates = torch.rand(batch, length, generator=generator) < 0.6  # (B, L)
    candidates[0] = False  # a finished row
    candidates[1, 3] = True  # a row with at least one candidate
    return candidates


def select(fn, stats, candidates, *args) -> torch.Tensor:
    steps_left = torch.ones(candidates.shape[0], dtype=torch.long)
    return fn(Selection(stats, candidates, steps_left), *args)


def loop_top_k(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    chosen = torch.zeros_like(candidates)
    for b in range(scores.shape[0]):
        positions = [i for i in range(scores.shape[1]) if candidates[b, i]]
        positions.sort(key=lambda i: (-scores[b, i].item(), i))
        for i in positions[: int(k[b])]:
            chosen[b, i] = True
    return chosen


# Shared helpers ------------------------------------------------------------------


def test_top_k_matches_loop_with_ties():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (16, 12), generator=generator).float()  # many ties
    candidates = random_candidates(generator, 16, 12)
    k = torch.randint(0, 14, (16,), generator=generator)
    assert torch.equal(top_k(scores, candidates, k), loop_top_k(scores, candidates, k))


def test_fixed_counts_are_ceilings():
    candidates = torch.tensor([[True] * 7 + [False], [True] * 8, [False] * 8])
    steps_left = torch.tensor([3, 8, 2])
    expected = [math.ceil(7 / 3), math.ceil(8 / 8), 0]
    assert fixed_counts(candidates, steps_left).tolist() == expected


# Adaptive rules on hand-made statistics -------------------------------------------


def test_threshold_selects_confident_positions():
    stats = stats_from_confidence(torch.tensor([[0.95, 0.5, 0.99]]))
    chosen = select(select_threshold, stats, torch.ones(1, 3, dtype=torch.bool), 0.9)
    assert chosen[0].tolist() == [True, False, True]


def test_threshold_takes_best_when_none_pass():
    stats = stats_from_confidence(torch.tensor([[0.3, 0.6, 0.5]]))
    chosen = select(select_threshold, stats, torch.ones(1, 3, dtype=torch.bool), 0.9)
    assert chosen[0].tolist() == [False, True, False]


def test_threshold_ignores_non_candidates():
    stats = stats_from_confidence(torch.tensor([[0.99, 0.95, 0.2]]))
    candidates = torch.tensor([[False, True, True]])
    chosen = select(select_threshold, stats, candidates, 0.9)
    assert chosen[0].tolist() == [False, True, False]


def loop_factor(confidence: torch.Tensor, candidates: torch.Tensor, factor: float) -> torch.Tensor:
    chosen = torch.zeros_like(candidates)
    for b in range(confidence.shape[0]):
        positions = sorted((i for i in range(confidence.shape[1]) if candidates[b, i]),
                           key=lambda i: (-confidence[b, i].item(), i))
        count = 0
        for n, i in enumerate(positions, start=1):
            if (n + 1) * (1 - confidence[b, i].item()) >= factor:
                break
            count = n
        for i in positions[: max(count, 1)]:
            chosen[b, i] = True
    return chosen


def test_factor_hand_made_case():
    # Sorted confidences 0.9, 0.8, 0.7: (2)(0.1)=0.2 < 1, (3)(0.2)=0.6 < 1, (4)(0.3)=1.2 >= 1 -> two positions.
    stats = stats_from_confidence(torch.tensor([[0.7, 0.9, 0.8]]))
    chosen = select(select_factor, stats, torch.ones(1, 3, dtype=torch.bool), 1.0)
    assert chosen[0].tolist() == [False, True, True]


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_factor_matches_loop(factor):
    generator = torch.Generator().manual_seed(1)
    stats = random_stats(generator, 12, 10)
    stats.logp_pred = (stats.logp_pred.exp() ** 0.1).log()  # confidences near 1, so counts above one occur
    candidates = random_candidates(generator, 12, 10)
    expected = loop_factor(stats.logp_pred.exp(), candidates, factor)
    assert torch.equal(select(select_factor, stats, candidates, factor), expected)


def loop_eb(entropy: torch.Tensor, candidates: torch.Tensor, gamma: float) -> torch.Tensor:
    chosen = torch.zeros_like(candidates)
    for b in range(entropy.shape[0]):
        positions = sorted((i for i in range(entropy.shape[1]) if candidates[b, i]),
                           key=lambda i: (entropy[b, i].item(), i))
        count, total = 0, 0.0
        for n, i in enumerate(positions, start=1):
            total += entropy[b, i].item()
            if total - entropy[b, i].item() > gamma:  # the prefix maximum is its last element
                break
            count = n
        for i in positions[: max(count, 1)]:
            chosen[b, i] = True
    return chosen


def test_eb_hand_made_case():
    # Sorted entropies 0.05, 0.1, 0.2: sums minus max are 0, 0.05, 0.15 -> two positions fit gamma 0.1.
    stats = stats_from_confidence(torch.full((1, 3), 0.5), torch.tensor([[0.2, 0.05, 0.1]]))
    chosen = select(select_eb, stats, torch.ones(1, 3, dtype=torch.bool), 0.1)
    assert chosen[0].tolist() == [False, True, True]


@pytest.mark.parametrize("gamma", [0.05, 0.3, 1.0])
def test_eb_matches_loop(gamma):
    generator = torch.Generator().manual_seed(2)
    stats = random_stats(generator, 12, 10)
    candidates = random_candidates(generator, 12, 10)
    expected = loop_eb(stats.entropy, candidates, gamma)
    assert torch.equal(select(select_eb, stats, candidates, gamma), expected)


# Every registered rule ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_rule_picks_nonempty_subset_of_candidates(name):
    generator = torch.Generator().manual_seed(3)
    stats = random_stats(generator, 12, 10)
    candidates = random_candidates(generator, 12, 10)
    rule = HeuristicRule(name, 10, steps=5)
    chosen = rule.decide(stats, candidates, torch.zeros(12, dtype=torch.long))
    assert not (chosen & ~candidates).any()
    assert torch.equal(chosen.any(dim=1), candidates.any(dim=1))


def simulate_steps(rule: HeuristicRule, stats: TokenStats, length: int, block_length: int | None) -> torch.Tensor:
    """Run ``rule`` to completion on fixed statistics; return the steps each row took (B,)."""
    batch = stats.logp_pred.shape[0]
    masked = torch.ones(batch, length, dtype=torch.bool)
    steps = torch.zeros(batch, dtype=torch.long)
    block_step = torch.zeros(batch, dtype=torch.long)
    while masked.any():
        active = masked.any(dim=1)
        candidates = block_candidates(masked, block_length)
        action = rule.decide(stats, candidates, block_step)
        block_done = (candidates & ~action).sum(dim=1) == 0
        masked = masked & ~action
        block_step = torch.where(block_done, torch.zeros_like(block_step), block_step + active.long())
        steps += active.long()
    return steps


@pytest.mark.parametrize("name", FIXED)
@pytest.mark.parametrize(("steps", "block_length"), [(1, None), (5, None), (24, None), (6, 8), (24, 8)])
def test_fixed_rule_uses_exact_budget(name, steps, block_length):
    stats = random_stats(torch.Generator().manual_seed(4), 3, 24)
    rule = HeuristicRule(name, 24, steps=steps, block_length=block_length)
    assert simulate_steps(rule, stats, 24, block_length).tolist() == [steps] * 3


def test_random_rule_repeats_with_seed():
    stats = random_stats(torch.Generator().manual_seed(5), 4, 16)
    candidates = torch.ones(4, 16, dtype=torch.bool)
    block_step = torch.zeros(4, dtype=torch.long)
    rule = HeuristicRule("random", 16, steps=4, seed=7)
    first = rule.decide(stats, candidates, block_step)
    rule.set_seed(7)
    assert torch.equal(rule.decide(stats, candidates, block_step), first)


# Names and validation ------------------------------------------------------------------


def test_unknown_strategy_suggests_name():
    with pytest.raises(ValueError, match="'confidence'"):
        get_strategy("confidense")


def test_fixed_rule_needs_steps():
    with pytest.raises(ValueError, match="steps=None"):
        HeuristicRule("margin", 72)


def test_steps_must_split_over_blocks():
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        HeuristicRule("confidence", 72, steps=4, block_length=24)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_rule_rejects_nonpositive_threshold(name):
    with pytest.raises(ValueError, match=name):
        HeuristicRule(name, 72, threshold=0.0)
