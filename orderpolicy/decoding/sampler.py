"""The plain reference sampler: decoding as a simple loop over tensors, without torchrl.

It follows the shape of LLaDA's ``generate``: start from a fully masked
response, call the denoiser once per step, let a rule choose positions, fill
them, repeat. The environment in ``envs/`` must produce the same tokens for the
same rule and seed, which the tests check.

Shapes: B batch, P prompt width, L response length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from orderpolicy.decoding.rules import block_candidates, num_blocks
from orderpolicy.decoding.stats import draw_tokens, token_stats
from orderpolicy.mdm.interface import MDMAdapter


@dataclass
class DecodeResult:
    """Output of one batched decode."""

    response: torch.Tensor  # (B, L) token ids
    steps: torch.Tensor  # (B,) steps taken per row
    nfe: torch.Tensor  # (B,) denoiser calls that row took part in while unfinished
    unmask_step: torch.Tensor  # (B, L) step at which each position was unmasked


@torch.inference_mode()
def decode(
    adapter: MDMAdapter,
    prompt_ids: torch.Tensor,  # (B, P)
    prompt_mask: torch.Tensor,  # (B, P)
    response_length: int,
    rule,
    *,
    max_steps: int | None = None,
    block_length: int | None = None,
    temperature: float = 0.0,
    seed: int = 0,
) -> DecodeResult:
    """Decode a batch with ``rule`` (an object with ``decide(stats, candidates, block_step)``).

    When a row reaches ``max_steps``, everything still masked in it is unmasked
    in that step. ``seed`` seeds the token draws (temperature > 0) and the rule.
    """
    device = prompt_ids.device
    batch, prompt_length = prompt_ids.shape
    max_steps = response_length if max_steps is None else max_steps
    if not 1 <= max_steps <= response_length:
        raise ValueError(f"max_steps must lie in [1, {response_length}] (the response length), got {max_steps}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 takes the argmax), got {temperature}")
    num_blocks(response_length, block_length)
    token_generator = torch.Generator(device=device).manual_seed(seed)
    rule.set_seed(seed)

    ids = torch.cat(
        [prompt_ids, torch.full((batch, response_length), adapter.mask_token_id, dtype=torch.long, device=device)],
        dim=1,
    )  # (B, P + L)
    attention_mask = torch.cat([prompt_mask, torch.ones(batch, response_length, dtype=prompt_mask.dtype, device=device)], dim=1)
    masked = torch.ones(batch, response_length, dtype=torch.bool, device=device)
    step = torch.zeros(batch, dtype=torch.long, device=device)
    block_step = torch.zeros_like(step)
    nfe = torch.zeros_like(step)
    unmask_step = torch.full((batch, response_length), -1, dtype=torch.long, device=device)

    while masked.any():
        active = masked.any(dim=1)  # (B,)
        logits = adapter.denoise(ids, attention_mask).logits[:, prompt_length:]  # (B, L, V)
        nfe += active.long()
        stats = token_stats(logits, keep_logp=temperature > 0)
        tokens = draw_tokens(stats.logp, stats.predicted, temperature, token_generator) if temperature > 0 else stats.predicted
        candidates = block_candidates(masked, block_length)  # (B, L)
        action = rule.decide(stats, candidates, block_step) & candidates  # (B, L)
        forced = active & (step + 1 >= max_steps)  # (B,)
        action = action | (masked & forced[:, None])

        response = ids[:, prompt_length:]
        ids[:, prompt_length:] = torch.where(action, tokens, response)
        unmask_step[action] = step[:, None].expand_as(action)[action]
        block_done = (candidates & ~action).sum(dim=1) == 0  # (B,) current block completed
        masked = masked & ~action
        block_step = torch.where(block_done, torch.zeros_like(block_step), block_step + active.long())
        step = step + active.long()

    return DecodeResult(response=ids[:, prompt_length:].clone(), steps=step, nfe=nfe, unmask_step=unmask_step)
