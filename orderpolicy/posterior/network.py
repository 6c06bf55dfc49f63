"""The order posterior's network f_phi: per-position unmask logits from the denoiser's own outputs.

Inputs per response position, all produced by the denoiser call of the current
step: log-probability of the predicted token, top-2 margin, entropy, whether the
position is masked, whether it is a candidate (masked and in the current block),
its relative position, the fraction of the response still masked and the step
index; optionally a small projection of the last hidden state. One or more
small transformer layers mix these across positions, so a position's logit can
depend on which other positions are still masked (for example a result whose
operands are not yet decoded). The network never calls the denoiser.

Shapes: B batch, L response length, H denoiser hidden size, D model width, F = 8 scalar features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

NUM_SCALAR_FEATURES = 8


@dataclass
class PosteriorConfig:
    """Size of the posterior network."""

    width: int = 64  # D, model width
    layers: int = 1  # transformer encoder layers mixing positions
    heads: int = 4  # attention heads per layer
    use_hidden: bool = True  # add a projection of the denoiser's last hidden state
    max_length: int = 512  # longest response the learned position embedding covers
    init_bias: float = 0.0  # initial output bias: sigmoid(init_bias) is the starting unmask probability

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"posterior width={self.width} must be divisible by heads={self.heads}")


def scalar_features(
    logp_pred: torch.Tensor,  # (B, L)
    margin: torch.Tensor,  # (B, L)
    entropy: torch.Tensor,  # (B, L)
    masked: torch.Tensor,  # (B, L) bool
    candidates: torch.Tensor,  # (B, L) bool
    step: torch.Tensor,  # (B,) or (B, 1)
) -> torch.Tensor:
    """Stack the per-position scalar features (B, L, F)."""
    batch, length = masked.shape
    position = torch.linspace(0, 1, length, device=masked.device).expand(batch, length)  # (B, L)
    fraction_masked = masked.float().mean(dim=1, keepdim=True).expand(batch, length)  # (B, L)
    step = torch.log1p(step.reshape(batch, 1).float()).expand(batch, length)  # (B, L)
    features = [logp_pred.clamp(min=-30), margin, entropy, masked.float(), candidates.float(), position, fraction_masked, step]
    return torch.stack(features, dim=-1)  # (B, L, F)


class PosteriorNet(nn.Module):
    """Per-position unmask logits a_i; q_i = sigmoid(a_i).

    >>> net = PosteriorNet(PosteriorConfig(), hidden_size=256)
    >>> logits = net(features, hidden)   # (B, L)
    """

    def __init__(self, config: PosteriorConfig, hidden_size: int) -> None:
        super().__init__()
        self.config = config
        self.inputs = nn.Sequential(nn.Linear(NUM_SCALAR_FEATURES, config.width), nn.GELU(), nn.Linear(config.width, config.width))
        self.hidden_proj = nn.Linear(hidden_size, config.width) if config.use_hidden else None
        self.hidden_norm = nn.LayerNorm(hidden_size) if config.use_hidden else None
        self.position = nn.Embedding(config.max_length, config.width)
        layer = nn.TransformerEncoderLayer(
            d_model=config.width,
            nhead=config.heads,
            dim_feedforward=2 * config.width,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.mixer = nn.TransformerEncoder(layer, num_layers=config.layers, enable_nested_tensor=False)
        self.head = nn.Linear(config.width, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, config.init_bias)

    def forward(self, features: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        length = features.shape[1]
        if length > self.config.max_length:
            raise ValueError(
                f"response length {length} exceeds the posterior's max_length {self.config.max_length}; "
                "raise policy.max_length in the config"
            )
        dtype = self.head.weight.dtype
        x = self.inputs(features.to(dtype))  # (B, L, D)
        if self.hidden_proj is not None:
            if hidden is None:
                raise ValueError("this posterior uses hidden states; create the environment with return_hidden=True")
            x = x + self.hidden_proj(self.hidden_norm(hidden.to(dtype)))  # (B, L, D)
        x = x + self.position.weight[:length]
        x = self.mixer(x)  # (B, L, D)
        return self.head(x).squeeze(-1)  # (B, L)
