"""Train state, optimizer and EMA, created directly with their final shardings."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from ardiffusion_jax.train import sharding


class TrainState(struct.PyTreeNode):
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any
  ema_params: Any
  opt_state: Any
  constants: Any  # fixed tensors saved with the model (the official context tokens)
  rng: jax.Array  # uint32 key data, so checkpoints hold plain arrays


def learning_rate_schedule(train_config):
  """Linear warmup, then constant, cosine decay to `lr_final`, or `wsd` (warmup, stable,
  decay): constant until the last `decay_steps` steps, then cosine decay to `lr_final`."""
  peak, warmup, steps = train_config.lr, train_config.warmup_steps, train_config.steps
  cosine = lambda length: optax.cosine_decay_schedule(peak, max(length, 1),
                                                      alpha=train_config.lr_final / peak)
  if train_config.lr_schedule == "constant":
    decay = optax.constant_schedule(peak)
  elif train_config.lr_schedule == "cosine":
    decay = cosine(steps - warmup)
  elif train_config.lr_schedule == "wsd":
    stable = steps - warmup - train_config.decay_steps
    decay = optax.join_schedules([optax.constant_schedule(peak), cosine(train_config.decay_steps)],
                                 [stable])
  else:
    raise ValueError(f"unknown lr_schedule {train_config.lr_schedule!r}")
  warm = optax.linear_schedule(0.0 if warmup else peak, peak, max(warmup, 1))
  return optax.join_schedules([warm, decay], [warmup])


def make_optimizer(train_config):
  """Gradient clipping by global norm, then AdamW on the warmup schedule."""
  return optax.chain(
      optax.clip_by_global_norm(train_config.grad_clip),
      optax.adamw(learning_rate_schedule(train_config), b1=train_config.b1, b2=train_config.b2,
                  weight_decay=train_config.weight_decay))


def ema_decay(step, max_decay: float):
  """The authors' warmup (diffusers style): min(decay, (1 + n) / (10 + n))."""
  n = step.astype(jnp.float32)
  return jnp.minimum(max_decay, (1.0 + n) / (10.0 + n))


def update_ema(ema_params, params, decay):
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


def keep_if_finite(ok, new, old):
  """`new` when the step was finite (`ok`, a scalar known before the update is applied,
  so XLA still updates in place), else `old`: a non-finite step changes nothing."""
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def finite_flags(ok, *trees) -> dict:
  """The guard's metrics: whether the update was applied (`update_finite`) and whether
  every floating leaf of the updated `trees` is finite (`state_finite`); the loop never
  saves a step where either is false."""
  leaves = [jnp.all(jnp.isfinite(x)) for tree in trees for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return {"update_finite": ok, "state_finite": jnp.all(jnp.stack(leaves)) if leaves else True}


def optimizer_shardings(tx, abstract_params, param_shardings, mesh):
  """mu/nu take their parameter's sharding; counters and scalars are replicated."""
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  return optax.tree_map_params(
      tx, lambda _, s: s, abstract_opt, param_shardings,
      transform_non_params=lambda _: sharding.replicated(mesh))


def state_shardings(model, tx, mesh, example_inputs):
  """Shardings of every TrainState leaf, from abstract initialisation only."""
  boxed = jax.eval_shape(model.init, jax.random.key(0), *example_inputs)
  variables = sharding.logical_shardings(boxed, mesh)
  params = variables["params"]
  abstract_params = nn.meta.unbox(boxed)["params"]
  return TrainState(
      step=sharding.replicated(mesh), params=params, ema_params=params,
      opt_state=optimizer_shardings(tx, abstract_params, params, mesh),
      constants=variables.get("constants", {}), rng=sharding.replicated(mesh))


def _init_fn(model, tx, shapes, train_key):
  """key -> TrainState, for jit (real init) and eval_shape (planning)."""
  def init(key):
    inputs = [jnp.zeros(s.shape, s.dtype) for s in shapes]
    variables = nn.meta.unbox(model.init(key, *inputs))
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                      opt_state=tx.init(params), constants=variables.get("constants", {}),
                      rng=jax.random.key_data(train_key))
  return init


def _shapes(example_inputs):
  return [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in example_inputs]


def init_sharded(init_fn, shardings, mesh, key):
  """Runs `init_fn(key)` under jit so every leaf is created with its sharding."""
  with sharding.mesh_context(mesh):
    return jax.jit(init_fn, out_shardings=shardings)(key)


def abstract_sharded(init_fn, shardings):
  """ShapeDtypeStructs (with shardings) of what `init_fn(key)` returns; allocates nothing."""
  abstract = jax.eval_shape(init_fn, jax.random.key(0))
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def create_train_state(model, tx, mesh, rng, example_inputs, shardings=None):
  """Initialises parameters, EMA and optimizer state already sharded on `mesh`.

  `example_inputs` are arrays or ShapeDtypeStructs for `model.init` after the key;
  `shardings` (from `abstract_train_state`) saves deriving them again.
  Returns (state, shardings).
  """
  shapes = _shapes(example_inputs)
  shardings = shardings or state_shardings(model, tx, mesh, shapes)
  init_key, train_key = jax.random.split(rng)
  return init_sharded(_init_fn(model, tx, shapes, train_key), shardings, mesh, init_key), shardings


def abstract_train_state(model, tx, mesh, example_inputs):
  """The TrainState as ShapeDtypeStructs carrying their shardings; allocates nothing.

  Returns (abstract_state, shardings).
  """
  shapes = _shapes(example_inputs)
  shardings = state_shardings(model, tx, mesh, shapes)
  return abstract_sharded(_init_fn(model, tx, shapes, jax.random.key(0)), shardings), shardings
