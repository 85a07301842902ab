"""Flax Linen models: the causal DiT, the AR-VAE and the PatchGAN discriminator."""

import jax.numpy as jnp


def module_from_config(module_cls, variants: dict, presets: dict, section):
  """Builds `module_cls` from a config section: its `variant` flags, then its `size`
  preset, then any field of the module that the section sets itself."""
  fields = {**variants[section.variant], **presets[section.size]}
  for name in module_cls.__dataclass_fields__:
    if name in section and name not in ("parent", "name"):
      fields[name] = section[name]
  if isinstance(fields.get("dtype"), str):
    fields["dtype"] = jnp.dtype(fields["dtype"])
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  return module_cls(**fields)
