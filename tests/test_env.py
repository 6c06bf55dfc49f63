"""MDMDecodingEnv on the shipped MDM: specs, action checks, counters, teacher mode and invariants.

Shapes: B batch, T rollout steps, P prompt width, L response length.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchrl.envs.utils import check_env_specs, step_mdp

from envs.decoding import InvalidActionError, MDMDecodingEnv
from orderpolicy.decoding.rules import HeuristicPolicy, HeuristicRule
from orderpolicy.evaluation import read_train_config, synth_config_from
from orderpolicy.mdm.loading import load_adapter
from orderpolicy.problem_source import ProblemSource
from orderpolicy.tasks import load_problems
from orderpolicy.tasks.reward import decode_responses, make_task_reward
from orderpolicy.tasks.scoring import extract_strict

B = 4
BLOCK = 24


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(None)


@pytest.fixture(scope="module")
def lengths():
    config = read_train_config(None)
    return config["prompt_length"], config["response_length"]


@pytest.fixture(scope="module")
def source(adapter, lengths):
    problems = load_problems("gsm-synth", num_problems=B, seed=1, synth_config=synth_config_from(read_train_config(None)))
    prompt_length, response_length = lengths
    return ProblemSource(
        problems, adapter.tokenizer, prompt_length=prompt_length, response_length=response_length,
        pad_id=adapter.pad_token_id, eos_id=adapter.eos_token_id,
    )


def make_env(adapter, source, lengths, **kwargs) -> MDMDecodingEnv:
    prompt_length, response_length = lengths
    return MDMDecodingEnv(adapter, source, batch_size=B, prompt_length=prompt_length,
                          response_length=response_length, **kwargs)


def run(env: MDMDecodingEnv, rule: HeuristicRule, source: ProblemSource, seed: int = 0, problems=None):
    """Roll out the source's first B problems (or ``problems``); return the (B, T) tensordict."""
    env.set_seed(seed)
    rule.set_seed(seed)
    reset = env.reset(source.batch(torch.arange(B)) if problems is None else problems)
    return env.rollout(env.max_steps, HeuristicPolicy(rule), tensordict=reset, auto_reset=False)


# Specs and invalid actions --------------------------------------------------------


def test_env_specs_pass_check(adapter, source, lengths):
    # check_env_specs sends random actions, which repair mode turns into valid ones.
    check_env_specs(make_env(adapter, source, lengths, invalid_action="repair", block_length=BLOCK))


def invalid_action(kind: str, state) -> torch.Tensor:
    """Build an action whose row 1 is invalid in ``kind`` and whose other rows are valid."""
    length = state["masked"].shape[1]
    if kind == "wrong shape":
        return torch.zeros(B, length - 1, dtype=torch.bool)
    action = torch.zeros(B, length, dtype=torch.bool)
    action[:, 1] = True  # still masked, inside the first block
    if kind == "already unmasked":
        action[1, 0] = True
    elif kind == "outside the current block":
        action[1, BLOCK + 6] = True
    elif kind == "both":
        action[1, 0] = True
        action[1, BLOCK + 6] = True
    elif kind == "selects nothing":
        action[1] = False
    return action


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("wrong shape", r"must have shape \(4, {length}\)"),
        ("already unmasked", "batch row 1 .*already unmasked"),
        ("outside the current block", "batch row 1 .*outside the current block"),
        ("both", rf"batch row 1 selects positions \[0\] that are already unmasked and positions \[{BLOCK + 6}\] "
                 "that are outside the current block"),
        ("selects nothing", "batch row 1 selects nothing"),
    ],
)
def test_invalid_action_raises(adapter, source, lengths, kind, message):
    env = make_env(adapter, source, lengths, block_length=BLOCK)
    first = env.reset(source.batch(torch.arange(B)))
    first["action"] = torch.zeros_like(first["masked"])
    first["action"][:, 0] = True
    state = step_mdp(env.step(first))
    assert not state["masked"][:, 0].any()
    state["action"] = invalid_action(kind, state)
    with pytest.raises(InvalidActionError, match=message.format(length=lengths[1])):
        env.step(state)


# Counters and modes ----------------------------------------------------------------------


def test_nfe_equals_steps_per_row(adapter, source, lengths):
    env = make_env(adapter, source, lengths)
    calls_before = adapter.nfe
    td = run(env, HeuristicRule("threshold", lengths[1], threshold=0.9), source)
    last = td[:, -1]["next"]
    assert torch.equal(last["nfe"], last["step"])
    assert torch.equal(last["step"].squeeze(-1), last["unmask_step"].max(dim=1).values + 1)
    # One batched denoiser call per state entered before the last row finished.
    assert adapter.nfe - calls_before == int(last["step"].max())


def test_teacher_mode_fills_reference(adapter, source, lengths):
    env = make_env(adapter, source, lengths, mode="teacher")
    td = run(env, HeuristicRule("confidence", lengths[1], steps=4), source)
    prompt_length = lengths[0]
    reference = source.batch(torch.arange(B))["reference"]
    assert torch.equal(td[:, -1]["next", "tokens"][:, prompt_length:], reference)


