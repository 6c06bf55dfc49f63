"""Evaluate unmasking rules and learned policies on task problems, batch by batch.

Each batch is one torchrl rollout of :class:`~envs.decoding.MDMDecodingEnv` in
sample mode, scored by the task reward. The plain reference sampler
(:func:`~orderpolicy.decoding.sampler.decode`) can stand in for the environment
when the policy is a :class:`HeuristicRule`, so both paths can be compared.

Shapes: n problems, B batch, P prompt width, L response length.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tensordict.nn import TensorDictModuleBase
from tqdm.auto import tqdm

from envs.decoding import MDMDecodingEnv
from orderpolicy.decoding.rules import HeuristicPolicy, HeuristicRule
from orderpolicy.decoding.sampler import decode
from orderpolicy.config import from_dict
from orderpolicy.decoding.strategies import STRATEGIES, get_strategy
from orderpolicy.mdm.builtin import default_mdm_path
from orderpolicy.mdm.interface import MDMAdapter
from orderpolicy.problem_source import ProblemSource
from orderpolicy.tasks.base import Problem
from orderpolicy.tasks.gsm_synth import GsmSynthConfig
from orderpolicy.tasks.reward import decode_responses, make_task_reward
from orderpolicy.tasks.scoring import consistency

log = logging.getLogger(__name__)

TRAIN_CONFIG_FILE = "orderpolicy_train_config.yaml"  # written beside a built-in MDM by its training run
TABLE_COLUMNS = (  # header, summary key, format
    ("strategy", "label", "{}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("consistency", "consistency", "{:.3f}"),
    ("mean steps", "mean_steps", "{:.2f}"),
    ("max steps", "max_steps", "{}"),
    ("NFE", "mean_nfe", "{:.2f}"),
    ("tokens/s", "tokens_per_second", "{:.0f}"),
)


@dataclass
class RolloutResult:
    """Per-problem outcomes of one rule or policy, in problem order."""

    label: str  # name of the rule or policy, such as ``confidence@4``
    texts: list[str]  # decoded responses, cut at the first EOS
    response: torch.Tensor  # (n, L) response token ids
    unmask_step: torch.Tensor  # (n, L) step at which each position was unmasked
    steps: torch.Tensor  # (n,) decoding steps per problem
    nfe: torch.Tensor  # (n,) denoiser calls per problem
    correct: torch.Tensor  # (n,) 1.0 when the strict answer equals the target
    consistency: torch.Tensor  # (n,) consistency score in [0, 1]
    seconds: float  # wall time of the decoding, without setup and scoring

    def summary(self) -> dict:
        """Aggregate the per-problem outcomes into the numbers of one table row."""
        count, length = self.response.shape
        return {
            "label": self.label,
            "problems": count,
            "accuracy": self.correct.mean().item(),
            "consistency": self.consistency.mean().item(),
            "mean_steps": self.steps.float().mean().item(),
            "max_steps": int(self.steps.max()),
            "mean_nfe": self.nfe.float().mean().item(),
            "tokens_per_second": count * length / max(self.seconds, 1e-9),
            "seconds": self.seconds,
        }


def build_source(
    problems: Sequence[Problem],
    tokenizer,
    *,
    prompt_length: int,
    response_length: int,
    pad_id: int,
    eos_id: int,
    truncate_prompts: bool = False,
) -> ProblemSource:
    """Encode problems for the environment, logging every prompt or reference that gets cut.

    A prompt longer than ``prompt_length`` raises unless ``truncate_prompts`` is
    set, and then keeps its last ``prompt_length`` tokens. References longer
    than ``response_length`` keep their first tokens; only teacher mode reads them.
    """
    questions = tokenizer([p.question for p in problems], add_special_tokens=False)["input_ids"]
    answers = tokenizer([p.answer for p in problems], add_special_tokens=False)["input_ids"]
    long_prompts = [i for i, ids in enumerate(questions) if len(ids) > prompt_length]
    if long_prompts and not truncate_prompts:
        longest = max(len(questions[i]) for i in long_prompts)
        raise ValueError(
            f"{len(long_prompts)} prompt(s) exceed prompt_length={prompt_length} tokens (longest {longest}, "
            f"first at problem {long_prompts[0]}); raise the prompt length or enable prompt truncation"
        )
    if long_prompts:
        log.warning(
            "truncated %d of %d prompt(s) to their last %d tokens", len(long_prompts), len(problems), prompt_length
        )
    unknown = [sum(token == tokenizer.unk_token_id for token in ids) for ids in questions]
    if sum(unknown):
        log.warning("%d of %d prompt(s) contain words the tokenizer lacks (%d [UNK] tokens in all)",
                    sum(count > 0 for count in unknown), len(problems), sum(unknown))
    long_answers = sum(len(ids) > response_length for ids in answers)
    if long_answers:
        log.info("%d reference answer(s) exceed %d tokens and were cut (used only in teacher mode)",
                 long_answers, response_length)
    return ProblemSource(
        problems,
        tokenizer,
        prompt_length=prompt_length,
        response_length=response_length,
        pad_id=pad_id,
        eos_id=eos_id,
        truncate_prompts=truncate_prompts,
    )


def policy_label(policy_or_rule) -> str:
    """Name a rule or policy for tables: its ``label`` attribute, else its class name."""
    return str(getattr(policy_or_rule, "label", type(policy_or_rule).__name__))


def _seed_policy(policy_or_rule, seed: int) -> None:
    rule = policy_or_rule.rule if isinstance(policy_or_rule, HeuristicPolicy) else policy_or_rule
    if hasattr(rule, "set_seed"):
        rule.set_seed(seed)


def _as_policy(policy_or_rule, use_env: bool):
    """Wrap a rule as a tensordict policy; reject policies the plain sampler cannot run."""
    if isinstance(policy_or_rule, HeuristicRule):
        return HeuristicPolicy(policy_or_rule)
    if not use_env:
        raise TypeError(
            f"the plain sampler (use_env=False) takes a HeuristicRule, got {type(policy_or_rule).__name__}; "
            "decode learned policies with use_env=True"
        )
    return policy_or_rule


def _check_source(source: ProblemSource) -> None:
    if source.samples_per_prompt != 1:
        raise ValueError(
            f"evaluation decodes each problem once, got a ProblemSource with samples_per_prompt="
            f"{source.samples_per_prompt}; pass the problem list instead"
        )


def _rollout_env(env: MDMDecodingEnv, policy, reset, seed: int) -> dict:
    """Decode one batch with a torchrl rollout; return the final state's per-row outcomes."""
    env.set_seed(seed)
    _seed_policy(policy, seed)
    td = env.rollout(env.max_steps, policy, tensordict=env.reset(reset.clone()), auto_reset=False)  # (B, T)
    last = td[:, -1]["next"]
    return {
        "response": last["tokens"][:, env.P :],  # (B, L)
        "unmask_step": last["unmask_step"],  # (B, L)
        "steps": last["step"].squeeze(-1),  # (B,)
        "nfe": last["nfe"].squeeze(-1),  # (B,)
        "correct": td["next", "reward_task"].sum(dim=1).squeeze(-1),  # (B,)
    }


