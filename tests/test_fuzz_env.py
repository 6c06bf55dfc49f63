"""Property tests of MDMDecodingEnv on the shipped MDM, driven by hypothesis.

Each example draws a batch size, a block length (None or a divisor of L), a
step limit, a mode and a sampling temperature, and picks real gsm-synth
prompts. It then steps the environment with drawn actions until the batch is
done.
Every transition is checked against the rules in the env's docstring: the
prompt and already decoded tokens never change, masked positions hold the
mask id, the episode ends within ``min(L, max_steps)`` steps, and each row's
NFE equals its step count.

The number of examples per property comes from ``ORDERPOLICY_FUZZ_EXAMPLES``
(200 by default). Shapes: B batch, P prompt width, L response length.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensordict import TensorDictBase

from envs.decoding import InvalidActionError, MDMDecodingEnv
from orderpolicy.mdm.loading import load_adapter
from orderpolicy.problem_source import ProblemSource
from orderpolicy.tasks.gsm_synth import GsmSynthConfig, generate
from orderpolicy.tokenizer import encode_texts

RESPONSE_LENGTH = 8  # L: short, so that one example costs at most 8 denoiser calls
BLOCK_LENGTHS = (None, 1, 2, 4, 8)  # divisors of RESPONSE_LENGTH
NUM_PROBLEMS = 32
FUZZ = settings(max_examples=int(os.environ.get("ORDERPOLICY_FUZZ_EXAMPLES", 200)), deadline=None)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run the denoiser on one thread: batches this small gain little from intra-op threads.

    On a machine busy with other work, extra threads also stall each call many times over.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=1)
def shipped_adapter():
    return load_adapter()


@functools.lru_cache(maxsize=1)
def problem_source() -> ProblemSource:
    """One-operation gsm-synth test problems, with P set to the longest of their prompts."""
    adapter = shipped_adapter()
    problems = generate(GsmSynthConfig(min_ops=1, max_ops=1), "test", NUM_PROBLEMS, seed=0)
    prompt_length = max(len(ids) for ids in encode_texts(adapter.tokenizer, [p.question for p in problems]))
    return ProblemSource(
        problems,
        adapter.tokenizer,
        prompt_length=prompt_length,
        response_length=RESPONSE_LENGTH,
        pad_id=adapter.pad_token_id,
        eos_id=adapter.eos_token_id,
    )


@dataclass(frozen=True)
class EnvCase:
    """One drawn environment configuration."""

    batch_size: int
    block_length: int | None
    max_steps: int
    mode: str
    temperature: float
    seed: int


env_cases = st.builds(
    EnvCase,
    batch_size=st.integers(1, 4),
    block_length=st.sampled_from(BLOCK_LENGTHS),
    max_steps=st.integers(1, RESPONSE_LENGTH),
    mode=st.sampled_from(("sample", "teacher")),
    temperature=st.sampled_from((0.0, 1.0)),
    seed=st.integers(0, 2**16),
)


def start_episode(case: EnvCase, data, invalid_action: str = "raise") -> tuple[MDMDecodingEnv, TensorDictBase]:
    """Build the env for ``case`` and reset it on drawn problems."""
    source = problem_source()
    env = MDMDecodingEnv(
        shipped_adapter(),
        source,
        batch_size=case.batch_size,
        prompt_length=source.prompt_ids.shape[1],
        response_length=RESPONSE_LENGTH,
        mode=case.mode,
        max_steps=case.max_steps,
        block_length=case.block_length,
        temperature=case.temperature,
        invalid_action=invalid_action,
        seed=case.seed,
    )
    index = data.draw(st.lists(st.integers(0, NUM_PROBLEMS - 1), min_size=case.batch_size, max_size=case.batch_size))
    return env, env.reset(source.batch(torch.tensor(index)))


def open_positions(td: TensorDictBase) -> torch.Tensor:
    """Positions a valid action may select: candidates of unfinished rows (B, L)."""
    return td["candidates"] & ~td["finished"]


def draw_valid_action(data, td: TensorDictBase) -> torch.Tensor:
    """Draw a random non-empty subset of each unfinished row's candidates (B, L)."""
    allowed = open_positions(td)
    action = torch.zeros_like(allowed)
    for row in range(allowed.shape[0]):
        positions = allowed[row].nonzero().flatten().tolist()
        if positions:
            # A non-zero bit pattern over the row's candidates; it shrinks towards the first candidate alone.
            bits = data.draw(st.integers(1, 2 ** len(positions) - 1))
            chosen = [position for i, position in enumerate(positions) if bits >> i & 1]
            action[row, chosen] = True
    return action


