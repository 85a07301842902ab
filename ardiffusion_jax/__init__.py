"""AR-Diffusion in JAX."""
