"""Train the built-in masked diffusion model on gsm-synth.

    python scripts/train_mdm.py --config configs/mdm.yaml --out runs/mdm
    python scripts/train_mdm.py --out runs/mdm --resume          # continue after a stop
    python scripts/train_mdm.py --set steps=100 --set model.num_layers=2

The finished model is written to OUT/model as a transformers folder.
"""

from __future__ import annotations

import argparse
import sys
import logging

from orderpolicy.config import load_config, parse_override
from orderpolicy.mdm.training import MDMTrainConfig, train_mdm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/mdm.yaml", help="YAML file of MDMTrainConfig fields")
    parser.add_argument("--out", default="runs/mdm", help="run folder: config, checkpoint, model/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    # Resolve the config: file, then command-line overrides.
    overrides = dict(parse_override(item) for item in args.set)
    config = load_config(MDMTrainConfig, args.config, overrides)

    # Train; evaluation, checkpoints and export happen every eval_interval steps.
    final = train_mdm(config, args.out, resume=args.resume)
    print("final:", " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()))


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as error:  # bad config values, paths and inputs
        sys.exit(f"error: {error}")
