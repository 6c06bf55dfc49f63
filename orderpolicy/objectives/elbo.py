"""The order ELBO and its score-function surrogates, computed from an environment trajectory.

For a reference x and an order z_1..z_T drawn from q_phi, the return is

    R = sum_t [ sum_{i in z_t} log p_theta(x_i | s_t) + log p(z_t | s_t) - log q_phi(z_t | s_t) ] - lambda T,

an ELBO on log p(x) with a price lambda per step. Gradients use the score
function with a leave-one-out baseline over the K samples of each prompt
(RLOO: A_k = R_k - mean_{j != k} R_j). The Rao-Blackwellised variant replaces
the immediate likelihood term of step t by its exact expectation over z_t,
sum_i P(i in z_t | non-empty) log p_theta(x_i | s_t), which is differentiable
in phi, and lets the score function carry only the rest of the return from t on.
The derivation is in docs/method.md.

Shapes: R rows = prompts x K samples (consecutive rows share a prompt), T steps, L response length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDictBase

from orderpolicy.posterior import distribution
from orderpolicy.posterior.network import PosteriorNet
from orderpolicy.posterior.policy import posterior_logits

ESTIMATORS = ("rloo", "rb_rloo")


@dataclass
class ObjectiveOutput:
    """Surrogate loss to minimise and detached diagnostics."""

    loss: torch.Tensor  # scalar, differentiable in phi
    elbo: torch.Tensor  # (R,) sum of likelihood + log prior - log posterior, without the step price
    steps: torch.Tensor  # (R,) number of steps T
    likelihood: torch.Tensor  # (R,) sum of log p_theta(x_i | s_t) over the order


def leave_one_out_baseline(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean of the other K - 1 members of each group of K consecutive rows; values (R, ...)."""
    if group_size < 2:
        raise ValueError(f"a leave-one-out baseline needs at least 2 samples per prompt, got {group_size}")
    grouped = values.reshape(-1, group_size, *values.shape[1:])  # (R / K, K, ...)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return others.reshape(values.shape)


def elbo_objective(
    trajectory: TensorDictBase,  # (R, T) from a teacher-mode rollout
    net: PosteriorNet,
    *,
    samples_per_prompt: int,
    rho: float,
    step_price: float,
    estimator: str = "rloo",
    kl_weight: float = 1.0,
) -> ObjectiveOutput:
    """Build the surrogate loss from a teacher-mode trajectory of the decoding environment."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    rows, steps = trajectory.batch_size
    flat = trajectory.reshape(rows * steps)  # (R * T)
    valid = ~flat["finished"].squeeze(-1)  # (R * T,)
    candidates = flat["candidates"] & valid[:, None]  # (R * T, L)
    action = flat["action"] & candidates
    logits = posterior_logits(net, flat)  # (R * T, L), with gradient

    log_q = distribution.log_prob(logits, candidates, action).reshape(rows, steps)  # (R, T)
    log_prior = distribution.prior_log_prob(rho, candidates, action).reshape(rows, steps)  # (R, T)
    # Sums run in float64 so that the order of summation does not change the result.
    likelihood = (flat["next", "reward_likelihood"].squeeze(-1).double() * valid).reshape(rows, steps)  # (R, T)
    valid = valid.reshape(rows, steps).float()  # (R, T)

    # kl_weight = 1 is the ELBO; a smaller weight trades the prior for likelihood (a beta-ELBO).
    kl_part = (kl_weight * (log_prior - log_q.detach()) - step_price) * valid  # (R, T)
    total = (likelihood + kl_part).sum(dim=1)  # (R,) return with the step price
    elbo = (likelihood + (log_prior - log_q.detach()) * valid).sum(dim=1)

    if estimator == "rloo":
        advantage = total - leave_one_out_baseline(total, samples_per_prompt)  # (R,)
        loss = -(advantage.detach() * log_q.sum(dim=1)).mean()
    else:
        logp_ref = flat["logp_ref"]  # (R * T, L)
        inclusion = distribution.inclusion_probs(logits, candidates)  # (R * T, L)
        expected_likelihood = (inclusion * logp_ref.double()).sum(dim=1).reshape(rows, steps) * valid  # (R, T)
        future_likelihood = likelihood.flip(1).cumsum(1).flip(1) - likelihood  # (R, T) sum over t' > t
        to_go = kl_part.flip(1).cumsum(1).flip(1) + future_likelihood  # (R, T)
        advantage = (to_go - leave_one_out_baseline(to_go, samples_per_prompt)) * valid  # (R, T)
        loss = -(expected_likelihood.sum(dim=1) + (advantage.detach() * log_q).sum(dim=1)).mean()
    return ObjectiveOutput(
        loss=loss, elbo=elbo.detach(), steps=valid.sum(dim=1).detach(), likelihood=likelihood.sum(dim=1).detach()
    )
