"""Decode task problems with unmasking rules (and optionally a learned policy) and compare them.

    python scripts/rollout.py                                      # every rule, 4 steps, shipped model
    python scripts/rollout.py --strategy confidence,threshold --threshold threshold=0.8
    python scripts/rollout.py --task gsm8k --data PATH/test.jsonl --num-problems 100
    python scripts/rollout.py --policy default --strategy none --json

Each rule or policy becomes one table row: strict accuracy, consistency of the
worked arithmetic, mean and max decoding steps, mean NFE and response tokens
decoded per second. Prompt and response lengths, and the gsm-synth settings,
come from the model folder's orderpolicy_train_config.yaml when it has one.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import torch

from orderpolicy.evaluation import (
    annotate_unmask_steps,
    evaluate_rule,
    format_table,
    parse_strategy_specs,
    read_train_config,
    synth_config_from,
)
from orderpolicy.mdm.loading import ADAPTER_NAMES, load_adapter
from orderpolicy.tasks import TASKS, load_problems

log = logging.getLogger("rollout")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategy", default="all",
                        help="rule name, comma list of names, 'all' (every rule) or 'none' (only --policy)")
    parser.add_argument("--steps", type=int, default=4, help="step budget of the fixed-step rules")
    parser.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                        help="threshold of an adaptive rule (threshold, factor, eb); repeatable")
    parser.add_argument("--task", choices=TASKS, default="gsm-synth", help="problem source")
    parser.add_argument("--data", help="GSM8K JSONL file (task gsm8k only)")
    parser.add_argument("--num-problems", type=int, default=500, help="problems to decode")
    parser.add_argument("--problem-seed", type=int, default=0, help="seed of the generated gsm-synth problems")
    parser.add_argument("--batch-size", type=int, default=64, help="problems decoded together")
    parser.add_argument("--model", help="model folder or hub name (default: the shipped MDM)")
    parser.add_argument("--adapter", choices=ADAPTER_NAMES, default="auto", help="MDM adapter")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--prompt-length", type=int, help="prompt width P in tokens (overrides the model's)")
    parser.add_argument("--response-length", type=int, help="response length L in tokens (overrides the model's)")
    parser.add_argument("--block-length", type=int, help="semi-autoregressive block length (divides L)")
    parser.add_argument("--max-steps", type=int, help="unmask everything left at this step (default: L)")
    parser.add_argument("--temperature", type=float, default=0.0, help="token sampling temperature; 0 is argmax")
    parser.add_argument("--policy", metavar="PATH|default", help="learned policy file, or 'default' for the shipped one")
    parser.add_argument("--policy-mode", choices=("sample", "greedy"), default="greedy",
                        help="draw unmask sets from the policy or take its greedy set")
    parser.add_argument("--seed", type=int, default=0, help="seed of token draws and random rules")
    parser.add_argument("--json", action="store_true", help="print a JSON summary to stdout instead of the table")
    parser.add_argument("--show", type=int, default=0, metavar="N",
                        help="print N decoded examples per row, each token tagged with its unmask step")
    return parser.parse_args(argv)


def resolve_lengths(args: argparse.Namespace, train_config: dict | None) -> tuple[int, int]:
    """Take P and L from the options, else from the model's training config."""
    lengths = []
    for key in ("prompt_length", "response_length"):
        value = getattr(args, key)
        if value is None and train_config is not None:
            value = train_config.get(key)
        if value is None:
            sys.exit(f"error: the model folder has no {key}; pass --{key.replace('_', '-')}")
        lengths.append(int(value))
    return lengths[0], lengths[1]


def load_learned_policy(args: argparse.Namespace, adapter):
    """Load --policy through orderpolicy.posterior, imported only when a policy is requested."""
    try:
        from orderpolicy.posterior import load_policy
    except ImportError as error:
        sys.exit(f"error: --policy needs orderpolicy.posterior.load_policy, which failed to import: {error}")
    return load_policy(args.policy, adapter, mode=args.policy_mode, seed=args.seed)


def example_lines(result, problems, count: int, tokenizer) -> list[dict]:
    """Collect the first ``count`` decoded examples of a result."""
    examples = []
    for i in range(min(count, len(problems))):
        examples.append({
            "question": problems[i].question,
            "target": problems[i].target,
            "text": result.texts[i],
            "correct": bool(result.correct[i]),
            "steps": int(result.steps[i]),
            "annotated": annotate_unmask_steps(tokenizer, result.response[i], result.unmask_step[i]),
        })
    return examples


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    # Lengths and task settings the model was trained with, then the rules, checked before loading.
    train_config = read_train_config(args.model)
    prompt_length, response_length = resolve_lengths(args, train_config)
    try:
        candidates = parse_strategy_specs(args.strategy, response_length, args.steps, args.threshold,
                                          block_length=args.block_length)
    except ValueError as error:
        sys.exit(f"error: {error}")

    # Model, and the optional learned policy for it.
    adapter = load_adapter(args.model, adapter=args.adapter, device=args.device)
    if args.policy is not None:
        candidates.append(load_learned_policy(args, adapter))
    if not candidates:
        sys.exit("error: --strategy none leaves nothing to decode; pass --policy or name a strategy")

    # Problems: gsm-synth with the model's settings, or GSM8K from a file.
    synth_config = synth_config_from(train_config) if args.task == "gsm-synth" else None
    problems = load_problems(args.task, split="test", num_problems=args.num_problems, seed=args.problem_seed,
                             data=args.data, synth_config=synth_config)
    log.info("decoding %d %s problems with P=%d, L=%d", len(problems), args.task, prompt_length, response_length)

    # Decode and score, one table row per rule or policy.
    rows = []
    for candidate in candidates:
        result = evaluate_rule(
            adapter, problems, candidate, batch_size=args.batch_size, prompt_length=prompt_length,
            response_length=response_length, block_length=args.block_length, max_steps=args.max_steps,
            temperature=args.temperature, seed=args.seed, progress=not args.json,
            truncate_prompts=args.task == "gsm8k",
        )
        rows.append((result.summary(), example_lines(result, problems, args.show, adapter.tokenizer)))

    # Report.
    if args.json:
        summaries = [dict(summary, examples=examples) if examples else summary for summary, examples in rows]
        settings = {key: value for key, value in vars(args).items() if key not in ("json", "show")}
        settings.update(prompt_length=prompt_length, response_length=response_length)
        print(json.dumps({"settings": settings, "results": summaries}, indent=2))
        return
    for summary, examples in rows:
        for example in examples:
            print(f"\n=== {summary['label']} | target {example['target']} | correct {example['correct']} "
                  f"| {example['steps']} steps\n{example['question']}\n{example['annotated']}")
    print()
    print(format_table([summary for summary, _ in rows]))


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as error:  # bad options, paths and inputs
        sys.exit(f"error: {error}")
