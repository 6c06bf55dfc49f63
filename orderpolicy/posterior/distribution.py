"""Independent Bernoulli unmask sets conditioned on being non-empty.

Each candidate position i is selected with probability q_i = sigmoid(a_i),
independently, and the set is conditioned on selecting at least one position:

    log q(z) = sum_i [z_i log q_i + (1 - z_i) log(1 - q_i)] - log(1 - prod_i (1 - q_i)).

Sampling is exact in one pass: draw the first selected position j with
P(j) = q_j prod_{i<j} (1 - q_i) / (1 - prod_i (1 - q_i)), then every later
candidate independently with probability q_i. Every row consumes the same
random numbers, so two code paths with equal generators draw equal sets.

Shapes: B batch, L positions. Rows without candidates get the empty set and
log-probability 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """Return log(1 - exp(x)) for x <= 0, stably (Maechler, 2012)."""
    x = x.clamp(max=-1e-12)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_nonempty(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """log(1 - prod_i (1 - q_i)) over each row's candidates (B,)."""
    log_none = (F.logsigmoid(-logits) * candidates).sum(dim=1)  # (B,) log prod (1 - q_i)
    return _log1mexp(log_none)


def log_prob(logits: torch.Tensor, candidates: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log q(z) of sets z (B, L) under per-position logits (B, L), conditioned on non-empty."""
    z = z.to(logits.dtype)
    per_position = z * F.logsigmoid(logits) + (1 - z) * F.logsigmoid(-logits)  # (B, L)
    total = (per_position * candidates).sum(dim=1)  # (B,)
    has_candidates = candidates.any(dim=1)
    return torch.where(has_candidates, total - log_nonempty(logits, candidates), torch.zeros_like(total))


def inclusion_probs(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """P(i in z | z non-empty) = q_i / (1 - prod_j (1 - q_j)) for candidates, 0 elsewhere (B, L)."""
    log_q = F.logsigmoid(logits)  # (B, L)
    probs = torch.exp(log_q - log_nonempty(logits, candidates)[:, None])  # (B, L)
    return probs * candidates


@torch.no_grad()
def sample(
    logits: torch.Tensor,
    candidates: torch.Tensor,
    generator: torch.Generator | None,
    total_rows: int | None = None,
    row_offset: int = 0,
) -> torch.Tensor:
    """Draw one non-empty set per row with candidates, exactly (B, L) bool.

    With ``total_rows`` the random numbers are drawn for a global batch and rows
    ``row_offset .. row_offset + B`` are used, so data-parallel processes that
    share a generator seed draw what one process would draw for the whole batch.
    """
    batch, length = logits.shape
    total = batch if total_rows is None else total_rows
    rows = slice(row_offset, row_offset + batch)
    first_draw = torch.rand(total, generator=generator, device=logits.device)[rows]  # (B,)
    rest_draw = torch.rand(total, length, generator=generator, device=logits.device)[rows]  # (B, L)
    log_q = F.logsigmoid(logits).masked_fill(~candidates, float("-inf"))  # (B, L)
    log_not_q = (F.logsigmoid(-logits) * candidates).cumsum(dim=1)  # (B, L) log prod_{i<=j}(1 - q_i)
    log_not_before = torch.cat([torch.zeros_like(log_not_q[:, :1]), log_not_q[:, :-1]], dim=1)
    log_first = log_q + log_not_before  # (B, L) log P(first selected = j), unnormalised
    first_probs = torch.softmax(log_first.masked_fill(~candidates, float("-inf")), dim=1)  # (B, L)
    first_probs = torch.nan_to_num(first_probs, nan=0.0)  # rows without candidates
    cdf = first_probs.cumsum(dim=1)  # (B, L)
    first = (cdf < first_draw[:, None]).sum(dim=1).clamp(max=length - 1)  # (B,) inverse-CDF index
    # Guard against rounding: the chosen index must be a candidate.
    last_candidate = torch.where(candidates, torch.arange(length, device=logits.device), -1).max(dim=1).values
    first = torch.minimum(first, last_candidate.clamp(min=0))
    positions = torch.arange(length, device=logits.device)[None, :]
    later = (rest_draw < torch.sigmoid(logits)) & (positions > first[:, None])
    chosen = (later | (positions == first[:, None])) & candidates
    return chosen


def greedy(logits: torch.Tensor, candidates: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Every candidate with q_i >= threshold, plus the most probable one (B, L) bool."""
    if not 0 < threshold < 1:
        raise ValueError(f"greedy threshold must lie in (0, 1), got {threshold}")
    scores = logits.masked_fill(~candidates, float("-inf"))
    best = F.one_hot(scores.argmax(dim=1), logits.shape[1]).bool() & candidates
    cut = torch.logit(torch.tensor(threshold, dtype=logits.dtype))
    return ((logits >= cut) & candidates) | best


def prior_log_prob(rho: float, candidates: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(z) under the prior: independent Bernoulli(rho) per candidate, conditioned on non-empty (B,)."""
    if not 0 < rho < 1:
        raise ValueError(f"prior rho must lie in (0, 1), got {rho}")
    logit = torch.logit(torch.tensor(rho, dtype=torch.float64, device=candidates.device))
    return log_prob(logit.expand(candidates.shape), candidates, z)
