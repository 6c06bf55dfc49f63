"""Train the order posterior q_phi by maximising the order ELBO in the decoding environment.

One iteration: draw B prompts, run a teacher-mode rollout of B x K rows with
sets sampled from q_phi (no gradient), rebuild log q with gradient from the
trajectory, take an Adam step on the RLOO (or Rao-Blackwellised) surrogate,
then move the step price lambda by dual ascent towards ``target_mean_steps``.
The MDM stays frozen throughout.

Shapes: R = B x K rows, T steps, L response length.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from envs.decoding import MDMDecodingEnv
from orderpolicy import __version__
from orderpolicy.checkpoint import atomic_torch_save, load_checkpoint
from orderpolicy.config import to_dict
from orderpolicy.objectives.elbo import ESTIMATORS, elbo_objective
from orderpolicy.posterior.io import save_policy
from orderpolicy.posterior.network import PosteriorConfig, PosteriorNet
from orderpolicy.posterior.policy import OrderPolicy
from orderpolicy.training.distributed import DistributedContext
from orderpolicy.training.logger import MetricLogger

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings of the order posterior."""

    iterations: int = 300  # optimiser steps
    prompts_per_batch: int = 8  # B, prompts per iteration (global, across all processes)
    samples_per_prompt: int = 4  # K, orders sampled per prompt for the leave-one-out baseline
    lr: float = 3e-3  # Adam learning rate
    grad_clip: float = 1.0  # max global gradient norm
    estimator: str = "rb_rloo"  # rloo | rb_rloo
    rho: float = 0.5  # prior: each masked position unmasked with probability rho, set non-empty
    kl_weight: float = 1.0  # weight of log p(z) - log q(z); 1 is the ELBO, below 1 a beta-ELBO
    target_mean_steps: float = 4.0  # dual ascent moves lambda until the posterior's mean steps match this
    lambda_init: float = 0.0  # initial price per step, in nats
    lambda_lr: float = 0.2  # dual ascent rate: lambda += lambda_lr * (mean steps - target)
    log_interval: int = 10  # iterations between console lines
    eval_interval: int = 100  # iterations between held-out evaluations
    checkpoint_interval: int = 50  # iterations between checkpoints
    eval_problems: int = 128  # held-out problems decoded in sample mode at each evaluation

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2 for the leave-one-out baseline, got {self.samples_per_prompt}")
        if not 0 < self.rho < 1:
            raise ValueError(f"rho must lie in (0, 1), got {self.rho}")
        if self.lambda_lr < 0:
            raise ValueError(f"lambda_lr must be >= 0, got {self.lambda_lr}")
        if self.target_mean_steps < 1:
            raise ValueError(f"target_mean_steps must be >= 1, got {self.target_mean_steps}")


