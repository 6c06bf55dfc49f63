"""Policy training on the shipped MDM: learning, exact resume after SIGKILL, determinism, DDP.

The subprocess tests run the real ``scripts/train_policy.py`` with a tiny config.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from orderpolicy.checkpoint import load_checkpoint
from orderpolicy.config import from_dict
from orderpolicy.objectives.paper_path import elbo_surrogate_loss
from orderpolicy.training.distributed import DistributedContext
from orderpolicy.training.policy_trainer import PolicyRunConfig, PolicyTrainer
from orderpolicy.training.setup import build_setup

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("train/samples_per_second", "train/denoiser_share")

TINY = [
    "train_problems=16",
    "train.prompts_per_batch=2",
    "train.samples_per_prompt=2",
    "train.eval_problems=4",
    "train.eval_interval=1000",
    "train.log_interval=1",
    "train.checkpoint_interval=2",
    "policy.width=16",
    "calibration_problems=0",
]


def run_script(out: Path, iterations: int, *extra: str, resume: bool = False, torchrun: int = 0) -> subprocess.Popen:
    args = ["--out", str(out), "--wandb-mode", "disabled", "--set", f"train.iterations={iterations}"]
    for item in TINY + list(extra):
        args += ["--set", item]
    if resume:
        args.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if torchrun:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}",
                   "--master_port=29533", str(REPO / "scripts/train_policy.py")] + args
    else:
        command = [sys.executable, str(REPO / "scripts/train_policy.py")] + args
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def history_without_timing(path: Path) -> list[dict]:
    history = load_checkpoint(path)["history"]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    finish(run_script(tmp_path / "full", 8))

    process = run_script(tmp_path / "killed", 8)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 300
    while time.time() < deadline:
        if checkpoint.is_file() and load_checkpoint(checkpoint)["iteration"] >= 4:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    killed_at = load_checkpoint(checkpoint)["iteration"]
    assert 4 <= killed_at < 8

    finish(run_script(tmp_path / "killed", 8, resume=True))
    resumed = load_checkpoint(checkpoint)
    full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    assert resumed["iteration"] == 8
    assert history_without_timing(checkpoint) == history_without_timing(tmp_path / "full" / "checkpoint.pt")
    for name, value in full["net"].items():
        assert torch.equal(value, resumed["net"][name]), name


def test_same_seed_same_training_curve(tmp_path):
    first = run_script(tmp_path / "a", 3)
    finish(first)
    finish(run_script(tmp_path / "b", 3))
    assert history_without_timing(tmp_path / "a" / "checkpoint.pt") == history_without_timing(tmp_path / "b" / "checkpoint.pt")


def test_two_process_ddp_matches_single_process(tmp_path):
    finish(run_script(tmp_path / "single", 3))
    output = finish(run_script(tmp_path / "ddp", 3, torchrun=2))
    assert "final:" in output
    single = load_checkpoint(tmp_path / "single" / "checkpoint.pt")
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    for name, value in single["net"].items():
        assert torch.allclose(value, ddp["net"][name], atol=1e-5), name
    for row_single, row_ddp in zip(single["history"], ddp["history"]):
        assert row_single["train/mean_steps"] == pytest.approx(row_ddp["train/mean_steps"])
        assert row_single["train/elbo"] == pytest.approx(row_ddp["train/elbo"], abs=1e-3)
    assert not (tmp_path / "ddp" / "policy.pt.tmp").exists()


def test_training_moves_policy_not_mdm_and_raises_objective(tmp_path):
    overrides = {
        "wandb_mode": "disabled",
        "train_problems": 4,
        "train": {
            "iterations": 60, "prompts_per_batch": 4, "samples_per_prompt": 4, "lr": 0.003,
            "lambda_init": 2.0, "lambda_lr": 0.0, "eval_interval": 1000, "eval_problems": 4, "checkpoint_interval": 1000,
            "log_interval": 1000,
        },
    }
    config = from_dict(PolicyRunConfig, overrides)
    setup = build_setup(config)
    trainer = PolicyTrainer(config, setup, tmp_path, DistributedContext())
    mdm_before = {k: v.clone() for k, v in setup.adapter.model.state_dict().items()}
    policy_before = {k: v.clone() for k, v in trainer.net.state_dict().items()}

    # The same four prompts every iteration, so early and late returns are comparable.
    returns = []
    for _ in range(config.train.iterations):
        metrics = trainer.train_step()
        returns.append(metrics["train/elbo"] - 2.0 * metrics["train/mean_steps"])
    before, after = sum(returns[:15]) / 15, sum(returns[-15:]) / 15

    assert any(not torch.equal(v, trainer.net.state_dict()[k]) for k, v in policy_before.items())
    for name, value in setup.adapter.model.state_dict().items():
        assert torch.equal(value, mdm_before[name]), name
    assert after > before
