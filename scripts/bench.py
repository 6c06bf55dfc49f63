"""Benchmark decoding and training speed on an MDM and print each result as a ratio with its raw times.

    python scripts/bench.py                           # shipped MDM, every benchmark but gradient variance
    python scripts/bench.py --grad-variance --json    # add the RLOO versus RB-RLOO gradient variance
    python scripts/bench.py --profile                 # also print torch.profiler's top operators of one rollout

Lines: S1 policy decision / denoiser forward (goal <= 0.03), S2 environment
rollout / plain reference loop (goal <= 1.05), S3 tokens/s at the large batch /
at the small batch (goal >= 8), the training step's rows per second and
rollout share, and with --grad-variance the total gradient variance of RB-RLOO
over RLOO. Times are medians of --repeats runs after --warmup runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

import torch

from orderpolicy.evaluation import read_train_config, synth_config_from
from orderpolicy.evaluation.bench import (
    BenchSettings,
    format_lines,
    lines_to_dicts,
    load_posterior,
    profile_rollout,
    run_benchmarks,
)
from orderpolicy.evaluation.report import provenance
from orderpolicy.evaluation.rollout import build_source
from orderpolicy.mdm.loading import ADAPTER_NAMES, load_adapter
from orderpolicy.posterior.io import default_policy_path
from orderpolicy.tasks import load_problems

def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(",") if item.strip())


def parse_args(argv=None) -> argparse.Namespace:
    defaults = BenchSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or hub name (default: the shipped MDM)")
    parser.add_argument("--adapter", choices=ADAPTER_NAMES, default="auto", help="MDM adapter")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--policy", metavar="PATH|default|fresh",
                        help="posterior to time: a policy file, 'default' (the shipped one) or 'fresh' (random "
                             "initialisation); by default the shipped one when it exists, else a fresh one")

    # Sizes and repeats of the speed measurements.
    parser.add_argument("--batch-sizes", type=int_list, default=defaults.batch_sizes,
                        help="S1 batch sizes, comma list")
    parser.add_argument("--env-batch", type=int, default=defaults.env_batch, help="S2 batch size")
    parser.add_argument("--throughput-batches", type=int_list, default=defaults.throughput_batches,
                        help="S3 small and large batch size, for example 1,64")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="step budget of the confidence rule")
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="timed runs per measurement")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed runs before each measurement")
    parser.add_argument("--train-iterations", type=int, default=defaults.train_iterations,
                        help="timed training steps (after one untimed step)")
    parser.add_argument("--train-prompts", type=int, default=defaults.train_prompts, help="prompts per training step")
    parser.add_argument("--train-samples", type=int, default=defaults.train_samples, help="samples per prompt")

    # Gradient variance of the two estimators.
    parser.add_argument("--grad-variance", action="store_true", help="measure RLOO and RB-RLOO gradient variance")
    parser.add_argument("--grad-repeats", type=int, default=defaults.grad_repeats, help="gradients per estimator")
    parser.add_argument("--grad-prompts", type=int, default=defaults.grad_prompts, help="prompts in the fixed batch")
    parser.add_argument("--grad-samples", type=int, default=defaults.grad_samples, help="samples per prompt (K)")
    parser.add_argument("--rho", type=float, default=defaults.rho, help="prior unmask probability in the ELBO")
    parser.add_argument("--step-price", type=float, default=defaults.step_price, help="price per step, in nats")
    parser.add_argument("--kl-weight", type=float, default=defaults.kl_weight,
                        help="weight of log p(z) - log q(z); 1 is the ELBO")

    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of problems, policy and gradients")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of one rollout")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text lines")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> BenchSettings:
    if len(args.throughput_batches) != 2:
        sys.exit(f"error: --throughput-batches takes two sizes, small and large, got {args.throughput_batches}")
    fields = set(BenchSettings.__dataclass_fields__)
    return BenchSettings(**{key: value for key, value in vars(args).items() if key in fields})


def resolve_policy(choice: str | None) -> str | None:
    """Map --policy to a policy path, or None for a freshly initialised posterior."""
    if choice == "fresh":
        return None
    if choice is None:
        return "default" if default_policy_path().is_file() else None
    return choice


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from(args)
    except ValueError as error:
        sys.exit(f"error: {error}")

    # Model, its lengths and a fixed set of gsm-synth problems.
    train_config = read_train_config(args.model)
    if train_config is None or "prompt_length" not in train_config:
        sys.exit("error: the model folder has no orderpolicy_train_config.yaml with prompt and response lengths; "
                 "benchmark a built-in MDM")
    prompt_length, response_length = train_config["prompt_length"], train_config["response_length"]
    adapter = load_adapter(args.model, adapter=args.adapter, device=args.device)
    count = max(*settings.batch_sizes, settings.env_batch, *settings.throughput_batches, settings.grad_prompts)
    problems = load_problems("gsm-synth", num_problems=count, seed=settings.seed,
                             synth_config=synth_config_from(train_config))
    source = build_source(problems, adapter.tokenizer, prompt_length=prompt_length, response_length=response_length,
                          pad_id=adapter.pad_token_id, eos_id=adapter.eos_token_id)
    net, policy_name = load_posterior(resolve_policy(args.policy), adapter, settings.seed)

    # Optional profile of one rollout, then every benchmark.
    profile = profile_rollout(adapter, source, settings, prompt_length, response_length) if args.profile else None
    lines = run_benchmarks(adapter, source, net, settings, prompt_length=prompt_length,
                           response_length=response_length, model=args.model, adapter_name=args.adapter)

    # Report.
    info = provenance(args.model, "gsm-synth", settings.seed, adapter.device)
    if args.json:
        print(json.dumps({**info, "policy": policy_name, "settings": asdict(settings),
                          "results": lines_to_dicts(lines), "profile": profile}, indent=2))
        return
    print(f"model {info['model']}, policy {policy_name}, orderpolicy {info['version']}, machine {info['machine']}")
    if profile is not None:
        print(profile)
    print(format_lines(lines))


if __name__ == "__main__":
    main()
