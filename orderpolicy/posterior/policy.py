"""The order posterior as a tensordict policy for the decoding environment.

Shapes: B batch, L response length.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from orderpolicy.posterior import distribution
from orderpolicy.posterior.network import PosteriorNet, scalar_features

POLICY_MODES = ("sample", "greedy")


def posterior_logits(net: PosteriorNet, td: TensorDictBase) -> torch.Tensor:
    """Compute unmask logits (B, L) from an environment observation."""
    features = scalar_features(
        td["logp_pred"], td["margin"], td["entropy"], td["masked"], td["candidates"], td["step"]
    )  # (B, L, F)
    config = getattr(net, "module", net).config  # unwrap DistributedDataParallel
    hidden = td.get("hidden", None) if config.use_hidden else None
    return net(features, hidden)


class OrderPolicy(TensorDictModuleBase):
    """Unmask sets drawn from q_phi (``sample``) or its mode-like ``greedy`` rule.

    Writes ``action`` (B, L) bool and ``policy_logits`` (B, L). Finished rows
    get empty actions.

    >>> policy = OrderPolicy(PosteriorNet(PosteriorConfig(), hidden_size=256), mode="greedy")
    >>> td = policy(env.reset())     # doctest: +SKIP
    """

    OBSERVATION_KEYS = ["logp_pred", "margin", "entropy", "masked", "candidates", "step", "finished"]
    in_keys = OBSERVATION_KEYS
    out_keys = ["action", "policy_logits"]

    def __init__(
        self, net: PosteriorNet, mode: str = "sample", seed: int = 0, label: str = "learned", threshold: float = 0.5
    ) -> None:
        super().__init__()
        if mode not in POLICY_MODES:
            raise ValueError(f"policy mode must be one of {POLICY_MODES}, got {mode!r}")
        self.net = net
        self.mode = mode
        self.threshold = threshold  # greedy mode: unmask every candidate with q_i >= threshold
        self.label = f"{label}-{mode}" if threshold == 0.5 or mode == "sample" else f"{label}-{mode}@{threshold:g}"
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self.needs_hidden = net.config.use_hidden
        self.in_keys = list(self.OBSERVATION_KEYS) + (["hidden"] if self.needs_hidden else [])
        # Data-parallel share: rows drawn for a global batch, this process's slice used.
        self.total_rows: int | None = None
        self.row_offset = 0

    def set_seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        candidates = td["candidates"] & ~td["finished"]  # (B, L)
        logits = posterior_logits(self.net, td)  # (B, L)
        if self.mode == "sample":
            action = distribution.sample(logits.detach(), candidates, self.generator, self.total_rows, self.row_offset)
        else:
            action = distribution.greedy(logits.detach(), candidates, self.threshold)
        td.set("action", action)
        td.set("policy_logits", logits)
        return td
