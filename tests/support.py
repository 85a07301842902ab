"""Helpers that several test files share (fixtures built on them live in conftest.py)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np


def count_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def init_weights(model):
  """`model.init` on its example inputs, unboxed and on the host."""
  example = [jnp.zeros(x.shape, x.dtype) for x in model.example_inputs()]
  return jax.device_get(unbox(jax.jit(model.init)(jax.random.key(0), *example)))


def tiny(models_module, model_cls, variant: str, **changes):
  """The `tiny` preset of a model family (`models.dit` / `models.ar_vae`) in `variant`."""
  return model_cls(**{**models_module.VARIANTS[variant], **models_module.PRESETS["tiny"],
                      **changes})


def randomised(model, *args, scale: float = 0.05, noise_seed: int = 42, init_seed: int = 0,
               collections=None):
  """`model.init(key(init_seed), *args)`, then every weight (of `collections`, default
  all) moved by `scale` times a normal draw: zero-initialised layers (adaLN-zero gates,
  output heads) then do something, so every path through the network carries signal.
  `args` default to the model's example inputs."""
  if not args:
    args = [jnp.zeros(x.shape, x.dtype) for x in model.example_inputs()]
  variables = unbox(jax.jit(model.init)(jax.random.key(init_seed), *args))
  chosen = {name: tree for name, tree in variables.items()
            if collections is None or name in collections}
  leaves, structure = jax.tree.flatten(chosen)
  keys = jax.random.split(jax.random.key(noise_seed), len(leaves))
  moved = [leaf + scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
  return {**variables, **jax.tree.unflatten(structure, moved)}


def subprocess_env(devices: int = 1) -> dict:
  """This process's environment (conftest.py's compilation settings included) for a
  subprocess that sees `devices` CPU devices instead of the suite's 8 fake ones. A run
  whose device count is not what its test is about compiles and steps faster on one:
  the smoke demo took 86 s on one against 133 s on eight (2026-12-07)."""
  flag = "--xla_force_host_platform_device_count"
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(flag)]
  if devices > 1:
    flags.append(f"{flag}={devices}")
  return {**os.environ, "XLA_FLAGS": " ".join(flags)}


def cli_command(*args) -> list:
  """The argv of `ardiff ARGS` run with this interpreter, for subprocess.run or Popen."""
  return [sys.executable, "-m", "ardiffusion_jax.cli", *args]


def run_cli(*args, env=None, timeout=300):
  """`ardiff ARGS` in its own process (`env`: e.g. `subprocess_env()`), its output
  captured as text."""
  return subprocess.run(cli_command(*args), env=env, timeout=timeout, capture_output=True,
                        text=True)


def unbox(variables):
  """Flax's partitioned boxes -> plain arrays."""
  return jax.tree.map(lambda v: getattr(v, "value", v), variables,
                      is_leaf=lambda v: hasattr(v, "value"))


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


def restore_latest(run):
  """(config, raw saved state) of a run folder's newest checkpoint, as written."""
  from ardiffusion_jax.train.checkpoint import Checkpointer
  checkpointer = Checkpointer(f"{run}/checkpoints", async_save=False)
  try:
    _, config, state = checkpointer.load_latest()
    return config, state
  finally:
    checkpointer.close()
