"""Metric logging: wandb (offline by default) plus one console line per interval."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

WANDB_MODES = ("offline", "online", "disabled")


class MetricLogger:
    """Send namespaced metrics (``train/...``, ``eval/...``) to wandb from the main process only."""

    def __init__(self, mode: str, project: str, run_dir: str | Path, config: dict, enabled: bool = True) -> None:
        if mode not in WANDB_MODES:
            raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {mode!r}")
        self.run = None
        if enabled and mode != "disabled":
            import wandb

            self.run = wandb.init(project=project, mode=mode, dir=str(run_dir), config=config, reinit="finish_previous")

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    @staticmethod
    def console_line(step: int, metrics: dict) -> str:
        """Format one line: iteration, then each metric without its namespace."""
        parts = [f"it {step:5d}"]
        for key, value in metrics.items():
            name = key.split("/", 1)[-1]
            parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
        return " | ".join(parts)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
