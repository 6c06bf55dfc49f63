"""Cost-accuracy trade-offs of a sweep: the Pareto front and comparisons at equal cost.

A point is (cost, value), for example (mean NFE, accuracy): lower cost and
higher value are better. Rows are the sweep's result dictionaries, each with a
``strategy`` name and numeric fields such as ``mean_nfe`` and ``accuracy``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Mark each point that no other point dominates.

    Point j dominates point i when cost_j <= cost_i and value_j >= value_i with
    at least one of the two strict. Equal points do not dominate each other, so
    duplicates on the front are all marked. Runs in O(n^2), which suits sweeps of
    a few hundred rows.

    >>> pareto_front([(1, 0.5), (2, 0.5), (2, 0.8), (2, 0.8)])
    [True, False, True, True]
    """
    for cost, value in points:
        if not (math.isfinite(cost) and math.isfinite(value)):
            raise ValueError(f"Pareto points must be finite, got (cost={cost}, value={value})")
    front = []
    for cost, value in points:
        dominated = any(
            other_cost <= cost and other_value >= value and (other_cost < cost or other_value > value)
            for other_cost, other_value in points
        )
        front.append(not dominated)
    return front


def match_mean_steps(
    rows: Sequence[dict],
    target: float,
    *,
    key: str = "mean_steps",
    strategies: Sequence[str] | None = None,
) -> dict[str, dict]:
    """Pick, per strategy, the row whose ``key`` lies closest to ``target``.

    Used to compare rules at equal cost, for example each adaptive rule at the
    threshold whose mean steps is nearest the learned policy's. A tie goes to
    the cheaper row, then to the earlier one. ``strategies`` limits the result
    to those names, in that order; by default every strategy in ``rows`` is
    matched, in order of first appearance.
    """
    if not math.isfinite(target):
        raise ValueError(f"target {key} must be finite, got {target}")
    names = list(dict.fromkeys(row["strategy"] for row in rows)) if strategies is None else list(strategies)
    matched = {}
    for name in names:
        candidates = [row for row in rows if row["strategy"] == name]
        if not candidates:
            raise ValueError(f"strategy {name!r} has no rows; strategies in the sweep: "
                             f"{sorted({row['strategy'] for row in rows})}")
        matched[name] = min(candidates, key=lambda row: (abs(row[key] - target), row[key]))
    return matched


def interpolate_along(
    rows: Sequence[dict],
    at: float,
    *,
    cost_key: str = "mean_nfe",
    value_key: str = "accuracy",
) -> float | None:
    """Linearly interpolate ``value_key`` at cost ``at`` along one strategy's curve.

    The curve joins the rows in order of cost, and rows of equal cost are
    averaged first. Returns None when ``at`` lies outside the measured cost
    range, because an extrapolated accuracy would be a guess.
    """
    by_cost: dict[float, list[float]] = {}
    for row in rows:
        by_cost.setdefault(float(row[cost_key]), []).append(float(row[value_key]))
    costs = sorted(by_cost)
    values = [sum(by_cost[cost]) / len(by_cost[cost]) for cost in costs]
    if not costs or not costs[0] <= at <= costs[-1]:
        return None
    for (left, low), (right, high) in zip(zip(costs, values), zip(costs[1:], values[1:])):
        if left <= at <= right:
            return low + (high - low) * (at - left) / (right - left)
    return values[0]  # a single cost equal to ``at``
