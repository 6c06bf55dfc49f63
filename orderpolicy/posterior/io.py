"""Save and load learned policies: small files holding the posterior network and its provenance."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from orderpolicy.checkpoint import atomic_torch_save, load_checkpoint
from orderpolicy.mdm.interface import MDMAdapter
from orderpolicy.posterior.network import PosteriorConfig, PosteriorNet
from orderpolicy.posterior.policy import OrderPolicy

DEFAULT_POLICY_FILE = "policy-gsm-synth.pt"


def default_policy_path() -> Path:
    """Return the policy shipped inside the package."""
    return Path(str(resources.files("orderpolicy") / "assets" / DEFAULT_POLICY_FILE))


def model_fingerprint(adapter: MDMAdapter) -> dict:
    """Describe the MDM a policy was trained on, to catch a policy used with another model."""
    return {"vocab_size": adapter.vocab_size, "hidden_size": adapter.hidden_size, "mask_token_id": adapter.mask_token_id}


def save_policy(path: str | Path, net: PosteriorNet, adapter: MDMAdapter, extra: dict | None = None) -> None:
    """Write the posterior's weights, config and the MDM fingerprint atomically."""
    payload = {
        "kind": "orderpolicy-posterior",
        "posterior_config": dataclasses.asdict(net.config),
        "state_dict": net.state_dict(),
        "model": model_fingerprint(adapter),
        **(extra or {}),
    }
    atomic_torch_save(payload, path)


def load_policy(
    path: str | Path, adapter: MDMAdapter, mode: str = "greedy", seed: int = 0, threshold: float | None = None
) -> OrderPolicy:
    """Load a policy file (or ``"default"`` for the shipped one) as a tensordict policy for ``adapter``.

    ``threshold`` is the greedy inclusion threshold; None takes the one
    calibrated after training (0.5 when the file has none).
    """
    path = default_policy_path() if str(path) == "default" else Path(path)
    payload = load_checkpoint(path)
    if payload.get("kind") != "orderpolicy-posterior":
        raise ValueError(f"{path} is not an orderpolicy policy file (written by scripts/train_policy.py)")
    expected = model_fingerprint(adapter)
    if payload["model"] != expected:
        raise ValueError(
            f"policy {path} was trained for a model with {payload['model']}, but the loaded model has "
            f"{expected}; pass the --model the policy was trained with"
        )
    net = PosteriorNet(PosteriorConfig(**payload["posterior_config"]), hidden_size=adapter.hidden_size)
    missing, unexpected = net.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise ValueError(f"policy {path} does not match the network: missing {missing}, unexpected {unexpected}")
    net.eval()
    if threshold is None:
        threshold = float(payload.get("greedy_threshold", 0.5))
    return OrderPolicy(net, mode=mode, seed=seed, label=path.stem, threshold=threshold)
