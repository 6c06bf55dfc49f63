"""Sweep unmasking rules and learned policies over step budgets and thresholds.

Fixed-step rules run at every step budget, adaptive rules (threshold, factor,
eb) at every threshold of their grid, and each learned policy in greedy and
sample mode. Every run decodes the same problems with the same seed through
:func:`~orderpolicy.evaluation.rollout.evaluate_rule` and becomes one row:

    strategy, setting, kind, accuracy, consistency, mean_steps, mean_nfe,
    max_steps, tokens_per_second, pareto, ...

where ``setting`` is the step budget (fixed-step rules), the threshold
(adaptive rules) or the policy mode (learned policies), and ``pareto`` marks
the rows on the accuracy-versus-mean-NFE front of the whole sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from orderpolicy.decoding.rules import HeuristicRule
from orderpolicy.decoding.strategies import STRATEGIES, check_threshold, get_strategy
from orderpolicy.evaluation.pareto import interpolate_along, match_mean_steps, pareto_front
from orderpolicy.evaluation.rollout import evaluate_rule, parse_strategy_specs
from orderpolicy.mdm.interface import MDMAdapter
from orderpolicy.posterior.policy import POLICY_MODES
from orderpolicy.tasks.base import Problem

DEFAULT_STEPS = (2, 4, 8, 16, 64)
DEFAULT_THRESHOLDS = {  # grids of the adaptive rules; each spans few to many tokens per step
    "threshold": (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99),  # confidence p above which a position is unmasked
    "factor": (0.5, 1.0, 2.0, 3.0, 4.0),  # Fast-dLLM factor f
    "eb": (0.01, 0.05, 0.1, 0.3, 1.0, 2.0),  # EB-Sampler entropy budget gamma, in nats
}
DEFAULT_TARGET_NFE = 4.0  # cost at which rules are compared when the sweep has no learned policy
KINDS = ("fixed", "adaptive", "learned")


@dataclass
class SweepEntry:
    """One decoding configuration of the sweep."""

    strategy: str  # rule name, or the learned policy's label
    setting: int | float | str  # step budget, threshold or policy mode
    kind: str  # fixed | adaptive | learned
    candidate: object  # HeuristicRule or tensordict policy

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"sweep entry kind must be one of {KINDS}, got {self.kind!r}")


def parse_steps(text: str) -> list[int]:
    """Parse a comma list of step budgets such as ``2,4,8``."""
    try:
        steps = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"step budgets {text!r} must be a comma list of integers, for example 2,4,8") from None
    if not steps or any(value < 1 for value in steps):
        raise ValueError(f"step budgets {text!r} must list at least one integer >= 1")
    if len(set(steps)) != len(steps):
        raise ValueError(f"step budgets {text!r} list a value more than once")
    return steps


def parse_threshold_grid(items: Sequence[str], strategies: Sequence[str]) -> dict[str, list[float]]:
    """Build the threshold grid of each adaptive rule in ``strategies``.

    ``items`` are ``NAME=V1,V2,...`` overrides; adaptive rules without one use
    :data:`DEFAULT_THRESHOLDS`.
    """
    overrides: dict[str, list[float]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"threshold grid {item!r} must look like NAME=V1,V2,..., for example threshold=0.5,0.9")
        if get_strategy(name).fixed_steps:
            adaptive = sorted(n for n, spec in STRATEGIES.items() if not spec.fixed_steps)
            raise ValueError(f"strategy {name!r} follows the step budgets (--steps); thresholds apply to {adaptive}")
        if name in overrides:
            raise ValueError(f"threshold grid for {name!r} is given more than once; merge the values into one item")
        try:
            grid = [float(value) for value in values.split(",") if value.strip()]
        except ValueError:
            raise ValueError(f"threshold grid {item!r} needs numbers after '=', got {values!r}") from None
        if not grid or len(set(grid)) != len(grid):
            raise ValueError(f"threshold grid {item!r} must list at least one value, each once")
        for value in grid:
            check_threshold(name, value)
        overrides[name] = grid
    unused = sorted(set(overrides) - set(strategies))
    if unused:
        raise ValueError(f"threshold grid given for {unused}, which the strategy list does not include")
    adaptive = [name for name in strategies if not get_strategy(name).fixed_steps]
    return {name: overrides.get(name, list(DEFAULT_THRESHOLDS[name])) for name in adaptive}


def heuristic_entries(
    strategies: str,
    steps: Sequence[int],
    thresholds: Sequence[str],
    *,
    response_length: int,
    block_length: int | None = None,
) -> list[SweepEntry]:
    """Build the rule entries: ``strategies`` is a name, a comma list, ``all`` or ``none``."""
    names = [rule.name for rule in parse_strategy_specs(strategies, response_length, max(steps),
                                                        block_length=block_length)]
    grid = parse_threshold_grid(thresholds, names)
    entries = []
    for name in names:
        if get_strategy(name).fixed_steps:
            for budget in steps:
                rule = HeuristicRule(name, response_length, steps=budget, block_length=block_length)
                entries.append(SweepEntry(name, budget, "fixed", rule))
        else:
            for value in grid[name]:
                rule = HeuristicRule(name, response_length, threshold=value, block_length=block_length)
                entries.append(SweepEntry(name, value, "adaptive", rule))
    return entries


def policy_entries(paths: Sequence[str], adapter: MDMAdapter, seed: int = 0) -> list[SweepEntry]:
    """Load each policy file (``default`` = the shipped policy) once per mode, greedy and sample."""
    from orderpolicy.posterior import load_policy

    entries = []
    for path in paths:
        for mode in POLICY_MODES:
            policy = load_policy(path, adapter, mode=mode, seed=seed)
            entries.append(SweepEntry(policy.label, mode, "learned", policy))
    labels = [entry.strategy for entry in entries]
    if len(set(labels)) != len(labels):
        # Two files with the same name (runs/a/policy.pt, runs/b/policy.pt): name them by path instead.
        for entry, path in zip(entries, [p for p in paths for _ in POLICY_MODES]):
            entry.strategy = f"{Path(path).parent.name}/{entry.strategy}"
            entry.candidate.label = entry.strategy
    labels = [entry.strategy for entry in entries]
    if len(set(labels)) != len(labels):
        raise ValueError(f"policies {list(paths)} give duplicate labels {labels}; list each policy file once")
    return entries


def run_sweep(
    adapter: MDMAdapter,
    problems: Sequence[Problem],
    entries: Sequence[SweepEntry],
    *,
    batch_size: int,
    prompt_length: int,
    response_length: int,
    block_length: int | None = None,
    seed: int = 0,
    progress: bool = True,
    truncate_prompts: bool = False,
) -> list[dict]:
    """Decode ``problems`` with every entry and return one row per entry, Pareto flags included."""
    if not entries:
        raise ValueError("the sweep has no entries; name at least one strategy or pass a policy")
    rows = []
    bar = tqdm(entries, desc="sweep", unit="run", disable=not progress)
    for entry in bar:
        bar.set_postfix(run=f"{entry.strategy}@{entry.setting}")
        result = evaluate_rule(
            adapter, problems, entry.candidate, batch_size=batch_size, prompt_length=prompt_length,
            response_length=response_length, block_length=block_length, seed=seed, progress=False,
            truncate_prompts=truncate_prompts,
        )
        summary = result.summary()
        rows.append({
            "strategy": entry.strategy,
            "setting": entry.setting,
            "kind": entry.kind,
            "label": summary["label"],
            "problems": summary["problems"],
            "accuracy": summary["accuracy"],
            "consistency": summary["consistency"],
            "mean_steps": summary["mean_steps"],
            "mean_nfe": summary["mean_nfe"],
            "max_steps": summary["max_steps"],
            "tokens_per_second": summary["tokens_per_second"],
            "seconds": summary["seconds"],
        })
    bar.close()
    mark_pareto(rows)
    return rows


def mark_pareto(rows: list[dict]) -> None:
    """Set each row's ``pareto`` flag: on the accuracy-versus-mean-NFE front of all rows."""
    front = pareto_front([(row["mean_nfe"], row["accuracy"]) for row in rows])
    for row, on_front in zip(rows, front):
        row["pareto"] = on_front


