"""Every adapter family through the unchanged decoding environment: a 4-step rollout and two training iterations.

The models are small and randomly initialised: a BERT and a ModernBERT masked
LM from transformers, and stand-in modules with LLaDA's and Dream's call
signatures.
"""

from __future__ import annotations

import pytest
import torch

from envs.decoding import MDMDecodingEnv
from orderpolicy.decoding.rules import HeuristicPolicy, HeuristicRule
from orderpolicy.mdm.dream import DreamAdapter
from orderpolicy.mdm.hf_masked_lm import HFMaskedLMAdapter
from orderpolicy.mdm.llada import LLaDAAdapter
from orderpolicy.objectives.elbo import elbo_objective
from orderpolicy.posterior.network import PosteriorConfig, PosteriorNet
from orderpolicy.posterior.policy import OrderPolicy
from orderpolicy.problem_source import ProblemSource
from orderpolicy.tasks.gsm_synth import GsmSynthConfig, generate
from standin_models import (
    DreamStandin,
    LLaDAStandin,
    dream_tokenizer,
    llada_tokenizer,
    tiny_bert,
    tiny_modernbert,
    word_tokenizer,
)

PROMPT_LENGTH, RESPONSE_LENGTH = 48, 16
KINDS = ["bert", "modernbert", "llada", "dream"]


def make_adapter(kind: str):
    if kind == "bert":
        tokenizer = word_tokenizer()
        return HFMaskedLMAdapter(tiny_bert(tokenizer), tokenizer)
    if kind == "modernbert":
        tokenizer = word_tokenizer()
        return HFMaskedLMAdapter(tiny_modernbert(tokenizer), tokenizer)
    if kind == "llada":
        tokenizer = llada_tokenizer()
        return LLaDAAdapter(LLaDAStandin(tokenizer), tokenizer)
    tokenizer = dream_tokenizer()
    return DreamAdapter(DreamStandin(tokenizer), tokenizer)


def make_source(adapter, samples_per_prompt: int = 1) -> ProblemSource:
    config = GsmSynthConfig(min_ops=1, max_ops=1)
    problems = generate(config, "train", 4, seed=3)
    return ProblemSource(
        problems, adapter.tokenizer, prompt_length=PROMPT_LENGTH, response_length=RESPONSE_LENGTH,
        pad_id=adapter.pad_token_id, eos_id=adapter.eos_token_id, samples_per_prompt=samples_per_prompt,
        truncate_prompts=True,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_four_step_rollout_each_adapter(kind):
    adapter = make_adapter(kind)
    env = MDMDecodingEnv(adapter, make_source(adapter), batch_size=4, prompt_length=PROMPT_LENGTH,
                         response_length=RESPONSE_LENGTH)
    policy = HeuristicPolicy(HeuristicRule("confidence", RESPONSE_LENGTH, steps=4))
    td = env.rollout(RESPONSE_LENGTH, policy, auto_reset=True)
    last = td[:, -1]["next"]
    assert td.shape == (4, 4)
    assert not last["masked"].any()
    assert last["nfe"].flatten().tolist() == [4, 4, 4, 4]
    assert adapter.nfe == 4
    assert (last["tokens"][:, PROMPT_LENGTH:] != adapter.mask_token_id).all()


@pytest.mark.parametrize("kind", KINDS)
def test_two_training_iterations_each_adapter(kind):
    adapter = make_adapter(kind)
    K = 2
    env = MDMDecodingEnv(adapter, make_source(adapter, K), batch_size=2 * K, prompt_length=PROMPT_LENGTH,
                         response_length=RESPONSE_LENGTH, mode="teacher", return_hidden=True)
    net = PosteriorNet(PosteriorConfig(width=16, heads=2), adapter.hidden_size)
    policy = OrderPolicy(net, seed=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in net.parameters()]
    for _ in range(2):
        with torch.no_grad():
            trajectory = env.rollout(RESPONSE_LENGTH, policy, auto_reset=True)
        out = elbo_objective(trajectory, net, samples_per_prompt=K, rho=0.5, step_price=0.1, estimator="rb_rloo")
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        assert torch.isfinite(out.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
