"""Unmasking rules and the plain reference sampler."""