def build_comparisons(rows: Sequence[dict], default_target: float = DEFAULT_TARGET_NFE) -> list[dict]:
    """Compare every rule with each learned policy at the policy's mean NFE.

    The target is each learned row's mean NFE, or ``default_target`` once when
    the sweep has no learned policy. Each rule contributes its setting with the
    nearest mean NFE, and its accuracy linearly interpolated along its own curve
    at exactly the target NFE. The interpolation is None when the target lies
    outside the rule's NFE range.
    """
    rules = [row for row in rows if row["kind"] != "learned"]
    references = [row for row in rows if row["kind"] == "learned"] or [None]
    comparisons = []
    for reference in references:
        target = default_target if reference is None else reference["mean_nfe"]
        nearest = match_mean_steps(rules, target, key="mean_nfe") if rules else {}
        matches = []
        for name, row in nearest.items():
            curve = [other for other in rules if other["strategy"] == name]
            matches.append({
                "strategy": name,
                "setting": row["setting"],
                "mean_nfe": row["mean_nfe"],
                "accuracy": row["accuracy"],
                "interpolated_accuracy": interpolate_along(curve, target),
            })
        comparisons.append({
            "reference": None if reference is None else reference["strategy"],
            "reference_accuracy": None if reference is None else reference["accuracy"],
            "target_nfe": target,
            "matches": matches,
        })
    return comparisons
