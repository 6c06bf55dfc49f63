"""Heuristic unmasking rules, one small function each, chosen by name.

Every rule maps a :class:`Selection` (the state's token statistics, the
positions it may unmask, the steps left) to a boolean unmask set (B, L) that is
non-empty in every row with a candidate.

Fixed-step rules unmask ``ceil(remaining / steps_left)`` positions per step, so
a budget of S steps is used exactly. Adaptive rules choose the count from the
statistics and report the number of steps they took.

Shapes: B batch, L response length.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from orderpolicy.decoding.stats import TokenStats


@dataclass
class Selection:
    """Inputs of one unmasking decision."""

    stats: TokenStats
    candidates: torch.Tensor  # (B, L) bool, masked positions the rule may pick
    steps_left: torch.Tensor  # (B,) long >= 1, steps left in the budget (fixed-step rules)
    generator: torch.Generator | None = None


def fixed_counts(candidates: torch.Tensor, steps_left: torch.Tensor) -> torch.Tensor:
    """Return ceil(remaining / steps_left) per row (B,)."""
    remaining = candidates.sum(dim=1)  # (B,)
    return torch.div(remaining + steps_left - 1, steps_left, rounding_mode="floor")


def top_k(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Pick the ``k[b]`` highest-scoring candidates of each row; ties go to the lower position."""
    masked_scores = scores.masked_fill(~candidates, float("-inf"))  # (B, L)
    order = masked_scores.argsort(dim=1, descending=True, stable=True)  # (B, L)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return (ranks < k[:, None]) & candidates


def _with_best(chosen: torch.Tensor, scores: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Add each row's best candidate, so rows with candidates never select nothing."""
    best = top_k(scores, candidates, torch.ones(scores.shape[0], dtype=torch.long, device=scores.device))
    return (chosen & candidates) | best


# Fixed-step rules --------------------------------------------------------------


def select_random(sel: Selection) -> torch.Tensor:
    scores = torch.rand(sel.candidates.shape, generator=sel.generator, device=sel.candidates.device)
    return top_k(scores, sel.candidates, fixed_counts(sel.candidates, sel.steps_left))


def select_left_to_right(sel: Selection) -> torch.Tensor:
    length = sel.candidates.shape[1]
    scores = -torch.arange(length, dtype=torch.float, device=sel.candidates.device).expand_as(sel.candidates)
    return top_k(scores, sel.candidates, fixed_counts(sel.candidates, sel.steps_left))


def select_confidence(sel: Selection) -> torch.Tensor:
    """LLaDA's low-confidence remasking: keep the most probable predictions."""
    return top_k(sel.stats.logp_pred, sel.candidates, fixed_counts(sel.candidates, sel.steps_left))


def select_margin(sel: Selection) -> torch.Tensor:
    return top_k(sel.stats.margin, sel.candidates, fixed_counts(sel.candidates, sel.steps_left))


def select_entropy(sel: Selection) -> torch.Tensor:
    return top_k(-sel.stats.entropy, sel.candidates, fixed_counts(sel.candidates, sel.steps_left))


# Adaptive rules ------------------------------------------------------------------


def select_threshold(sel: Selection, threshold: float) -> torch.Tensor:
    """Fast-dLLM confidence threshold: every candidate with p > threshold, and always the top one."""
    chosen = sel.stats.logp_pred.exp() > threshold
    return _with_best(chosen, sel.stats.logp_pred, sel.candidates)


def select_factor(sel: Selection, threshold: float) -> torch.Tensor:
    """Fast-dLLM factor rule: the n most confident, for the largest n with (n + 1)(1 - c_(n)) < f.

    c_(n) is the n-th highest confidence among the candidates (Wu et al., 2025,
    "Fast-dLLM", factor-based parallel decoding); at least one is unmasked.
    """
    confidence = sel.stats.logp_pred.exp().masked_fill(~sel.candidates, 0.0)  # (B, L)
    ordered = confidence.sort(dim=1, descending=True, stable=True).values  # (B, L)
    n = torch.arange(1, ordered.shape[1] + 1, device=ordered.device)  # (L,)
    ok = ((n + 1) * (1 - ordered) < threshold) & (ordered > 0)  # (B, L)
    # The largest n whose prefix satisfies the bound: count the leading run of True.
    count = ok.long().cumprod(dim=1).sum(dim=1).clamp(min=1)  # (B,)
    return top_k(sel.stats.logp_pred, sel.candidates, count)


def select_eb(sel: Selection, threshold: float) -> torch.Tensor:
    """EB-Sampler: the longest entropy-sorted prefix with sum(H) - max(H) <= gamma.

    Ben-Hamu et al., 2025, "Accelerated Sampling from Masked Diffusion Models via
    Entropy Bounded Unmasking". Candidates are sorted by increasing entropy, so
    the prefix maximum is its last element.
    """
    entropy = sel.stats.entropy.masked_fill(~sel.candidates, float("inf"))  # (B, L)
    ordered = entropy.sort(dim=1, stable=True).values  # (B, L)
    finite = torch.isfinite(ordered)
    prefix_sum = torch.where(finite, ordered, torch.zeros_like(ordered)).cumsum(dim=1)  # (B, L)
    ok = finite & (prefix_sum - ordered <= threshold)
    count = ok.long().cumprod(dim=1).sum(dim=1).clamp(min=1)  # (B,)
    return top_k(-sel.stats.entropy, sel.candidates, count)


@dataclass(frozen=True)
class StrategySpec:
    """A registered rule: its function and whether it follows a fixed step budget."""

    fn: Callable[..., torch.Tensor]
    fixed_steps: bool
    default_threshold: float | None = None  # adaptive rules only


STRATEGIES: dict[str, StrategySpec] = {
    "random": StrategySpec(select_random, True),
    "left_to_right": StrategySpec(select_left_to_right, True),
    "confidence": StrategySpec(select_confidence, True),
    "margin": StrategySpec(select_margin, True),
    "entropy": StrategySpec(select_entropy, True),
    "threshold": StrategySpec(select_threshold, False, 0.9),
    "factor": StrategySpec(select_factor, False, 1.0),
    "eb": StrategySpec(select_eb, False, 0.1),
}


def get_strategy(name: str) -> StrategySpec:
    """Look up a rule by name; an unknown name raises with the closest valid one."""
    if name not in STRATEGIES:
        close = difflib.get_close_matches(name, list(STRATEGIES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown strategy {name!r}; valid names: {sorted(STRATEGIES)}.{hint}")
    return STRATEGIES[name]


def check_threshold(name: str, threshold: float) -> None:
    """Validate an adaptive rule's threshold: (0, 1] for confidence thresholds, > 0 otherwise."""
    if name == "threshold" and not 0 < threshold <= 1:
        raise ValueError(f"threshold for 'threshold' must lie in (0, 1], got {threshold}")
    if name in ("factor", "eb") and not threshold > 0:
        raise ValueError(f"threshold for {name!r} must be > 0, got {threshold}")
