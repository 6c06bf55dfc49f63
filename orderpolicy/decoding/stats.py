"""Per-token statistics of one denoiser output, shared by every unmasking rule.

Shapes: B batch, L response length, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class NonFiniteLogitsError(FloatingPointError):
    """The denoiser returned NaN or infinite logits."""


@dataclass
class TokenStats:
    """Token statistics of a state, read by every strategy and by the order posterior."""

    predicted: torch.Tensor  # (B, L) argmax token
    logp_pred: torch.Tensor  # (B, L) log-probability of the argmax token (log confidence)
    margin: torch.Tensor  # (B, L) top-1 minus top-2 probability
    entropy: torch.Tensor  # (B, L) entropy of the predictive distribution, in nats
    logp: torch.Tensor | None = None  # (B, L, V) log-probabilities, kept only when requested


def check_finite(logits: torch.Tensor) -> None:
    """Raise :class:`NonFiniteLogitsError` naming the batch rows with NaN or inf logits."""
    bad = ~torch.isfinite(logits).flatten(1).all(dim=1)  # (B,)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        raise NonFiniteLogitsError(
            f"denoiser returned NaN or inf logits in batch rows {rows}; check the model weights "
            "and dtype (bf16 overflow), and the inputs of those rows"
        )


def token_stats(logits: torch.Tensor, keep_logp: bool = False) -> TokenStats:
    """Compute argmax, log confidence, top-2 margin and entropy from response logits (B, L, V)."""
    check_finite(logits)
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, L, V)
    top = logp.topk(2, dim=-1)  # values, indices: (B, L, 2)
    probs_top = top.values.exp()  # (B, L, 2)
    entropy = -(logp.exp() * logp).sum(-1)  # (B, L)
    return TokenStats(
        predicted=top.indices[..., 0],
        logp_pred=top.values[..., 0],
        margin=probs_top[..., 0] - probs_top[..., 1],
        entropy=entropy,
        logp=logp if keep_logp else None,
    )


def draw_tokens(
    logp: torch.Tensor,  # (B, L, V)
    predicted: torch.Tensor,  # (B, L)
    temperature: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Return the token each position would take if unmasked now (B, L).

    Temperature 0 takes the argmax; otherwise one draw from softmax(logp / T).
    """
    if temperature == 0:
        return predicted
    batch, length, vocab = logp.shape
    probs = torch.softmax(logp.reshape(-1, vocab) / temperature, dim=-1)  # (B * L, V)
    return torch.multinomial(probs, 1, generator=generator).view(batch, length)