def test_teacher_reward_is_reference_logp(adapter, source, lengths):
    env = make_env(adapter, source, lengths, mode="teacher")
    td = run(env, HeuristicRule("margin", lengths[1], steps=4), source)
    prompt_length = lengths[0]
    reference = source.batch(torch.arange(B))["reference"]
    for t in range(td.shape[1]):
        state = td[:, t]
        with torch.no_grad():
            logits = adapter.denoise(state["tokens"], state["attention_mask"]).logits[:, prompt_length:]
        logp_ref = logits.log_softmax(-1).gather(-1, reference.unsqueeze(-1)).squeeze(-1)  # (B, L)
        torch.testing.assert_close(state["logp_ref"], logp_ref)
        taken = state["next", "action_taken"]
        expected = (logp_ref * taken).sum(dim=1, keepdim=True)  # (B, 1)
        torch.testing.assert_close(state["next", "reward_likelihood"], expected)
        torch.testing.assert_close(state["next", "reward"], expected)


def test_max_steps_forces_everything(adapter, source, lengths):
    env = make_env(adapter, source, lengths, max_steps=3)
    td = run(env, HeuristicRule("threshold", lengths[1], threshold=1.0), source)
    assert td.shape[1] == 3
    last = td[:, -1]
    assert torch.equal(last["next", "action_taken"], last["masked"])
    assert (last["next", "action_taken"].sum(dim=1) > last["action"].sum(dim=1)).all()
    assert not last["next", "masked"].any()
    assert (last["next", "step"] == 3).all()


def test_same_seed_same_tokens(adapter, source, lengths):
    env = make_env(adapter, source, lengths, temperature=1.0)
    rule = HeuristicRule("random", lengths[1], steps=8)
    first = run(env, rule, source, seed=5)[:, -1]["next", "tokens"]
    again = run(env, rule, source, seed=5)[:, -1]["next", "tokens"]
    other = run(env, rule, source, seed=6)[:, -1]["next", "tokens"]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


# Invariants over a rollout --------------------------------------------------------------------


def test_prompt_and_unmasked_tokens_never_change(adapter, source, lengths):
    env = make_env(adapter, source, lengths, temperature=0.7)
    td = run(env, HeuristicRule("eb", lengths[1], threshold=0.5), source)
    prompt_length = lengths[0]
    prompt = source.batch(torch.arange(B))["prompt_ids"]
    for t in range(td.shape[1]):
        state, after = td[:, t], td[:, t]["next"]
        already_unmasked = ~state["masked"]  # (B, L)
        taken = after["action_taken"]
        response_before = state["tokens"][:, prompt_length:]  # (B, L)
        response_after = after["tokens"][:, prompt_length:]  # (B, L)
        assert torch.equal(after["tokens"][:, :prompt_length], prompt)
        assert torch.equal(response_after[already_unmasked], response_before[already_unmasked])
        assert torch.equal(response_after[taken], state["draw"][taken])
        assert (response_after[after["masked"]] == adapter.mask_token_id).all()
        assert not (taken & already_unmasked).any()


def test_block_mode_stays_in_block(adapter, source, lengths):
    env = make_env(adapter, source, lengths, block_length=BLOCK)
    td = run(env, HeuristicRule("threshold", lengths[1], threshold=0.7), source)
    positions = torch.arange(lengths[1])
    for t in range(td.shape[1]):
        state = td[:, t]
        first_masked = torch.where(state["masked"], positions, lengths[1]).min(dim=1).values  # (B,)
        block = first_masked // BLOCK  # (B,)
        outside = (positions[None, :] // BLOCK) != block[:, None]  # (B, L)
        assert not (state["next", "action_taken"] & outside).any()
    unmask_step = td[:, -1]["next", "unmask_step"].view(B, -1, BLOCK)  # (B, blocks, BLOCK)
    assert (unmask_step[:, :-1].max(dim=2).values < unmask_step[:, 1:].min(dim=2).values).all()


def test_finished_rows_stay_idle(adapter, source, lengths):
    env = make_env(adapter, source, lengths, task_reward=make_task_reward(adapter.tokenizer), step_cost=0.01)
    td = run(env, HeuristicRule("threshold", lengths[1], threshold=0.9), source)
    finished_before = td["finished"].squeeze(-1)  # (B, T)
    assert finished_before.any(), "every row took the same number of steps; the check below would be empty"
    assert (td["next", "done"][:, :-1] == False).all()  # noqa: E712
    assert td["next", "done"][:, -1].all()
    assert not td["next", "action_taken"][finished_before].any()
    assert (td["next", "reward"][finished_before] == 0).all()
    assert torch.equal(td["next", "tokens"][finished_before], td["tokens"][finished_before])


def test_task_reward_paid_once_at_finish(adapter, source, lengths):
    reward = make_task_reward(adapter.tokenizer)
    env = make_env(adapter, source, lengths, task_reward=reward)
    rule = HeuristicRule("threshold", lengths[1], threshold=0.9)
    first = run(env, rule, source)[:, -1]["next"]
    # Rerun with each row's own decoded answer as target, so rows with an answer must earn 1.
    answers = [extract_strict(text) for text in decode_responses(adapter.tokenizer, first["tokens"][:, lengths[0]:])]
    assert any(answer is not None for answer in answers), "no decoded answer to score"
    problems = source.batch(torch.arange(B))
    problems["target"] = torch.tensor([[math.nan if a is None else float(a)] for a in answers], dtype=torch.float64)
    td = run(env, rule, source, problems=problems)
    expected = torch.tensor([0.0 if a is None else 1.0 for a in answers])  # (B,)
    newly_finished = td["next", "finished"] & ~td["finished"]  # (B, T, 1)
    assert torch.equal(td["next", "reward_task"].sum(dim=1).squeeze(-1), expected)
    assert (td["next", "reward_task"][~newly_finished] == 0).all()
