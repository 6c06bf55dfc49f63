"""The masked-diffusion training objective used for LLaDA's supervised fine-tuning.

For each sequence draw t ~ U(0, 1) and mask every response token independently
with probability p = (1 - eps) t + eps; the prompt is never masked. The loss is
the cross-entropy on masked tokens divided by p, summed over the response and
divided by its length L (EOS padding included), then averaged over the batch.
This is the SFT loss of Nie et al., "Large Language Diffusion Models" (2025),
Algorithm 2. Shapes: B batch, N = P + L sequence, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_response(
    input_ids: torch.Tensor,  # (B, N)
    prompt_length: int,
    mask_id: int,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask response tokens at a random rate per row.

    Returns the noisy ids (B, N), the boolean mask of masked positions (B, N)
    and the per-row masking probability p (B,).
    """
    batch, length = input_ids.shape
    t = torch.rand(batch, generator=generator, device=input_ids.device)  # (B,)
    p = (1 - eps) * t + eps  # (B,)
    draws = torch.rand(batch, length, generator=generator, device=input_ids.device)  # (B, N)
    masked = draws < p[:, None]
    masked[:, :prompt_length] = False
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    return noisy, masked, p


def diffusion_loss(
    logits: torch.Tensor,  # (B, N, V)
    targets: torch.Tensor,  # (B, N) clean ids
    masked: torch.Tensor,  # (B, N) bool
    p: torch.Tensor,  # (B,)
    response_length: int,
) -> torch.Tensor:
    """Return the LLaDA SFT loss: sum of masked CE / p, over L, averaged over B."""
    token_ce = F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")  # (B, N)
    weighted = token_ce * masked / p[:, None]  # (B, N)
    return (weighted.sum(dim=1) / response_length).mean()
