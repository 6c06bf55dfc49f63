"""The plain reference sampler on the shipped MDM, and its agreement with the torchrl environment.

Shapes: B batch, P prompt width, L response length.
"""

from __future__ import annotations

import pytest
import torch

from envs.decoding import MDMDecodingEnv
from orderpolicy.decoding.rules import HeuristicPolicy, HeuristicRule
from orderpolicy.decoding.sampler import decode
from orderpolicy.decoding.strategies import STRATEGIES
from orderpolicy.evaluation import read_train_config, synth_config_from
from orderpolicy.mdm.loading import load_adapter
from orderpolicy.problem_source import ProblemSource
from orderpolicy.tasks import load_problems

B = 3
STEPS = 6  # a multiple of the 3 blocks below, so every fixed-step rule accepts it with and without blocks
BLOCK = 24
DETERMINISTIC = [name for name in STRATEGIES if name != "random"]
MAX_STEPS = 12  # caps the adaptive rules, which may otherwise take up to L steps, to keep the tests short
# (block_length, seed, temperature, max_steps): each setting varies, pairwise combined to keep the test short.
SETTINGS = [(None, 0, 0.0, MAX_STEPS), (None, 1, 0.8, 10), (BLOCK, 0, 0.8, 12), (BLOCK, 1, 0.0, MAX_STEPS)]


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(None)


@pytest.fixture(scope="module")
def lengths():
    config = read_train_config(None)
    return config["prompt_length"], config["response_length"]


@pytest.fixture(scope="module")
def source(adapter, lengths):
    problems = load_problems("gsm-synth", num_problems=B, seed=2, synth_config=synth_config_from(read_train_config(None)))
    prompt_length, response_length = lengths
    return ProblemSource(
        problems, adapter.tokenizer, prompt_length=prompt_length, response_length=response_length,
        pad_id=adapter.pad_token_id, eos_id=adapter.eos_token_id,
    )


def make_rule(name: str, response_length: int, block_length: int | None) -> HeuristicRule:
    return HeuristicRule(name, response_length, steps=STEPS, block_length=block_length)


@pytest.mark.parametrize(("block_length", "seed", "temperature", "max_steps"), SETTINGS)
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_env_matches_plain_decode(adapter, source, lengths, name, block_length, seed, temperature, max_steps):
    prompt_length, response_length = lengths
    problems = source.batch(torch.arange(B))
    settings = dict(block_length=block_length, temperature=temperature, max_steps=max_steps)
    rule = make_rule(name, response_length, block_length)
    plain = decode(adapter, problems["prompt_ids"], problems["prompt_mask"], response_length, rule, seed=seed,
                   **settings)

    env = MDMDecodingEnv(adapter, source, batch_size=B, prompt_length=prompt_length,
                         response_length=response_length, **settings)
    env.set_seed(seed)
    rule.set_seed(seed)
    td = env.rollout(env.max_steps, HeuristicPolicy(rule), tensordict=env.reset(problems), auto_reset=False)
    last = td[:, -1]["next"]
    assert torch.equal(last["tokens"][:, prompt_length:], plain.response)
    assert torch.equal(last["unmask_step"], plain.unmask_step)
    assert torch.equal(last["step"].squeeze(-1), plain.steps)
    assert torch.equal(last["nfe"].squeeze(-1), plain.nfe)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_batch_matches_per_row_loop(adapter, source, lengths, name):
    _, response_length = lengths
    problems = source.batch(torch.arange(B))
    rule = make_rule(name, response_length, None)
    batched = decode(adapter, problems["prompt_ids"], problems["prompt_mask"], response_length, rule,
                     max_steps=MAX_STEPS)
    for row in range(B):
        single = decode(adapter, problems["prompt_ids"][row : row + 1], problems["prompt_mask"][row : row + 1],
                        response_length, rule, max_steps=MAX_STEPS)
        assert torch.equal(single.response[0], batched.response[row]), f"row {row} differs"
        assert torch.equal(single.unmask_step[0], batched.unmask_step[row]), f"row {row} differs"


@pytest.mark.parametrize(("name", "steps", "block_length"), [("confidence", 5, None), ("margin", 3, BLOCK)])
def test_fixed_rule_takes_exactly_steps(adapter, source, lengths, name, steps, block_length):
    _, response_length = lengths
    problems = source.batch(torch.arange(B))
    rule = HeuristicRule(name, response_length, steps=steps, block_length=block_length)
    out = decode(adapter, problems["prompt_ids"], problems["prompt_mask"], response_length, rule,
                 block_length=block_length)
    assert out.steps.tolist() == [steps] * B
    assert out.nfe.tolist() == [steps] * B
    assert out.unmask_step.min() == 0
    assert out.unmask_step.max() == steps - 1


def test_decode_forces_at_max_steps(adapter, source, lengths):
    _, response_length = lengths
    problems = source.batch(torch.arange(B))
    rule = HeuristicRule("threshold", response_length, threshold=1.0)  # one position per step on its own
    out = decode(adapter, problems["prompt_ids"], problems["prompt_mask"], response_length, rule, max_steps=3)
    assert out.steps.tolist() == [3] * B
    assert (out.unmask_step.eq(2).sum(dim=1) == response_length - 2).all()
    assert not (out.response == adapter.mask_token_id).any()
