"""Train the order posterior for an MDM by maximising the order ELBO.

    python scripts/train_policy.py                                   # shipped MDM, gsm-synth, ~15 CPU-minutes
    python scripts/train_policy.py --out runs/policy --resume        # continue after a stop
    python scripts/train_policy.py --set train.target_mean_steps=8 --set train.iterations=300
    torchrun --nproc_per_node 2 scripts/train_policy.py --out runs/ddp  # data parallel

Writes OUT/config.yaml (resolved), OUT/checkpoint.pt (resumable) and OUT/policy.pt
(the small policy file that rollout.py --policy takes).
"""

from __future__ import annotations

import argparse
import sys
import logging
from pathlib import Path

from orderpolicy.config import load_config, parse_override, save_config, to_dict
from orderpolicy.evaluation.calibrate import calibrate_greedy_threshold
from orderpolicy.training.distributed import DistributedContext
from orderpolicy.training.evaluate_policy import make_evaluator
from orderpolicy.training.logger import MetricLogger
from orderpolicy.training.policy_trainer import PolicyRunConfig, PolicyTrainer
from orderpolicy.training.setup import build_setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/policy.yaml", help="YAML file of PolicyRunConfig fields")
    parser.add_argument("--out", default="runs/policy", help="run folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--device", default=None, help="cpu or cuda (overrides the config)")
    parser.add_argument("--wandb-mode", default=None, choices=["offline", "online", "disabled"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    # Resolve the config and save it beside the run.
    overrides = dict(parse_override(item) for item in args.set)
    if args.device:
        overrides["device"] = args.device
    if args.wandb_mode:
        overrides["wandb_mode"] = args.wandb_mode
    config = load_config(PolicyRunConfig, args.config, overrides)
    out = Path(args.out)
    dist = DistributedContext(config.device)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")

    # Load the frozen MDM and this process's share of the problems.
    setup = build_setup(config, rank=dist.rank, world_size=dist.world_size)
    trainer = PolicyTrainer(config, setup, out, dist)
    if args.resume and not trainer.resume():
        logging.info("no checkpoint in %s; starting from scratch", out)

    # Train: rollout, ELBO surrogate, update, dual ascent, log, evaluate, checkpoint.
    logger = MetricLogger(config.wandb_mode, config.wandb_project, out, to_dict(config), enabled=dist.is_main)
    evaluate = make_evaluator(setup, config, enabled=dist.is_main)
    final = trainer.fit(evaluate, logger)
    logger.close()

    # Calibrate the greedy threshold on training problems so greedy decoding meets the step target.
    if dist.is_main and config.calibration_problems > 0:
        problems = setup.train_source.problems[-config.calibration_problems :]
        threshold, steps = calibrate_greedy_threshold(
            setup.adapter, trainer.net, problems, config.train.target_mean_steps,
            prompt_length=setup.prompt_length, response_length=setup.response_length,
        )
        trainer.greedy_threshold = threshold
        trainer.save()
        print(f"greedy threshold {threshold:g}: {steps:.2f} mean steps on {len(problems)} training problems")
    if dist.is_main:
        print("final:", logger.console_line(trainer.iteration, final))
    dist.barrier()  # every process waits for rank 0's calibration before the group is torn down
    dist.close()


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as error:  # bad config values, paths and inputs
        sys.exit(f"error: {error}")