def check_transition(env: MDMDecodingEnv, prompt: torch.Tensor, before: TensorDictBase, after: TensorDictBase) -> None:
    """Assert every per-step rule of the environment between two states."""
    P = env.P
    mask_id = env.adapter.mask_token_id
    taken = after["action_taken"]  # (B, L)
    old_response, new_response = before["tokens"][:, P:], after["tokens"][:, P:]  # (B, L)

    assert torch.equal(after["tokens"][:, :P], prompt), "prompt tokens changed"
    assert torch.equal(after["attention_mask"], before["attention_mask"]), "attention mask changed"
    decoded = ~before["masked"]
    assert torch.equal(new_response[decoded], old_response[decoded]), "an unmasked token changed"
    assert not (taken & decoded).any(), "a step re-took an already unmasked position"
    assert torch.equal(after["masked"], before["masked"] & ~taken), "masked set does not follow the step"
    assert (new_response[after["masked"]] == mask_id).all(), "a masked position does not hold the mask id"
    fill = before["reference"] if env.mode == "teacher" else before["draw"]
    assert torch.equal(new_response[taken], fill[taken]), "unmasked tokens are not the draw or the reference"
    assert after["tokens"].min() >= 0, "negative token id"
    assert after["tokens"].max() < env.adapter.vocab_size, "token id outside the vocabulary"

    active = ~before["finished"]  # (B, 1)
    assert torch.equal(after["step"], before["step"] + active.long()), "step counter is wrong"
    assert (after["step"] <= env.max_steps).all(), "a row passed max_steps"
    assert torch.equal(after["unmask_step"][taken], before["step"].expand_as(taken)[taken]), "unmask_step is wrong"
    assert torch.equal(after["finished"], ~after["masked"].any(dim=1, keepdim=True)), "finished flag is wrong"
    assert torch.equal(after["done"], after["finished"].all().expand_as(after["done"])), "done flag is wrong"
    assert torch.equal(after["nfe"], after["step"] + (~after["finished"]).long()), "NFE differs from steps"


def check_episode_end(env: MDMDecodingEnv, td: TensorDictBase, steps_taken: int, calls: int) -> None:
    """Assert that the episode ended in time and cost one denoiser call per step."""
    assert bool(td["done"].all()), f"episode not done after {steps_taken} steps"
    assert steps_taken <= min(env.L, env.max_steps), "episode took more than min(L, max_steps) steps"
    assert torch.equal(td["nfe"], td["step"]), "final NFE differs from steps per row"
    assert calls == int(td["step"].max()), "denoiser calls differ from the longest row's steps"
    assert (td["unmask_step"] >= 0).all(), "a position was never unmasked"


def run_episode(env: MDMDecodingEnv, td: TensorDictBase, choose_action, check_step=None) -> None:
    """Step until done with ``choose_action(td)``, checking each transition and the end.

    ``check_step(before, after)``, when given, adds checks of its own to every transition.
    """
    prompt = td["tokens"][:, : env.P].clone()
    calls_before = env.adapter.nfe - 1  # reset made one call
    steps_taken = 0
    while not td["done"].all() and steps_taken < env.L:
        td.set("action", choose_action(td))
        before = td.clone()
        td = env.step(td)["next"]
        steps_taken += 1
        check_transition(env, prompt, before, td)
        if check_step is not None:
            check_step(before, td)
    check_episode_end(env, td, steps_taken, env.adapter.nfe - calls_before)


