"""The LLaDA SFT loss on a hand-computed case, and response masking.

Shapes: B batch, N = P + L sequence, V vocabulary.
"""

from __future__ import annotations

import math

import pytest
import torch

from orderpolicy.mdm.diffusion_loss import diffusion_loss, mask_response

MASK_ID = 99


def _cross_entropy(row: list[float], target: int) -> float:
    """Return -log softmax(row)[target], written out with math.log and math.exp."""
    return math.log(sum(math.exp(x) for x in row)) - row[target]


def test_loss_matches_hand_computation():
    logits_rows = [
        [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0]],
        [[1.0, 1.0, 1.0], [0.0, -2.0, 2.0], [1.0, 0.5, -0.5]],
    ]
    targets_rows = [[0, 1, 2], [2, 0, 1]]
    masked_rows = [[False, True, True], [False, False, True]]
    p_rows = [0.5, 0.25]
    response_length = 2

    # Row 0 masks positions 1 and 2 at p = 0.5; row 1 masks position 2 at p = 0.25.
    row0 = (_cross_entropy(logits_rows[0][1], 1) + _cross_entropy(logits_rows[0][2], 2)) / 0.5 / response_length
    row1 = _cross_entropy(logits_rows[1][2], 1) / 0.25 / response_length
    expected = (row0 + row1) / 2

    loss = diffusion_loss(
        torch.tensor(logits_rows),  # (B=2, N=3, V=3)
        torch.tensor(targets_rows),  # (B, N)
        torch.tensor(masked_rows),  # (B, N)
        torch.tensor(p_rows),  # (B,)
        response_length,
    )
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_loss_ignores_unmasked_positions():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 5, generator=generator)  # (B, N, V)
    targets = torch.randint(0, 5, (3, 6), generator=generator)  # (B, N)
    masked = torch.rand(3, 6, generator=generator) < 0.5  # (B, N)
    p = torch.tensor([0.3, 0.6, 0.9])  # (B,)
    changed = logits.clone()
    changed[~masked] = torch.randn(int((~masked).sum()), 5, generator=generator)
    assert diffusion_loss(logits, targets, masked, p, 4).item() == pytest.approx(
        diffusion_loss(changed, targets, masked, p, 4).item(), rel=1e-6
    )


def test_loss_zero_without_masked_tokens():
    logits = torch.randn(2, 4, 3)  # (B, N, V)
    targets = torch.zeros(2, 4, dtype=torch.long)  # (B, N)
    masked = torch.zeros(2, 4, dtype=torch.bool)  # (B, N)
    assert diffusion_loss(logits, targets, masked, torch.tensor([0.5, 0.5]), 2).item() == 0.0


def test_mask_response_never_touches_prompt():
    generator = torch.Generator().manual_seed(1)
    prompt_length, response_length = 7, 9
    input_ids = torch.randint(0, 50, (64, prompt_length + response_length), generator=generator)  # (B, N)
    for _ in range(200):
        noisy, masked, p = mask_response(input_ids, prompt_length, MASK_ID, generator=generator)
        assert not masked[:, :prompt_length].any()
        assert torch.equal(noisy[:, :prompt_length], input_ids[:, :prompt_length])


def test_mask_response_replaces_exactly_masked_positions():
    generator = torch.Generator().manual_seed(2)
    input_ids = torch.randint(0, 50, (32, 20), generator=generator)  # (B, N)
    noisy, masked, _ = mask_response(input_ids, 5, MASK_ID, generator=generator)
    assert (noisy[masked] == MASK_ID).all()
    assert torch.equal(noisy[~masked], input_ids[~masked])


def test_mask_response_rate_follows_p():
    generator = torch.Generator().manual_seed(3)
    prompt_length, response_length = 4, 4000
    input_ids = torch.zeros(48, prompt_length + response_length, dtype=torch.long)  # (B, N)
    _, masked, p = mask_response(input_ids, prompt_length, MASK_ID, generator=generator)
    rate = masked[:, prompt_length:].float().mean(dim=1)  # (B,)
    # Five binomial standard deviations per row, plus a floor for p near 0 or 1.
    bound = 5 * torch.sqrt(p * (1 - p) / response_length) + 1e-3  # (B,)
    for row in range(p.shape[0]):
        assert abs(rate[row].item() - p[row].item()) <= bound[row].item(), row


def test_mask_response_p_uniform_with_floor():
    generator = torch.Generator().manual_seed(4)
    eps = 0.05
    input_ids = torch.zeros(4000, 3, dtype=torch.long)  # (B, N)
    _, masked, p = mask_response(input_ids, 1, MASK_ID, generator=generator, eps=eps)
    assert p.min().item() >= eps
    assert p.max().item() <= 1.0
    # p = (1 - eps) t + eps with t ~ U(0, 1) has mean (1 + eps) / 2 and std (1 - eps) / sqrt(12).
    standard_error = (1 - eps) / math.sqrt(12) / math.sqrt(p.shape[0])
    assert abs(p.mean().item() - (1 + eps) / 2) < 5 * standard_error
    response_rate = masked[:, 1:].float().mean().item()
    assert abs(response_rate - (1 + eps) / 2) < 0.03
