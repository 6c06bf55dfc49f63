"""Held-out evaluation of the posterior during training: sample-mode decoding of test problems."""

from __future__ import annotations

import copy

from orderpolicy.evaluation.rollout import evaluate_rule
from orderpolicy.posterior.policy import OrderPolicy


def make_evaluator(setup, config, enabled: bool = True):
    """Return ``evaluate(net) -> dict`` reporting accuracy, mean steps and NFE of the greedy policy."""

    def evaluate(net) -> dict:
        if not enabled or not setup.eval_problems:
            return {}
        was_training = net.training
        net.eval()
        policy = OrderPolicy(copy.deepcopy(net), mode="greedy", seed=config.seed)
        result = evaluate_rule(
            setup.adapter,
            setup.eval_problems,
            policy,
            batch_size=64,
            prompt_length=setup.prompt_length,
            response_length=setup.response_length,
            seed=config.seed,
            progress=False,
            truncate_prompts=config.task != "gsm-synth",
        )
        net.train(was_training)
        summary = result.summary()
        return {
            "eval/accuracy": summary["accuracy"],
            "eval/consistency": summary["consistency"],
            "eval/mean_steps": summary["mean_steps"],
            "eval/mean_nfe": summary["mean_nfe"],
        }

    return evaluate
