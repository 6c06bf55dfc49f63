"""The order posterior's set distribution and the ELBO objectives.

The exact-gradient test uses a toy denoiser over three response positions whose
logits come from a fixed table indexed by the masking pattern, so every order
can be enumerated.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from envs.decoding import MDMDecodingEnv
from orderpolicy.decoding.stats import token_stats
from orderpolicy.mdm.interface import DenoiserOutput, MDMAdapter
from orderpolicy.mdm.loading import load_adapter
from orderpolicy.objectives.elbo import elbo_objective, leave_one_out_baseline
from orderpolicy.objectives.paper_path import elbo_surrogate_loss
from orderpolicy.posterior import distribution
from orderpolicy.posterior.network import PosteriorConfig, PosteriorNet, scalar_features
from orderpolicy.posterior.policy import OrderPolicy
from orderpolicy.problem_source import ProblemSource
from orderpolicy.tasks.gsm_synth import generate
from orderpolicy.training.setup import model_defaults


def all_subsets(length: int):
    for bits in itertools.product([0, 1], repeat=length):
        yield torch.tensor(bits, dtype=torch.bool)


# Set distribution ---------------------------------------------------------------


def test_nonempty_log_prob_matches_enumeration():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, dtype=torch.float64)
    candidates = torch.tensor([[True, True, False, True]])
    q = torch.sigmoid(logits)[0]
    brute = {}
    for z in all_subsets(4):
        if (z & ~candidates[0]).any() or not z.any():
            continue
        weight = 1.0
        for i in range(4):
            if candidates[0, i]:
                weight *= q[i].item() if z[i] else 1 - q[i].item()
        brute[tuple(z.tolist())] = weight
    normaliser = sum(brute.values())
    for key, weight in brute.items():
        z = torch.tensor([key])
        assert distribution.log_prob(logits, candidates, z).item() == pytest.approx(
            math.log(weight / normaliser), abs=1e-10
        )


def test_inclusion_probs_match_enumeration():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, dtype=torch.float64)
    candidates = torch.ones(1, 3, dtype=torch.bool)
    expected = torch.zeros(3, dtype=torch.float64)
    for z in all_subsets(3):
        if z.any():
            expected += distribution.log_prob(logits, candidates, z[None]).exp()[0] * z
    assert torch.allclose(distribution.inclusion_probs(logits, candidates)[0], expected, atol=1e-10)


def test_sample_frequencies_match_log_prob():
    logits = torch.tensor([[-2.0, 0.5, -1.0]]).expand(20000, 3).contiguous()
    candidates = torch.ones(20000, 3, dtype=torch.bool)
    draws = distribution.sample(logits, candidates, torch.Generator().manual_seed(0))
    assert draws.any(dim=1).all()
    for z in all_subsets(3):
        if not z.any():
            continue
        expected = distribution.log_prob(logits[:1], candidates[:1], z[None]).exp().item()
        observed = (draws == z).all(dim=1).float().mean().item()
        assert observed == pytest.approx(expected, abs=4 * (expected / 20000) ** 0.5 + 1e-3)


def test_sample_respects_candidates():
    logits = torch.zeros(64, 6)
    candidates = torch.rand(64, 6, generator=torch.Generator().manual_seed(2)) < 0.5
    draws = distribution.sample(logits, candidates, torch.Generator().manual_seed(3))
    assert not (draws & ~candidates).any()
    assert torch.equal(draws.any(dim=1), candidates.any(dim=1))


def test_greedy_takes_half_and_best():
    logits = torch.tensor([[-1.0, -0.5, -3.0], [0.2, 1.0, -1.0]])
    candidates = torch.tensor([[True, True, True], [True, True, False]])
    chosen = distribution.greedy(logits, candidates)
    assert chosen.tolist() == [[False, True, False], [True, True, False]]


def test_leave_one_out_baseline_matches_loop():
    values = torch.tensor([1.0, 2.0, 6.0, -1.0, 0.0, 4.0])
    baseline = leave_one_out_baseline(values, 3)
    for row in range(6):
        group = values[(row // 3) * 3 : (row // 3) * 3 + 3].tolist()
        others = group[: row % 3] + group[row % 3 + 1 :]
        assert baseline[row].item() == pytest.approx(sum(others) / 2)


# Toy denoiser with an enumerable order space -------------------------------------


class TableDenoiser(MDMAdapter):
    """Logits for 3 response positions from a fixed table indexed by which positions are masked."""

    def __init__(self) -> None:
        super().__init__()
        self.mask_token_id, self.pad_token_id, self.eos_token_id = 1, 0, 2
        self.max_length = 8
        self.tokenizer = None
        generator = torch.Generator().manual_seed(7)
        self.table = torch.randn(8, 3, 5, generator=generator) * 2  # (patterns, L, V)

    vocab_size = property(lambda self: 5)
    hidden_size = property(lambda self: 4)
    device = property(lambda self: torch.device("cpu"))

    def _forward(self, input_ids, attention_mask, output_hidden_states):
        response = input_ids[:, -3:]  # (B, 3)
        pattern = ((response == self.mask_token_id).long() * torch.tensor([1, 2, 4])).sum(dim=1)  # (B,)
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], 5)
        logits[:, -3:] = self.table[pattern]
        return DenoiserOutput(logits=logits)


def exact_objective(adapter, net, prompt, reference, rho, step_price):
    """J(phi) by enumerating every order of the three positions, differentiable in phi."""

    def value(masked, step):
        if not masked.any():
            return torch.zeros((), dtype=torch.float64)
        ids = torch.cat([prompt, torch.where(masked, adapter.mask_token_id, reference)], dim=1)
        stats = token_stats(adapter.denoise(ids, torch.ones_like(ids)).logits[:, -3:], keep_logp=True)
        logp_ref = stats.logp.gather(-1, reference.unsqueeze(-1)).squeeze(-1).double()  # (1, 3)
        features = scalar_features(stats.logp_pred, stats.margin, stats.entropy, masked, masked, step)
        logits = net(features)
        total = torch.zeros((), dtype=torch.float64)
        for z in all_subsets(3):
            z = z[None]
            if not z.any() or (z & ~masked).any():
                continue
            log_q = distribution.log_prob(logits, masked, z)[0]
            log_p = distribution.prior_log_prob(rho, masked, z)[0]
            reward = (logp_ref * z).sum() + log_p - log_q - step_price
            total = total + log_q.exp() * (reward + value(masked & ~z, step + 1))
        return total

    return value(torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, dtype=torch.long))


@pytest.mark.parametrize("estimator", ["rloo", "rb_rloo"])
def test_estimators_unbiased_on_toy_case(estimator):
    torch.manual_seed(0)
    adapter = TableDenoiser()
    net = PosteriorNet(PosteriorConfig(width=8, heads=2, use_hidden=False), hidden_size=4).double()
    torch.nn.init.normal_(net.head.weight, std=0.5)
    prompt = torch.tensor([[3]])
    reference = torch.tensor([[3, 4, 2]])
    rho, step_price = 0.4, 0.3

    net.zero_grad()
    exact_objective(adapter, net, prompt, reference, rho, step_price).backward()
    exact = torch.cat([p.grad.flatten() for p in net.parameters()])

    # Average many independent K = 4 estimates; compare within 5 standard errors.
    estimates = []
    generator = torch.Generator().manual_seed(1)
    for _ in range(400):
        net.zero_grad()
        loss, _ = elbo_surrogate_loss(
            prompt.expand(8, 1), torch.ones(8, 1), reference.expand(8, 3), adapter, net, 4, generator,
            rho=rho, step_price=step_price, estimator=estimator,
        )
        (-loss).backward()
        estimates.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    estimates = torch.stack(estimates)  # (N, parameters)
    mean = estimates.mean(dim=0)
    stderr = estimates.std(dim=0) / len(estimates) ** 0.5
    assert exact.abs().max() > 1e-3
    assert ((mean - exact).abs() <= 5 * stderr + 1e-6).all()


# Environment path against the paper path ---------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    adapter = load_adapter(None)
    defaults = model_defaults(adapter, None)
    return adapter, defaults


@pytest.mark.parametrize("estimator", ["rloo", "rb_rloo"])
def test_env_path_equals_paper_path(shipped, estimator):
    adapter, defaults = shipped
    P, L, K = defaults.prompt_length, defaults.response_length, 3
    problems = generate(defaults.task, "train", 2, seed=5)
    source = ProblemSource(
        problems, adapter.tokenizer, prompt_length=P, response_length=L,
        pad_id=adapter.pad_token_id, eos_id=adapter.eos_token_id, samples_per_prompt=K,
    )
    torch.manual_seed(0)
    net = PosteriorNet(PosteriorConfig(init_bias=-1.0), adapter.hidden_size).double()
    torch.nn.init.normal_(net.head.weight, std=0.1)

    env = MDMDecodingEnv(adapter, source, batch_size=2 * K, prompt_length=P, response_length=L,
                         mode="teacher", return_hidden=True)
    with torch.no_grad():
        trajectory = env.rollout(L, OrderPolicy(net, seed=11), auto_reset=True)
    env_out = elbo_objective(trajectory, net, samples_per_prompt=K, rho=0.5, step_price=0.7, estimator=estimator)
    net.zero_grad()
    env_out.loss.backward()
    env_grads = [p.grad.clone() for p in net.parameters()]

    batch = source.batch(torch.arange(2))
    paper_loss, paper = elbo_surrogate_loss(
        batch["prompt_ids"][::K], batch["prompt_mask"][::K], batch["reference"][::K], adapter, net, K,
        torch.Generator().manual_seed(11), rho=0.5, step_price=0.7, estimator=estimator,
    )
    net.zero_grad()
    paper_loss.backward()

    assert torch.equal(env_out.steps, paper["steps"])
    assert env_out.loss.item() == pytest.approx(paper_loss.item(), abs=1e-6)
    assert torch.allclose(env_out.elbo, paper["elbo"], atol=1e-6)
    for env_grad, parameter in zip(env_grads, net.parameters()):
        assert torch.allclose(env_grad, parameter.grad, atol=1e-6)
