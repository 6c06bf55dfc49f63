"""Evaluation of unmasking rules and learned policies on task problems."""

from orderpolicy.evaluation.rollout import (
    RolloutResult,
    annotate_unmask_steps,
    evaluate_rule,
    format_table,
    parse_strategy_specs,
    parse_threshold_overrides,
    read_train_config,
    synth_config_from,
)

__all__ = [
    "RolloutResult",
    "annotate_unmask_steps",
    "evaluate_rule",
    "format_table",
    "parse_strategy_specs",
    "parse_threshold_overrides",
    "read_train_config",
    "synth_config_from",
]
