"""The order ELBO computed directly, with a plain loop and no environment or torchrl.

This is the reference the environment path is tested against: given the same
problems, model, posterior, K and random stream, both must give the same loss
and the same gradients. It teacher-forces the reference response, draws one
unmask set per step from q_phi, and assembles the RLOO or Rao-Blackwellised
RLOO surrogate step by step.

Shapes: B prompts, K samples per prompt, R = B K rows, P prompt width, L response length.
"""

from __future__ import annotations

import torch

from orderpolicy.decoding.stats import token_stats
from orderpolicy.mdm.interface import MDMAdapter
from orderpolicy.posterior import distribution
from orderpolicy.posterior.network import PosteriorNet, scalar_features


def _rollout(adapter, net, ids, attention_mask, reference, generator):
    """Teacher-forced decoding with sets drawn from q_phi; returns per-step records."""
    P = ids.shape[1] - reference.shape[1]
    masked = torch.ones_like(reference, dtype=torch.bool)  # (R, L)
    step = torch.zeros(reference.shape[0], dtype=torch.long, device=ids.device)  # (R,)
    records = []
    while masked.any():
        with torch.no_grad():
            out = adapter.denoise(ids, attention_mask, output_hidden_states=net.config.use_hidden)
            stats = token_stats(out.logits[:, P:], keep_logp=True)
            logp_ref = stats.logp.gather(-1, reference.unsqueeze(-1)).squeeze(-1)  # (R, L)
            hidden = out.hidden_states[:, P:].float() if net.config.use_hidden else None
            features = scalar_features(stats.logp_pred, stats.margin, stats.entropy, masked, masked, step)
            z = distribution.sample(net(features, hidden), masked, generator)  # (R, L)
        records.append(dict(features=features, hidden=hidden, candidates=masked.clone(), z=z, logp_ref=logp_ref))
        ids = ids.clone()
        ids[:, P:] = torch.where(z, reference, ids[:, P:])
        step = step + masked.any(dim=1).long()
        masked = masked & ~z
    return records


def elbo_surrogate_loss(
    prompt_ids: torch.Tensor,  # (B, P)
    prompt_mask: torch.Tensor,  # (B, P)
    reference: torch.Tensor,  # (B, L)
    adapter: MDMAdapter,
    net: PosteriorNet,
    samples_per_prompt: int,
    generator: torch.Generator,
    *,
    rho: float,
    step_price: float,
    estimator: str = "rloo",
    kl_weight: float = 1.0,
) -> tuple[torch.Tensor, dict]:
    """Return the surrogate loss (scalar, differentiable in phi) and per-row ELBO and step counts."""
    K = samples_per_prompt
    prompt_ids = prompt_ids.repeat_interleave(K, dim=0)  # (R, P)
    prompt_mask = prompt_mask.repeat_interleave(K, dim=0)
    reference = reference.repeat_interleave(K, dim=0)  # (R, L)
    mask_fill = torch.full_like(reference, adapter.mask_token_id)
    ids = torch.cat([prompt_ids, mask_fill], dim=1)  # (R, P + L)
    attention_mask = torch.cat([prompt_mask.long(), torch.ones_like(reference)], dim=1)
    records = _rollout(adapter, net, ids, attention_mask, reference, generator)

    # Per-step terms; rows that finished earlier have no candidates and contribute zero.
    log_q, rewards, kl_terms, expected, valid, log_ratio = [], [], [], [], [], []
    for rec in records:
        logits = net(rec["features"], rec["hidden"])  # (R, L), with gradient
        active = rec["candidates"].any(dim=1).float()  # (R,)
        lq = distribution.log_prob(logits, rec["candidates"], rec["z"])  # (R,)
        lp = distribution.prior_log_prob(rho, rec["candidates"], rec["z"])  # (R,)
        log_q.append(lq)
        rewards.append((rec["logp_ref"] * rec["z"]).sum(dim=1).double())  # summed as the environment does
        kl_terms.append((kl_weight * (lp - lq.detach()) - step_price) * active)
        log_ratio.append((lp - lq.detach()) * active)
        expected.append((distribution.inclusion_probs(logits, rec["candidates"]) * rec["logp_ref"].double()).sum(dim=1))
        valid.append(active)

    steps = torch.stack(valid, dim=1).sum(dim=1)  # (R,)
    total = sum(rewards) + sum(kl_terms)  # (R,)
    grouped = total.view(-1, K)
    baseline = ((grouped.sum(dim=1, keepdim=True) - grouped) / (K - 1)).view(-1)
    if estimator == "rloo":
        loss = -((total - baseline).detach() * sum(log_q)).mean()
    elif estimator == "rb_rloo":
        surrogate = torch.zeros_like(total)
        for t in range(len(records)):
            to_go = kl_terms[t] + sum(kl_terms[t + 1 :], torch.zeros_like(total)) + sum(rewards[t + 1 :], torch.zeros_like(total))
            grouped = to_go.view(-1, K)
            baseline_t = ((grouped.sum(dim=1, keepdim=True) - grouped) / (K - 1)).view(-1)
            surrogate = surrogate + expected[t] + ((to_go - baseline_t) * valid[t]).detach() * log_q[t]
        loss = -surrogate.mean()
    else:
        raise ValueError(f"estimator must be 'rloo' or 'rb_rloo', got {estimator!r}")
    elbo = sum(rewards) + sum(log_ratio)
    return loss, {"elbo": elbo.detach(), "steps": steps, "likelihood": sum(rewards).detach()}
