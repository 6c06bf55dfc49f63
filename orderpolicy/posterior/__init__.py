"""The variational order posterior q_phi: network, set distribution, policy, checkpoints."""

from orderpolicy.posterior.io import load_policy, save_policy

__all__ = ["load_policy", "save_policy"]