def _decode_plain(adapter, rule: HeuristicRule, reset, reward, settings: dict, seed: int) -> dict:
    """Decode one batch with the plain reference sampler."""
    out = decode(adapter, reset["prompt_ids"], reset["prompt_mask"], rule=rule, seed=seed, **settings)
    return {
        "response": out.response,
        "unmask_step": out.unmask_step,
        "steps": out.steps,
        "nfe": out.nfe,
        "correct": reward(out.response, reset["target"]),
    }


def evaluate_rule(
    adapter: MDMAdapter,
    problems: Sequence[Problem] | ProblemSource,
    policy_or_rule: HeuristicRule | TensorDictModuleBase,
    *,
    batch_size: int,
    prompt_length: int,
    response_length: int,
    block_length: int | None = None,
    max_steps: int | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    use_env: bool = True,
    progress: bool = True,
    truncate_prompts: bool = False,
) -> RolloutResult:
    """Decode every problem with a heuristic rule or a tensordict policy and score the responses.

    ``policy_or_rule`` is a :class:`HeuristicRule` or any tensordict module that
    writes ``action``. Batch ``i`` is seeded with ``seed + i`` (token draws and the
    rule's or policy's own generator), so results do not depend on what ran before.
    The last batch may be smaller, and gets its own environment because the
    environment has a fixed batch size. ``use_env=False`` decodes with the plain
    sampler, which takes only a :class:`HeuristicRule`.

    >>> result = evaluate_rule(adapter, problems, HeuristicRule("confidence", 72, steps=4),
    ...                        batch_size=64, prompt_length=80, response_length=72)  # doctest: +SKIP
    >>> result.summary()["accuracy"]                                                  # doctest: +SKIP
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    policy = _as_policy(policy_or_rule, use_env)
    if isinstance(problems, ProblemSource):
        _check_source(problems)
        source = problems
    else:
        source = build_source(
            problems, adapter.tokenizer, prompt_length=prompt_length, response_length=response_length,
            pad_id=adapter.pad_token_id, eos_id=adapter.eos_token_id, truncate_prompts=truncate_prompts,
        )
    special = dict(eos_id=adapter.eos_token_id, skip_ids=(adapter.pad_token_id, adapter.mask_token_id))
    reward = make_task_reward(adapter.tokenizer, mode="strict", **special)
    settings = dict(max_steps=max_steps, block_length=block_length, temperature=temperature)
    # The environment returns "hidden" only for policies that read it (a ``needs_hidden`` flag or the key
    # in ``in_keys``), because the rollout stores B * L * H floats for every step.
    wants_hidden = bool(getattr(policy, "needs_hidden", False)) or "hidden" in getattr(policy, "in_keys", ())
    envs: dict[int, MDMDecodingEnv] = {}
    label = policy_label(policy_or_rule)
    outcomes: list[dict] = []
    seconds = 0.0
    bar = tqdm(total=len(source), desc=label, unit="problem", disable=not progress)
    with torch.inference_mode():
        for batch_index, start in enumerate(range(0, len(source), batch_size)):
            index = torch.arange(start, min(start + batch_size, len(source)))  # (B,)
            reset = source.batch(index).to(adapter.device)
            started = time.perf_counter()
            if use_env:
                size = len(index)
                if size not in envs:
                    envs[size] = MDMDecodingEnv(
                        adapter, source, batch_size=size, prompt_length=prompt_length,
                        response_length=response_length, mode="sample", task_reward=reward,
                        return_hidden=wants_hidden, **settings,
                    )
                outcome = _rollout_env(envs[size], policy, reset, seed + batch_index)
            else:
                outcome = _decode_plain(adapter, policy_or_rule, reset, reward,
                                        dict(response_length=response_length, **settings), seed + batch_index)
            seconds += time.perf_counter() - started
            outcomes.append({key: value.cpu() for key, value in outcome.items()})
            bar.update(len(index))
            bar.set_postfix(accuracy=f"{torch.cat([o['correct'] for o in outcomes]).mean().item():.3f}")
    bar.close()
    return _collect(label, outcomes, adapter.tokenizer, seconds, special)


def _collect(label: str, outcomes: list[dict], tokenizer, seconds: float, special: dict) -> RolloutResult:
    """Join the per-batch outcomes and score each text's consistency."""
    joined = {key: torch.cat([o[key] for o in outcomes]) for key in outcomes[0]}
    texts = decode_responses(tokenizer, joined["response"], **special)
    scores = torch.tensor([consistency(text).score for text in texts], dtype=torch.float32)  # (n,)
    return RolloutResult(
        label=label,
        texts=texts,
        response=joined["response"],
        unmask_step=joined["unmask_step"],
        steps=joined["steps"],
        nfe=joined["nfe"],
        correct=joined["correct"].float(),
        consistency=scores,
        seconds=seconds,
    )


