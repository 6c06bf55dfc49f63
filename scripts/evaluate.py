"""Sweep unmasking rules and learned policies over step budgets and thresholds; plot accuracy against NFE.

    python scripts/evaluate.py --out runs/eval                        # every rule, shipped model, gsm-synth
    python scripts/evaluate.py --strategies confidence,threshold --steps 2,4,8 \\
        --thresholds threshold=0.5,0.7,0.9,0.99 --policies default --out runs/eval
    python scripts/evaluate.py --task gsm8k --data PATH/test.jsonl --num-problems 200 --out runs/eval-gsm8k

Fixed-step rules run at every --steps budget. Adaptive rules (threshold,
factor, eb) run at every threshold of their grid, and each --policies file in
greedy and sample mode. Writes OUT/results.json, OUT/results.csv, OUT/results.md
(table and an equal-NFE comparison with the learned policy) and
OUT/accuracy_vs_nfe.png. Accuracy, steps and NFE depend only on the seed and
the problems; tokens/s and seconds are wall-clock measurements.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from orderpolicy.evaluation import read_train_config, synth_config_from
from orderpolicy.evaluation.report import TABLE_COLUMNS, provenance, write_reports
from orderpolicy.evaluation.sweep import (
    DEFAULT_STEPS,
    DEFAULT_TARGET_NFE,
    build_comparisons,
    heuristic_entries,
    parse_steps,
    policy_entries,
    run_sweep,
)
from orderpolicy.mdm.loading import ADAPTER_NAMES, load_adapter
from orderpolicy.tasks import TASKS, load_problems
from orderpolicy.training.logger import WANDB_MODES

log = logging.getLogger("evaluate")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, default="gsm-synth", help="problem source")
    parser.add_argument("--data", help="GSM8K JSONL file (task gsm8k only)")
    parser.add_argument("--num-problems", type=int, default=200, help="problems decoded by every run")
    parser.add_argument("--problem-seed", type=int, default=0, help="seed of the generated gsm-synth problems")
    parser.add_argument("--strategies", default="all",
                        help="rule name, comma list of names, 'all' (every rule) or 'none' (only --policies)")
    parser.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)),
                        help="comma list of step budgets for the fixed-step rules")
    parser.add_argument("--thresholds", nargs="*", default=[], metavar="NAME=V1,V2",
                        help="threshold grid of an adaptive rule (threshold, factor, eb); others keep their default grid")
    parser.add_argument("--policies", default="", metavar="PATH[,PATH...]",
                        help="learned policy files, 'default' for the shipped one; each runs in greedy and sample mode")
    parser.add_argument("--target-nfe", type=float, default=DEFAULT_TARGET_NFE,
                        help="mean NFE at which rules are compared when no policy is given")
    parser.add_argument("--out", default="runs/evaluate", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of token draws, random rules and policy sampling")
    parser.add_argument("--batch-size", type=int, default=64, help="problems decoded together")
    parser.add_argument("--model", help="model folder or hub name (default: the shipped MDM)")
    parser.add_argument("--adapter", choices=ADAPTER_NAMES, default="auto", help="MDM adapter")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--prompt-length", type=int, help="prompt width P in tokens (overrides the model's)")
    parser.add_argument("--response-length", type=int, help="response length L in tokens (overrides the model's)")
    parser.add_argument("--block-length", type=int, help="semi-autoregressive block length (divides L)")
    parser.add_argument("--wandb-mode", choices=WANDB_MODES, default="disabled",
                        help="'offline' or 'online' also log the results table to wandb")
    parser.add_argument("--wandb-project", default="orderpolicy", help="wandb project name")
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


def log_to_wandb(args: argparse.Namespace, record: dict, plot_path) -> None:
    """Log the results table (and the plot) as one wandb run in the output folder."""
    import wandb

    columns = [key for _, key, _ in TABLE_COLUMNS]
    table = wandb.Table(columns=columns, data=[[str(row[key]) if key == "setting" else row[key] for key in columns]
                                               for row in record["rows"]])
    settings = {key: value for key, value in record.items() if key not in ("rows", "comparisons")}
    run = wandb.init(project=args.wandb_project, mode=args.wandb_mode, dir=args.out, config=settings,
                     job_type="evaluate", reinit="finish_previous")
    run.log({"eval/sweep": table, "eval/accuracy_vs_nfe": wandb.Image(str(plot_path))})
    run.finish()


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    # Lengths and task settings the model was trained with, then the rule grid, checked before loading.
    train_config = read_train_config(args.model)
    prompt_length, response_length = resolve_lengths(args, train_config)
    policy_paths = [path.strip() for path in args.policies.split(",") if path.strip()]
    try:
        steps = parse_steps(args.steps)
        entries = heuristic_entries(args.strategies, steps, args.thresholds, response_length=response_length,
                                    block_length=args.block_length)
    except ValueError as error:
        sys.exit(f"error: {error}")
    if not entries and not policy_paths:
        sys.exit("error: --strategies none leaves nothing to decode; pass --policies or name a strategy")

    # Model and the learned policies for it.
    adapter = load_adapter(args.model, adapter=args.adapter, device=args.device)
    entries += policy_entries(policy_paths, adapter, seed=args.seed)

    # Problems: gsm-synth with the model's settings, or GSM8K from a file.
    synth_config = synth_config_from(train_config) if args.task == "gsm-synth" else None
    problems = load_problems(args.task, split="test", num_problems=args.num_problems, seed=args.problem_seed,
                             data=args.data, synth_config=synth_config)
    log.info("sweeping %d runs over %d %s problems with P=%d, L=%d",
             len(entries), len(problems), args.task, prompt_length, response_length)

    # Sweep: every entry decodes the same problems with the same seed.
    rows = run_sweep(adapter, problems, entries, batch_size=args.batch_size, prompt_length=prompt_length,
                     response_length=response_length, block_length=args.block_length, seed=args.seed,
                     truncate_prompts=args.task == "gsm8k")

    # Report: JSON, CSV, Markdown with the equal-NFE comparison, and the plot.
    settings = {key: value for key, value in vars(args).items() if key not in ("wandb_mode", "wandb_project")}
    grid = {entry.strategy: [] for entry in entries if entry.kind == "adaptive"}
    for entry in entries:
        if entry.kind == "adaptive":
            grid[entry.strategy].append(entry.setting)
    settings.update(num_problems=len(problems), prompt_length=prompt_length, response_length=response_length,
                    steps=steps, thresholds=grid, policies=policy_paths)
    record = {**provenance(args.model, args.task, args.seed, adapter.device), "settings": settings, "rows": rows,
              "comparisons": build_comparisons(rows, args.target_nfe)}
    paths = write_reports(args.out, record)
    if args.wandb_mode != "disabled":
        log_to_wandb(args, record, paths["accuracy_vs_nfe.png"])
    print(paths["results.md"].read_text(encoding="utf-8"))
    log.info("wrote %s", ", ".join(str(path) for path in paths.values()))


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as error:  # bad options, paths and inputs
        sys.exit(f"error: {error}")
