"""The AR-Diffusion training step: per-frame timesteps, q_sample, x0 loss, AdamW, EMA.

`make_train_step(...)` returns a pure function `(state, batch) -> (state, metrics)` to be
jitted with the state's shardings. A batch is {'latents': [B, F, L, D], 'label': [B]}
(label optional). All randomness comes from `fold_in(state.rng, step)`, drawn over the
global batch inside jit, so the same run gives the same numbers on 1 or N devices.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from ardiffusion_jax import diffusion, timesteps
from ardiffusion_jax import config as config_lib
from ardiffusion_jax.errors import DataError
from ardiffusion_jax.models import dit, layers
from ardiffusion_jax.train import loop, sharding
from ardiffusion_jax.train import state as state_lib


def draw_noise(key, batch, diffusion_config):
  """The step's randomness for the whole global batch: timesteps, noise, label dropout.

  Drawn once per step and split with the batch, so gradient accumulation sees exactly
  the draws of the full batch.
  """
  latents = batch["latents"]
  key_t, key_noise, key_drop = jax.random.split(key, 3)
  # Folded in rather than split off, so that the other draws are what they were before
  # self-conditioning existed.
  key_self = jax.random.fold_in(key, 3)
  return {
      "t": timesteps.sample_timesteps(key_t, diffusion_config.timestep_scheme, latents.shape[0],
                                      latents.shape[1], diffusion_config.num_timesteps),
      "noise": layers.normal(key_noise, latents.shape, latents.dtype),
      "drop": jax.random.uniform(key_drop, latents.shape[:1]),
      "self_condition": jax.random.uniform(key_self, latents.shape[:1]),
  }


def dit_loss(params, constants, model, batch, draws, diffusion_config, label_dropout: float,
             self_condition_rate: float):
  """MSE between the model output and the target, each frame's weighted by its level
  (`diffusion.loss_weights`; unweighted by default, as the authors train), averaged
  over frames.

  A self-conditioning model (`dit.self_condition`) reads, on a `self_condition_rate`
  share of the examples, its own x̂0 from a first pass that had none, with no gradient
  through it, and zeros on the rest: the sampler feeds it its x̂0 from the row before,
  and zeros at a frame's first step.

  Returns (loss, loss per frame position [F]).
  """
  # Shards hold the encoder's raw mean; like the authors, normalise each token here.
  latents = layers.l2_normalize(batch["latents"])
  t, noise = draws["t"], draws["noise"]
  alphas = diffusion.alphas_from_config(diffusion_config)
  x_t = diffusion.q_sample(latents, t, noise, alphas)
  label = batch.get("label")
  if label is not None and model.num_classes:
    # Classifier-free guidance training: swap labels for the null label at random.
    label = jnp.where(draws["drop"] < label_dropout, model.null_label, label)
  variables = {"params": params, "constants": constants}
  alpha = diffusion.per_frame(alphas, t, latents.ndim)
  estimate = None
  if model.self_condition:
    first = diffusion.prediction_to_x0(model.apply(variables, x_t, t, label), x_t, alpha,
                                       diffusion_config.parameterization)
    use = (draws["self_condition"] < self_condition_rate)[:, None, None, None]
    estimate = jnp.where(use, jax.lax.stop_gradient(first), 0.0)
  prediction = model.apply(variables, x_t, t, label, x0_estimate=estimate)
  target = diffusion.training_target(latents, noise, alpha, diffusion_config.parameterization)
  per_example_frame = jnp.mean(jnp.square(prediction - target), axis=(2, 3))  # [B, F]
  weights = diffusion.loss_weights(alphas, diffusion_config.parameterization,
                                   diffusion_config.get("loss_snr_clip", ()))
  if weights is not None:
    per_example_frame = per_example_frame * jnp.asarray(weights)[t]
  return per_example_frame.mean(), per_example_frame.mean(0)


def make_train_step(model, tx, config):
  """The pure train step for `model`, optimizer `tx` and the full config.

  `config.train.grad_accum` > 1 splits the batch (and its draws) into that many
  micro-batches and averages their gradients in a `lax.scan`: the same gradient as the
  full batch, with the activation memory of one micro-batch.
  """
  train_config, diffusion_config = config.train, config.diffusion
  accum = train_config.grad_accum
  schedule = state_lib.learning_rate_schedule(train_config)
  loss_fn = functools.partial(dit_loss, model=model, diffusion_config=diffusion_config,
                              label_dropout=train_config.label_dropout,
                              self_condition_rate=train_config.self_condition_rate)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: state_lib.TrainState, batch):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    draws = draw_noise(key, batch, diffusion_config)
    if accum == 1:
      (loss, per_frame), grads = grad_fn(state.params, state.constants, batch=batch, draws=draws)
    else:
      split = lambda x: x.reshape((accum, -1) + x.shape[1:])

      def accumulate(carry, micro):
        micro_batch, micro_draws = micro
        out = grad_fn(state.params, state.constants, batch=micro_batch, draws=micro_draws)
        (loss, per_frame), grads = out
        return jax.tree.map(jnp.add, carry, (loss, per_frame, grads)), None

      zeros = (jnp.zeros(()), jnp.zeros(batch["latents"].shape[1]),
               jax.tree.map(jnp.zeros_like, state.params))
      totals, _ = jax.lax.scan(accumulate, zeros, jax.tree.map(split, (batch, draws)))
      loss, per_frame, grads = jax.tree.map(lambda x: x / accum, totals)

    grad_norm = optax.tree.norm(grads)
    # A non-finite loss or gradient leaves the state as it was (the loop decides whether
    # to stop); the step still counts, so the next one draws new noise.
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(jnp.add, state.params, updates)
    decay = state_lib.ema_decay(state.step, train_config.ema_decay)
    ema_params = state_lib.update_ema(state.ema_params, params, decay)
    keep = functools.partial(state_lib.keep_if_finite, ok)
    new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                              opt_state=keep(opt_state, state.opt_state),
                              ema_params=keep(ema_params, state.ema_params))
    metrics = {"loss": loss, "loss_per_frame": per_frame, "grad_norm": grad_norm,
               "lr": schedule(state.step), "ema_decay": decay,
               **state_lib.finite_flags(ok, new_state.params, new_state.ema_params)}
    return new_state, metrics

  return train_step


def jit_train_step(model, tx, config, shardings, mesh):
  """jit with the state's shardings in and out, the state donated; the batch keeps the
  sharding it arrives with (`sharding.global_batch`). Call it under
  `sharding.mesh_context(mesh)`."""
  return jax.jit(make_train_step(model, tx, config), in_shardings=(shardings, None),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def latent_source(config, model):
  """The latent shards named by `train.latents_dir`, checked against the model."""
  # Imported here, as in `train`: the train step itself needs no data reader (grain),
  # so `bench accelerator` runs it on machines without one.
  from ardiffusion_jax.data import latents
  source = latents.LatentShards(latents.shard_paths(config.train.latents_dir))
  shape = source[0]["latents"].shape
  expected = (model.num_frames, model.tokens_per_frame, model.in_channels)
  if shape != expected:
    raise DataError(f"latent shards in {config.train.latents_dir} hold clips of shape {shape}, "
                    f"but the DiT expects {expected} (dit.num_frames, tokens_per_frame, in_channels)")
  return source


def train(config, workdir, hooks=(), devices=None, logdir=None) -> loop.LoopResult:
  """`ardiff train`: trains the DiT on latent shards, resuming from `workdir`."""
  from ardiffusion_jax.data import pipeline
  devices = jax.devices() if devices is None else list(devices)
  config_lib.validate(config, num_devices=len(devices))
  mesh = sharding.make_mesh(config.mesh, devices)
  model = dit.dit_from_config(config.dit)
  tx = state_lib.make_optimizer(config.train)
  source = latent_source(config, model)
  data_iterator = pipeline.global_batches(source, config.train.batch_size,
                                          seed=config.seed, fields=("latents", "label"))
  example = model.example_inputs()
  abstract_state, shardings = state_lib.abstract_train_state(model, tx, mesh, example)
  settings = loop.LoopSettings.from_config(config.train)
  return loop.run(
      workdir=workdir, mesh=mesh, abstract_state=abstract_state,
      init_state=lambda: state_lib.create_train_state(
          model, tx, mesh, jax.random.key(config.seed), example, shardings)[0],
      step_fn=jit_train_step(model, tx, config, shardings, mesh), data_iterator=data_iterator,
      settings=settings, config=config, hooks=hooks, desc="train DiT", logdir=logdir,
      data_source=source)
