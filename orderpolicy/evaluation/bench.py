"""Speed benchmarks of decoding and training, reported as ratios beside the raw times.

- S1 policy overhead: one policy decision (the learned posterior, features
  included, and a heuristic for reference) over one denoiser forward without
  hidden states, per batch size.
- S2 environment overhead: a torchrl rollout over the plain reference loop, same
  rule, steps and batch, both without the task reward.
- S3 batching: response tokens per second at the largest batch over the smallest.
- Training throughput: rows (prompts x samples) per second of one PolicyTrainer step,
  and the share of the step spent in the rollout (denoiser calls and set sampling).
- Gradient variance (optional): total variance of the RLOO and Rao-Blackwellised
  RLOO gradients of a fixed posterior on a fixed batch, over repeated seeds.

Every time is the median of ``repeats`` runs after ``warmup`` runs, under
``torch.inference_mode`` except where gradients are taken. A benchmark is a
measurement, not a test: the goals are the targets each ratio is judged by.

Shapes: B batch, P prompt width, L response length.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from envs.decoding import MDMDecodingEnv
from orderpolicy.decoding.rules import HeuristicPolicy, HeuristicRule
from orderpolicy.decoding.sampler import decode
from orderpolicy.mdm.interface import MDMAdapter
from orderpolicy.posterior.network import PosteriorConfig, PosteriorNet
from orderpolicy.posterior.policy import OrderPolicy
from orderpolicy.problem_source import ProblemSource


@dataclass
class BenchSettings:
    """Sizes and repeat counts of one benchmark run."""

    batch_sizes: tuple[int, ...] = (1, 16, 64)  # S1 batch sizes
    env_batch: int = 16  # S2 batch size
    throughput_batches: tuple[int, int] = (1, 64)  # S3 small and large batch
    steps: int = 8  # step budget of the confidence rule in S2 and S3
    repeats: int = 7  # timed runs per measurement; the median is reported
    warmup: int = 2  # untimed runs before each measurement
    train_iterations: int = 3  # timed PolicyTrainer steps, after one untimed step
    train_prompts: int = 8  # prompts per training step
    train_samples: int = 4  # samples per prompt in training
    grad_variance: bool = False  # also measure the gradient variance of the two estimators
    grad_repeats: int = 16  # gradients per estimator, one seed each
    grad_prompts: int = 4  # prompts in the fixed batch
    grad_samples: int = 4  # samples per prompt (K of the leave-one-out baseline)
    rho: float = 0.5  # prior unmask probability in the ELBO
    step_price: float = 0.0  # lambda, price per step in nats
    kl_weight: float = 1.0  # weight of log p(z) - log q(z) in the return; 1 is the ELBO
    seed: int = 0

    def __post_init__(self) -> None:
        if self.grad_repeats < 2:
            raise ValueError(f"grad_repeats must be >= 2 to estimate a variance, got {self.grad_repeats}")
        if self.train_samples < 2 or self.grad_samples < 2:
            raise ValueError(
                f"train_samples={self.train_samples} and grad_samples={self.grad_samples} must be >= 2 "
                "for the leave-one-out baseline"
            )
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={self.repeats}, warmup={self.warmup}")


@dataclass
class BenchLine:
    """One measured result: raw median times, the ratio and its goal."""

    name: str
    times: dict[str, float]  # median seconds of each side of the ratio
    ratio: float | None
    goal: str | None = None  # such as "<= 0.03"; None where no target is set
    met: bool | None = None
    extra: dict = field(default_factory=dict)  # derived numbers (tokens/s, variances, ...)


def check_goal(ratio: float, goal: str) -> bool:
    """Evaluate ``ratio`` against a goal written as ``"<= x"``, ``">= x"`` or ``"< x"``."""
    operator, value = goal.split()
    checks = {"<=": ratio <= float(value), ">=": ratio >= float(value), "<": ratio < float(value)}
    return checks[operator]


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` runs and return the median in seconds."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize()
        started = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def load_posterior(path: str | None, adapter: MDMAdapter, seed: int = 0) -> tuple[PosteriorNet, str]:
    """Return the posterior network of a policy file, or a freshly initialised one when ``path`` is None."""
    if path is None:
        torch.manual_seed(seed)
        return PosteriorNet(PosteriorConfig(), adapter.hidden_size).to(adapter.device).eval(), "fresh"
    from orderpolicy.posterior import load_policy

    return load_policy(path, adapter).net.to(adapter.device), str(path)


def _env(adapter: MDMAdapter, source: ProblemSource, batch: int, prompt_length: int, response_length: int,
         return_hidden: bool = False) -> MDMDecodingEnv:
    return MDMDecodingEnv(adapter, source, batch_size=batch, prompt_length=prompt_length,
                          response_length=response_length, mode="sample", return_hidden=return_hidden)


def _reset_batch(source: ProblemSource, batch: int, device: torch.device):
    return source.batch(torch.arange(batch) % len(source)).to(device)  # problems repeat when B > n


def policy_overhead(adapter, source, net, settings: BenchSettings, prompt_length: int, response_length: int):
    """S1: time of one policy decision over one denoiser forward, per batch size."""
    lines = []
    rule = HeuristicRule("confidence", response_length, steps=settings.steps)
    deciders = {
        "learned-greedy": OrderPolicy(net, mode="greedy", seed=settings.seed),
        "learned-sample": OrderPolicy(net, mode="sample", seed=settings.seed),
        "heuristic-confidence": HeuristicPolicy(rule),
    }
    for batch in settings.batch_sizes:
        env = _env(adapter, source, batch, prompt_length, response_length, return_hidden=net.config.use_hidden)
        with torch.inference_mode():
            td = env.reset(_reset_batch(source, batch, adapter.device))
            denoise = median_seconds(lambda: adapter.denoise(td["tokens"], td["attention_mask"]),
                                     settings.repeats, settings.warmup, adapter.device)
            for name, decider in deciders.items():
                seconds = median_seconds(lambda: decider(td), settings.repeats, settings.warmup, adapter.device)
                ratio = seconds / denoise
                lines.append(BenchLine(f"S1 policy overhead {name} B={batch}",
                                       {"policy_s": seconds, "denoiser_s": denoise}, ratio, "<= 0.03",
                                       check_goal(ratio, "<= 0.03")))
    return lines


def _env_rollout(env: MDMDecodingEnv, policy, reset) -> None:
    env.set_seed(0)
    env.rollout(env.max_steps, policy, tensordict=env.reset(reset.clone()), auto_reset=False)


def env_overhead(adapter, source, settings: BenchSettings, prompt_length: int, response_length: int):
    """S2: environment rollout time over the plain reference loop, confidence rule, same batch and steps."""
    batch = settings.env_batch
    rule = HeuristicRule("confidence", response_length, steps=settings.steps)
    env = _env(adapter, source, batch, prompt_length, response_length)
    policy = HeuristicPolicy(rule)
    reset = _reset_batch(source, batch, adapter.device)
    with torch.inference_mode():
        env_s = median_seconds(lambda: _env_rollout(env, policy, reset), settings.repeats, settings.warmup,
                               adapter.device)
        plain_s = median_seconds(
            lambda: decode(adapter, reset["prompt_ids"], reset["prompt_mask"], response_length, rule),
            settings.repeats, settings.warmup, adapter.device,
        )
    ratio = env_s / plain_s
    return [BenchLine(f"S2 env overhead confidence@{settings.steps} B={batch}",
                      {"env_s": env_s, "plain_loop_s": plain_s}, ratio, "<= 1.05", check_goal(ratio, "<= 1.05"))]


def batching_gain(adapter, source, settings: BenchSettings, prompt_length: int, response_length: int):
    """S3: response tokens per second of an environment rollout at the large batch over the small one."""
    rule = HeuristicRule("confidence", response_length, steps=settings.steps)
    policy = HeuristicPolicy(rule)
    times, rates = {}, {}
    for batch in settings.throughput_batches:
        env = _env(adapter, source, batch, prompt_length, response_length)
        reset = _reset_batch(source, batch, adapter.device)
        with torch.inference_mode():
            seconds = median_seconds(lambda: _env_rollout(env, policy, reset), settings.repeats, settings.warmup,
                                     adapter.device)
        times[f"rollout_B{batch}_s"] = seconds
        rates[f"tokens_per_second_B{batch}"] = batch * response_length / seconds
    small, large = settings.throughput_batches
    ratio = rates[f"tokens_per_second_B{large}"] / rates[f"tokens_per_second_B{small}"]
    return [BenchLine(f"S3 batching tokens/s B={large} / B={small}", times, ratio, ">= 8", check_goal(ratio, ">= 8"),
                      rates)]


def training_throughput(model: str | None, adapter_name: str, device: str, settings: BenchSettings):
    """Rows per second of PolicyTrainer.train_step and its rollout share, on a small run without wandb."""
    from orderpolicy.training.distributed import DistributedContext
    from orderpolicy.training.policy_trainer import PolicyRunConfig, PolicyTrainer, TrainConfig
    from orderpolicy.training.setup import build_setup

    steps = settings.train_iterations + 1
    train = TrainConfig(iterations=steps, prompts_per_batch=settings.train_prompts,
                        samples_per_prompt=settings.train_samples, eval_problems=1)
    config = PolicyRunConfig(seed=settings.seed, model=model, adapter=adapter_name, device=device,
                             train_problems=settings.train_prompts * steps, train=train, wandb_mode="disabled")
    setup = build_setup(config)
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = PolicyTrainer(config, setup, out_dir, DistributedContext(device))
        metrics = [trainer.train_step() for _ in range(steps)][1:]  # the first step warms up
    rows = settings.train_prompts * settings.train_samples
    rate = statistics.median(m["train/samples_per_second"] for m in metrics)
    share = statistics.median(m["train/denoiser_share"] for m in metrics)
    return [BenchLine(f"train throughput {settings.train_prompts} prompts x {settings.train_samples} samples",
                      {"step_s": rows / rate}, None, None, None,
                      {"samples_per_second": rate, "rollout_share": share})]


def gradient_variance(adapter, source, net, settings: BenchSettings):
    """Total gradient variance (sum of per-parameter variances) of RLOO and RB-RLOO over repeated seeds."""
    from orderpolicy.objectives.paper_path import elbo_surrogate_loss

    batch = source.batch(torch.arange(settings.grad_prompts) % len(source)).to(adapter.device)
    params = [p for p in net.parameters() if p.requires_grad]
    totals, times = {}, {}
    for estimator in ("rloo", "rb_rloo"):
        grads, seconds = [], []
        for repeat in range(settings.grad_repeats):
            generator = torch.Generator(device=adapter.device).manual_seed(settings.seed + repeat)
            started = time.perf_counter()
            loss, _ = elbo_surrogate_loss(
                batch["prompt_ids"], batch["prompt_mask"], batch["reference"], adapter, net,
                settings.grad_samples, generator, rho=settings.rho, step_price=settings.step_price,
                estimator=estimator, kl_weight=settings.kl_weight,
            )
            flat = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, allow_unused=False)])  # (n_params,)
            seconds.append(time.perf_counter() - started)
            grads.append(flat)
        stacked = torch.stack(grads)  # (repeats, n_params)
        totals[estimator] = float(stacked.var(dim=0).sum())
        times[f"{estimator}_gradient_s"] = statistics.median(seconds)
    # The ratio is undefined (NaN) when the RLOO gradient does not vary at all over the seeds.
    ratio = totals["rb_rloo"] / totals["rloo"] if totals["rloo"] > 0 else math.nan
    return [BenchLine("gradient variance rb_rloo / rloo", times, ratio, "< 1",
                      None if math.isnan(ratio) else check_goal(ratio, "< 1"),
                      {f"total_variance_{name}": value for name, value in totals.items()})]


def run_benchmarks(adapter, source, net, settings: BenchSettings, *, prompt_length: int, response_length: int,
                   model: str | None = None, adapter_name: str = "auto") -> list[BenchLine]:
    """Run every benchmark in order and return their lines."""
    lines = policy_overhead(adapter, source, net, settings, prompt_length, response_length)
    lines += env_overhead(adapter, source, settings, prompt_length, response_length)
    lines += batching_gain(adapter, source, settings, prompt_length, response_length)
    lines += training_throughput(model, adapter_name, str(adapter.device), settings)
    if settings.grad_variance:
        lines += gradient_variance(adapter, source, net, settings)
    return lines


def profile_rollout(adapter, source, settings: BenchSettings, prompt_length: int, response_length: int,
                    rows: int = 20) -> str:
    """Profile one environment rollout (confidence rule, S2 batch) and return torch.profiler's top operators."""
    from torch.profiler import ProfilerActivity, profile

    env = _env(adapter, source, settings.env_batch, prompt_length, response_length)
    policy = HeuristicPolicy(HeuristicRule("confidence", response_length, steps=settings.steps))
    reset = _reset_batch(source, settings.env_batch, adapter.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if adapter.device.type == "cuda" else [])
    with torch.inference_mode():
        _env_rollout(env, policy, reset)  # warm-up
        with profile(activities=activities) as profiler:
            _env_rollout(env, policy, reset)
    sort_by = "self_cuda_time_total" if adapter.device.type == "cuda" else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=sort_by, row_limit=rows)


def lines_to_dicts(lines: list[BenchLine]) -> list[dict]:
    return [asdict(line) for line in lines]


def format_lines(lines: list[BenchLine]) -> str:
    """Render lines as plain text: name, ratio, goal, met, then the raw times and derived numbers."""
    out = []
    for line in lines:
        ratio = "-" if line.ratio is None else f"{line.ratio:.4g}"
        goal = "-" if line.goal is None else line.goal
        met = "-"
        if line.met is not None:
            met = "met" if line.met else "NOT met"
        raw = ", ".join(f"{key} {value:.4g}" for key, value in {**line.times, **line.extra}.items())
        out.append(f"{line.name:<48} ratio {ratio:>9}  goal {goal:<7} {met:<8} | {raw}")
    return "\n".join(out)
