"""Flax Linen models: the causal DiT (and, later, the AR-VAE)."""
