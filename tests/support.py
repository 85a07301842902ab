"""Helpers that several test files share (fixtures built on them live in conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np


def count_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def init_weights(model):
  """`model.init` on its example inputs, unboxed and on the host."""
  example = [jnp.zeros(x.shape, x.dtype) for x in model.example_inputs()]
  variables = model.init(jax.random.key(0), *example)
  return jax.device_get(jax.tree.map(lambda v: getattr(v, "value", v), variables,
                                     is_leaf=lambda v: hasattr(v, "value")))


def write_dit_run(path, config, **dit_changes):
  """A DiT run on disk as `ardiff convert` writes one: freshly initialised weights of the
  DiT `config` builds, and the config with `dit_changes` applied to the saved copy only
  (so they can make it build another model). Returns the weights."""
  from ardiffusion_jax.convert import write_model_checkpoint
  from ardiffusion_jax.models import dit
  variables = init_weights(dit.dit_from_config(config.dit))
  config = config.copy_and_resolve_references()
  config.dit.update(dit_changes)
  state = {"ema_params": variables["params"]}
  if "constants" in variables:
    state["constants"] = variables["constants"]
  write_model_checkpoint(path, config, state)
  return variables["params"]