@dataclass
class PolicyRunConfig:
    """Everything that defines a policy training run."""

    seed: int = 0  # seeds data order, sampling and initialisation
    model: str | None = None  # MDM folder or hub name; None is the shipped built-in model
    adapter: str = "auto"  # auto | builtin | hf-masked-lm | llada | dream
    device: str = "cpu"  # cpu | cuda
    task: str = "gsm-synth"  # gsm-synth | gsm8k
    data: str | None = None  # local JSONL for gsm8k training questions
    prompt_format: str = "plain"  # plain | fewshot | chat (chat for Instruct models)
    shots: int = 0  # solved train examples before each question (fewshot and chat formats)
    targets: str = "reference"  # reference | generated: ELBO targets are the data's answers or the MDM's own
    target_steps: int | None = None  # steps of the confidence rule that generates targets; None = one token per step
    block_length: int | None = None  # semi-autoregressive blocks in the training environment
    dtype: str | None = None  # model dtype: fp32 | bf16 | fp16; None = the adapter's default
    train_problems: int = 20000  # training problems (gsm-synth train split)
    prompt_length: int | None = None  # P; None reads it from the shipped model's training config
    response_length: int | None = None  # L; None reads it from the shipped model's training config
    policy: PosteriorConfig = field(default_factory=PosteriorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration_problems: int = 128  # training problems used to calibrate the greedy threshold; 0 skips it
    wandb_mode: str = "offline"  # offline | online | disabled
    wandb_project: str = "orderpolicy"  # wandb project name


class PolicyTrainer:
    """Holds the run state (network, optimiser, lambda, data position, generators) and steps it."""

    def __init__(self, config: PolicyRunConfig, setup, out_dir: str | Path, dist: DistributedContext) -> None:
        self.config = config
        self.setup = setup  # adapter, sources, lengths (see orderpolicy.training.setup)
        self.out_dir = Path(out_dir)
        self.dist = dist
        torch.manual_seed(config.seed)
        self.net = PosteriorNet(config.policy, setup.adapter.hidden_size).to(setup.adapter.device)
        self.model = dist.wrap(self.net)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.train.lr)
        rows = setup.local_prompts * config.train.samples_per_prompt
        # Every process uses the same seed and keeps its slice of the global draw.
        self.policy = OrderPolicy(self.net, mode="sample", seed=config.seed)
        self.policy.total_rows = rows * dist.world_size
        self.policy.row_offset = rows * dist.rank
        self.env = MDMDecodingEnv(
            setup.adapter,
            setup.train_source,
            batch_size=rows,
            prompt_length=setup.prompt_length,
            response_length=setup.response_length,
            mode="teacher",
            block_length=config.block_length,
            return_hidden=config.policy.use_hidden,
            seed=config.seed,
        )
        self.step_price = config.train.lambda_init
        self.greedy_threshold = 0.5  # set by calibration after training
        self.iteration = 0
        self.history: list[dict] = []

    # State --------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step_price": self.step_price,
            "iteration": self.iteration,
            "source": self.setup.train_source.state_dict(),
            "env_rng": self.env.rng.get_state(),
            "policy_rng": self.policy.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "config": to_dict(self.config),
            "version": __version__,
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_price = state["step_price"]
        self.iteration = state["iteration"]
        self.setup.train_source.load_state_dict(state["source"])
        self.env.rng.set_state(state["env_rng"])
        self.policy.generator.set_state(state["policy_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.history = state["history"]

    def save(self) -> None:
        """Write the resumable checkpoint and the small policy file (rank 0 only), atomically."""
        if not self.dist.is_main:
            return
        atomic_torch_save(self.state_dict(), self.out_dir / "checkpoint.pt")
        extra = {
            "train_config": to_dict(self.config),
            "iteration": self.iteration,
            "greedy_threshold": self.greedy_threshold,
            "version": __version__,
        }
        save_policy(self.out_dir / "policy.pt", self.net, self.setup.adapter, extra)

    def resume(self) -> bool:
        path = self.out_dir / "checkpoint.pt"
        if not path.is_file():
            return False
        self.load_state_dict(load_checkpoint(path))
        log.info("resumed from %s at iteration %d", path, self.iteration)
        return True

    # One iteration --------------------------------------------------------------

    def train_step(self) -> dict:
        """Roll out, compute the surrogate, update phi and lambda; return the metrics."""
        cfg = self.config.train
        started = time.perf_counter()

        # Rollout: teacher-forced orders sampled from q_phi, without gradient.
        self.net.eval()
        with torch.no_grad():
            trajectory = self.env.rollout(self.setup.response_length, self.policy, auto_reset=True)
        rollout_seconds = time.perf_counter() - started

        # Objective: rebuild log q with gradient and form the RLOO surrogate.
        self.net.train()
        out = elbo_objective(
            trajectory,
            self.model,
            samples_per_prompt=cfg.samples_per_prompt,
            rho=cfg.rho,
            step_price=self.step_price,
            estimator=cfg.estimator,
            kl_weight=cfg.kl_weight,
        )

        # Update phi; DDP averages gradients across processes.
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.optimizer.step()

        # Dual ascent on the step price, with the mean over all processes.
        stats = self.dist.mean(
            torch.stack([out.steps.float().mean(), out.elbo.float().mean(), out.likelihood.float().mean(), out.loss.detach().float()])
        )
        mean_steps, elbo, likelihood, loss = stats.tolist()
        self.step_price = max(0.0, self.step_price + cfg.lambda_lr * (mean_steps - cfg.target_mean_steps))
        self.iteration += 1
        seconds = time.perf_counter() - started
        rows = self.setup.local_prompts * cfg.samples_per_prompt * self.dist.world_size
        return {
            "train/elbo": elbo,
            "train/likelihood": likelihood,
            "train/loss": loss,
            "train/mean_steps": mean_steps,
            "train/lambda": self.step_price,
            "train/grad_norm": float(grad_norm),
            "train/samples_per_second": rows / seconds,
            "train/denoiser_share": rollout_seconds / seconds,
        }

    def fit(self, evaluate, logger: MetricLogger) -> dict:
        """Train until ``iterations``; ``evaluate(policy_net) -> dict`` runs on the held-out problems."""
        cfg = self.config.train
        bar = tqdm(
            range(self.iteration, cfg.iterations),
            initial=self.iteration,
            total=cfg.iterations,
            desc="train_policy",
            disable=not self.dist.is_main,
        )
        metrics: dict = {}
        for _ in bar:
            metrics = self.train_step()
            it = self.iteration
            if it % cfg.eval_interval == 0 or it == cfg.iterations:
                metrics.update(evaluate(self.net))
            self.history.append({"iteration": it, **metrics})
            logger.log(metrics, step=it)
            if it % cfg.log_interval == 0 and self.dist.is_main:
                tqdm.write(logger.console_line(it, metrics))
            bar.set_postfix(elbo=f"{metrics['train/elbo']:.1f}", steps=f"{metrics['train/mean_steps']:.2f}")
            if it % cfg.checkpoint_interval == 0 or it == cfg.iterations:
                self.save()
        return metrics
