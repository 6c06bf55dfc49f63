"""Masked diffusion models behind one adapter interface."""
