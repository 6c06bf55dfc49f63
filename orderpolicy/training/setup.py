"""Build what a policy run needs from its config: the MDM adapter, lengths, problems and sources."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from orderpolicy.batching import encode_prompts
from orderpolicy.config import from_dict
from orderpolicy.decoding.rules import HeuristicRule
from orderpolicy.decoding.sampler import decode
from orderpolicy.tasks.prompts import build_prompts
from orderpolicy.tasks.reward import decode_responses
from orderpolicy.mdm.interface import MDMAdapter
from orderpolicy.mdm.loading import load_adapter
from orderpolicy.problem_source import ProblemSource
from orderpolicy.tasks import load_problems
from orderpolicy.tasks.base import Problem
from orderpolicy.tasks.gsm_synth import GsmSynthConfig

log = logging.getLogger(__name__)

MODEL_TRAIN_CONFIG = "orderpolicy_train_config.yaml"
TARGET_KINDS = ("reference", "generated")


@dataclass
class ModelDefaults:
    """Lengths and task settings a built-in MDM was trained with."""

    prompt_length: int | None = None
    response_length: int | None = None
    task: GsmSynthConfig | None = None


def model_defaults(adapter: MDMAdapter, model: str | None) -> ModelDefaults:
    """Read the training config saved beside a built-in MDM, if there is one."""
    from orderpolicy.mdm.builtin import default_mdm_path

    folder = default_mdm_path() if model is None else Path(model)
    path = folder / MODEL_TRAIN_CONFIG
    if not path.is_file():
        return ModelDefaults()
    saved = yaml.safe_load(path.read_text())
    task = from_dict(GsmSynthConfig, saved.get("task"), where="task.")
    return ModelDefaults(saved.get("prompt_length"), saved.get("response_length"), task)


def resolve_lengths(defaults: ModelDefaults, prompt_length: int | None, response_length: int | None) -> tuple[int, int]:
    """Pick explicit lengths, else the model's own; raise when neither is known."""
    prompt_length = prompt_length or defaults.prompt_length
    response_length = response_length or defaults.response_length
    if prompt_length is None or response_length is None:
        raise ValueError(
            "prompt_length and response_length are unknown for this model; set them in the config "
            "or pass --prompt-length/--response-length"
        )
    return prompt_length, response_length


@dataclass
class RunSetup:
    """The frozen MDM and the data of one process."""

    adapter: MDMAdapter
    prompt_length: int
    response_length: int
    synth_config: GsmSynthConfig | None
    train_source: ProblemSource
    eval_problems: list[Problem]
    local_prompts: int  # prompts per iteration on this process


def build_setup(config, rank: int = 0, world_size: int = 1) -> RunSetup:
    """Load the model and the problems for a :class:`PolicyRunConfig`."""
    if config.targets not in TARGET_KINDS:
        raise ValueError(f"targets must be one of {TARGET_KINDS}, got {config.targets!r}")
    adapter = load_adapter(config.model, config.adapter, device=config.device, dtype=config.dtype)
    defaults = model_defaults(adapter, config.model)
    prompt_length, response_length = resolve_lengths(defaults, config.prompt_length, config.response_length)
    train = config.train
    if train.prompts_per_batch % world_size:
        raise ValueError(
            f"train.prompts_per_batch={train.prompts_per_batch} must be divisible by the number of processes "
            f"({world_size})"
        )
    synth = defaults.task or GsmSynthConfig()
    problems = load_problems(
        config.task, split="train", num_problems=config.train_problems, seed=config.seed, data=config.data, synth_config=synth
    )
    eval_problems = load_problems(
        config.task, split="test", num_problems=train.eval_problems, seed=config.seed, data=None, synth_config=synth
    ) if config.task == "gsm-synth" else problems[-train.eval_problems :]
    if config.task != "gsm-synth":
        problems = problems[: len(problems) - train.eval_problems]
    problems = format_prompts(problems, config, adapter)
    eval_problems = format_prompts(eval_problems, config, adapter)
    if config.targets == "generated":
        problems = generate_targets(problems, adapter, prompt_length, response_length, config.target_steps)
    source = ProblemSource(
        problems,
        adapter.tokenizer,
        prompt_length=prompt_length,
        response_length=response_length,
        pad_id=adapter.pad_token_id,
        eos_id=adapter.eos_token_id,
        samples_per_prompt=train.samples_per_prompt,
        truncate_prompts=config.task != "gsm-synth",
        rank=rank,
        world_size=world_size,
    )
    return RunSetup(
        adapter=adapter,
        prompt_length=prompt_length,
        response_length=response_length,
        synth_config=synth,
        train_source=source,
        eval_problems=eval_problems,
        local_prompts=train.prompts_per_batch // world_size,
    )


def format_prompts(problems: list[Problem], config, adapter: MDMAdapter) -> list[Problem]:
    """Rewrite each question into the configured prompt format (plain keeps it as it is)."""
    if config.prompt_format == "plain":
        return problems
    prompts = build_prompts(
        problems, format=config.prompt_format, tokenizer=adapter.tokenizer, shots=config.shots,
        shot_pool=problems, seed=config.seed,
    )
    return [Problem(question=prompt, answer=p.answer, target=p.target) for prompt, p in zip(prompts, problems)]


def generate_targets(
    problems: list[Problem], adapter: MDMAdapter, prompt_length: int, response_length: int, steps: int | None,
    batch_size: int = 32,
) -> list[Problem]:
    """Replace reference answers by the MDM's own confidence-rule decodes.

    Self-generated targets keep the ELBO on text the model itself would write,
    so the posterior learns orders for the model's distribution rather than for
    reference text it may find unlikely; the cost is one decoding pass over the
    training questions, and wrong answers become targets too.
    """
    rule = HeuristicRule("confidence", response_length, steps=steps or response_length)
    out = []
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        ids, mask = encode_prompts(
            adapter.tokenizer, [p.question for p in chunk], prompt_length, pad_id=adapter.pad_token_id, truncate=True
        )
        result = decode(adapter, ids.to(adapter.device), mask.to(adapter.device), response_length, rule)
        texts = decode_responses(adapter.tokenizer, result.response.cpu())
        out.extend(Problem(question=p.question, answer=text, target=p.target) for p, text in zip(chunk, texts))
    log.info("generated %d training targets with %s", len(out), rule.label)
    return out