def parse_threshold_overrides(items: Sequence[str]) -> dict[str, float]:
    """Parse ``NAME=VALUE`` threshold overrides; NAME must be an adaptive strategy."""
    overrides: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"threshold override {item!r} must look like NAME=VALUE, for example threshold=0.8")
        if get_strategy(name).fixed_steps:
            adaptive = sorted(n for n, spec in STRATEGIES.items() if not spec.fixed_steps)
            raise ValueError(
                f"strategy {name!r} follows the step budget (--steps) and takes no threshold; "
                f"thresholds apply to {adaptive}"
            )
        try:
            overrides[name] = float(value)
        except ValueError:
            raise ValueError(f"threshold override {item!r} needs a number after '=', got {value!r}") from None
    return overrides


def parse_strategy_specs(
    text: str,
    response_length: int,
    steps: int,
    thresholds: Sequence[str] = (),
    *,
    block_length: int | None = None,
) -> list[HeuristicRule]:
    """Build the rules named by ``text``: one name, a comma list, ``all`` (every registered rule) or ``none``.

    Fixed-step rules use ``steps``. Adaptive rules use their ``NAME=VALUE``
    override from ``thresholds``, or their default threshold.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        names = list(STRATEGIES)
    elif names == ["none"]:
        names = []
    elif not names or "all" in names or "none" in names:
        raise ValueError(
            f"strategy list {text!r} is invalid; pass one name, a comma list of names, 'all' or 'none'"
        )
    for name in names:
        get_strategy(name)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"strategy list {text!r} names {duplicates} more than once; list each strategy once")
    overrides = parse_threshold_overrides(thresholds)
    unused = sorted(set(overrides) - set(names))
    if unused:
        raise ValueError(f"threshold given for {unused}, which the strategy list {text!r} does not include")
    return [
        HeuristicRule(name, response_length, steps=steps, threshold=overrides.get(name), block_length=block_length)
        for name in names
    ]


# Model settings and reports -------------------------------------------------------


def read_train_config(model: str | Path | None) -> dict | None:
    """Read the training config saved in a model folder (the shipped MDM when None), or None if absent."""
    folder = default_mdm_path() if model is None else Path(model).expanduser()
    path = folder / TRAIN_CONFIG_FILE
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must contain a mapping of training settings, got {type(data).__name__}")
    return data


def synth_config_from(train_config: dict | None) -> GsmSynthConfig:
    """Return the gsm-synth settings a model was trained on, or the defaults when unknown."""
    if train_config is None or "task" not in train_config:
        log.warning("the model folder has no %s task section; using default gsm-synth settings", TRAIN_CONFIG_FILE)
        return GsmSynthConfig()
    return from_dict(GsmSynthConfig, train_config["task"], where="task.")


def format_table(summaries: Sequence[dict]) -> str:
    """Render summaries as a plain-text table with one row per rule or policy."""
    rows = [[header for header, _, _ in TABLE_COLUMNS]]
    rows += [[fmt.format(summary[key]) for _, key, fmt in TABLE_COLUMNS] for summary in summaries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def annotate_unmask_steps(tokenizer, response_ids: torch.Tensor, unmask_step: torch.Tensor) -> str:
    """Write each response token as ``token[step]``, the step at which it was unmasked.

    ``response_ids`` and ``unmask_step`` are one row (L,). Tokens after the
    first EOS are summarised in one line. A newline token is written as ``\\n``
    and followed by a line break, so the text keeps its lines.
    """
    ids, steps = response_ids.tolist(), unmask_step.tolist()
    eos = tokenizer.eos_token_id
    end = ids.index(eos) + 1 if eos in ids else len(ids)
    parts = []
    for token, step in zip(ids[:end], steps[:end]):
        piece = tokenizer.decode([token], skip_special_tokens=False)
        if "\n" in piece:
            parts.append(piece.replace("\n", "\\n") + f"[{step}]\n")
        else:
            parts.append(f"{piece}[{step}]")
    text = "".join(parts)
    if end < len(ids):
        tail = steps[end:]
        text += f"\n(+ {len(ids) - end} positions after the first EOS, unmasked at steps {min(tail)}-{max(tail)})"
    return text
