"""Data-parallel training with torch.distributed, or a single process when not launched by torchrun.

Under ``torchrun --nproc_per_node N`` every process holds the frozen MDM and a
replica of the posterior wrapped in DistributedDataParallel; each takes its
share of the global batch of prompts, gradients and metrics are averaged, and
only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


class DistributedContext:
    """Rank, world size and the collective operations training needs."""

    def __init__(self, device: str = "cpu") -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend=backend)
        if self.enabled and device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """Wrap the trainable module in DDP when more than one process runs."""
        if not self.enabled:
            return module
        return DistributedDataParallel(module)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average a tensor over all processes."""
        if not self.enabled:
            return values
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values / self.world_size

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