@FUZZ
@given(case=env_cases, data=st.data())
def test_valid_actions_keep_invariants(case, data):
    env, td = start_episode(case, data)
    run_episode(env, td, lambda state: draw_valid_action(data, state))


INVALID_KINDS = ("shape", "unmasked", "empty", "outside_block")


def invalid_variant(data, td: TensorDictBase, valid: torch.Tensor, kind: str) -> tuple[torch.Tensor, int | None] | None:
    """Turn a valid action into an invalid one of ``kind``, returned with the offending row.

    Returns None when the state allows no action of that kind, for example no
    masked position outside the current block when there are no blocks.
    """
    batch, length = valid.shape
    if kind == "shape":
        width = data.draw(st.sampled_from((length - 1, length + 1)))
        return torch.zeros(batch, width, dtype=torch.bool), None
    if kind == "unmasked":
        rows = (~td["masked"]).any(dim=1).nonzero().flatten().tolist()
    elif kind == "empty":
        rows = (~td["finished"].squeeze(-1)).nonzero().flatten().tolist()
    else:
        rows = (td["masked"] & ~td["candidates"] & ~td["finished"]).any(dim=1).nonzero().flatten().tolist()
    if not rows:
        return None
    row = data.draw(st.sampled_from(rows))
    action = valid.clone()
    if kind == "empty":
        action[row] = False
        return action, row
    pool = ~td["masked"][row] if kind == "unmasked" else td["masked"][row] & ~td["candidates"][row]
    position = data.draw(st.sampled_from(pool.nonzero().flatten().tolist()))
    action[row, position] = True
    return action, row


@FUZZ
@given(case=env_cases, data=st.data())
def test_invalid_actions_raise_and_leave_state(case, data):
    env, td = start_episode(case, data)

    def choose(state: TensorDictBase) -> torch.Tensor:
        valid = draw_valid_action(data, state)
        kind = data.draw(st.sampled_from((None,) + INVALID_KINDS))
        variant = invalid_variant(data, state, valid, kind) if kind else None
        if variant is None:
            return valid
        action, row = variant
        snapshot = state.clone()
        state.set("action", action)
        with pytest.raises(InvalidActionError) as error:
            env.step(state)
        if row is not None:
            assert f"batch row {row} " in str(error.value), f"{kind}: message does not name row {row}"
        assert "next" not in state.keys(), f"{kind}: a failed step wrote a next state"
        for key in snapshot.keys():
            assert torch.equal(state[key], snapshot[key]), f"{kind}: a failed step changed {key!r}"
        return valid

    run_episode(env, td, choose)


@FUZZ
@given(case=env_cases, data=st.data())
def test_repair_mode_accepts_any_action(case, data):
    env, td = start_episode(case, data, invalid_action="repair")

    def choose(state: TensorDictBase) -> torch.Tensor:
        batch, length = state["masked"].shape
        bits = data.draw(st.lists(st.booleans(), min_size=batch * length, max_size=batch * length))
        return torch.tensor(bits).view(batch, length)

    def check_repair(before: TensorDictBase, after: TensorDictBase) -> None:
        allowed = open_positions(before)  # (B, L)
        active = ~before["finished"].squeeze(-1)  # (B,)
        forced = active & (before["step"].squeeze(-1) + 1 >= env.max_steps)  # (B,)
        must_take = (before["action"] & allowed) | (before["masked"] & forced[:, None])  # (B, L)
        taken = after["action_taken"]  # (B, L)
        added = taken & ~must_take
        assert torch.equal(taken & must_take, must_take), "repair dropped a selected candidate"
        assert (added.sum(dim=1) <= 1).all(), "repair added more than one position to a row"
        assert not (added & ~allowed).any(), "repair added a position outside the candidates"
        assert taken[active].any(dim=1).all(), "repair left an unfinished row with an empty action"

    run_episode(env, td, choose, check_repair)
