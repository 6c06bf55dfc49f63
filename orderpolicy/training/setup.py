"""Build what a policy run needs from its config: the MDM adapter, lengths, problems and sources."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from orderpolicy.config import from_dict
from orderpolicy.mdm.interface import MDMAdapter
from orderpolicy.mdm.loading import load_adapter
from orderpolicy.problem_source import ProblemSource
from orderpolicy.tasks import load_problems
from orderpolicy.tasks.base import Problem
from orderpolicy.tasks.gsm_synth import GsmSynthConfig

log = logging.getLogger(__name__)

MODEL_TRAIN_CONFIG = "orderpolicy_train_config.yaml"


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
    adapter = load_adapter(config.model, config.adapter, device=config.device)
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
    ) if config.task == "gsm-synth" else problems[: train.eval_problems]
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
