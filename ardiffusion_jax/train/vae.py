"""AR-VAE training in the paper's three stages, on the shared loop (`train/loop.py`).

Stage 1 (frames): L1 (or MSE, `vae_train.pixel_loss`) + perceptual reconstruction of
single frames through the sampled, normalised latent, plus `vae_train.chroma_weight` times
the same loss on the frames' chroma (`chroma`), plus `vae_train.proxy_weight` times
the proxy head's MSE when the model has one (`vae.proxy_head`). Stage 2: from
`vae_train.disc_start` the PatchGAN joins; odd steps train the discriminator only and
even steps the generator, whose adversarial term is weighted by the ratio of gradient
norms at the decoder's last layer, as in the authors' VAE training.
Stage 3 (`vae_causal`): the temporally causal decoder blocks are finetuned on clips,
everything else frozen, starting from a stage-2 checkpoint.
With `vae_train.ema_decay > 0` the state also keeps an EMA of the generator (the authors
keep none), and everything that decodes or encodes afterwards uses it.
"""

import functools
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from ardiffusion_jax import config as config_lib, runs
from ardiffusion_jax.data import datasets, pipeline
from ardiffusion_jax.errors import CheckpointError
from ardiffusion_jax.eval.nets import lpips
from ardiffusion_jax.models import ar_vae, discriminator, layers
from ardiffusion_jax.train import loop, sharding
from ardiffusion_jax.train import state as state_lib

LAST_LAYER = ("pixel_decoder", "conv_out", "kernel")


class VAEState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  ema_params: Any  # {} when vae_train.ema_decay is 0
  opt_state: Any
  disc_params: Any
  disc_batch_stats: Any
  disc_opt_state: Any
  rng: jax.Array


def trainable_mask(params, trainable: str):
  """True for the leaves that train: all of them, or only the temporal blocks."""
  def trains(path, _):
    return trainable == "all" or any("temporal_" in str(getattr(k, "key", k)) for k in path)
  return jax.tree_util.tree_map_with_path(trains, params)


def _learning_rate(train_config):
  """The generator's rate: `state.learning_rate_schedule`, except that a constant rate
  without warmup stays a float, so the optimizer state has no schedule count, as in the
  runs saved before `vae_train` had a schedule, and those still resume."""
  if train_config.lr_schedule == "constant" and not train_config.warmup_steps:
    return train_config.lr
  return state_lib.learning_rate_schedule(train_config)


def make_optimizers(train_config, params_shape):
  """AdamW for the generator (clipped) and the discriminator (not clipped, as the
  authors do). Frozen generator leaves get zero gradients and no weight decay, so they
  stay bit-identical (one optimizer state shape for every stage)."""
  mask = trainable_mask(params_shape, train_config.trainable)
  freeze = optax.stateless(lambda updates, params=None: jax.tree.map(
      lambda u, trains: u if trains else jnp.zeros_like(u), updates, mask))
  generator = optax.chain(
      freeze, optax.clip_by_global_norm(train_config.grad_clip),
      optax.adamw(_learning_rate(train_config), b1=train_config.b1,
                  b2=train_config.b2, weight_decay=train_config.weight_decay, mask=mask))
  disc = optax.adamw(train_config.disc_lr, b1=train_config.b1, b2=train_config.b2,
                     weight_decay=train_config.weight_decay)
  return generator, disc


def _last_layer(tree):
  for key in LAST_LAYER:
    tree = tree[key]
  return tree


METRICS = ("loss", "l1", "perceptual", "psnr", "proxy", "motion", "g_loss", "d_loss", "d_weight",
           "grad_norm", "update_finite", "state_finite")


def _metrics(video, recon, **values):
  """Every phase reports the same keys (zeros where a phase has no such term)."""
  values["psnr"] = -10.0 * jnp.log10(jnp.mean(jnp.square(video - jnp.clip(recon, 0, 1))))
  return {key: values.get(key, jnp.zeros(())) for key in METRICS}


def phase_of(step: int, disc_start: int) -> str:
  """Which update a step makes: the generator alone before `disc_start` (or with no
  discriminator), then the discriminator on odd steps and the generator with the GAN
  term on even ones, as the authors alternate."""
  if disc_start < 0 or step < disc_start:
    return "generator"
  return "discriminator" if step % 2 else "generator_gan"


def chroma(images):
  """Each pixel's colour less its grey level (the mean of its channels): what the
  `vae_train.chroma_weight` term compares, so it scores hue and saturation, not
  brightness."""
  return images - jnp.mean(images, axis=-1, keepdims=True)


def motion_penalty(mean):
  """How far the latents' paths bend, relative to how far they range: the mean squared
  second difference in time of the unit tokens (l2-normalised posterior means, [B, T, L,
  C], T >= 3), over their variance around their mean token. A ball moves in a straight
  line between bounces; latents that move so too let the DiT carry it on by
  extrapolation, where copying the last frame is all the unregularised tokenizer's
  latents allow (docs/experiments/tokenizer.md, 2026-12-06). The division keeps the
  term from being met by shrinking the latents' spread."""
  unit = layers.l2_normalize(mean)
  bend = unit[:, 2:] - 2 * unit[:, 1:-1] + unit[:, :-2]
  spread = jnp.mean(jnp.square(unit - jnp.mean(unit, axis=(0, 1), keepdims=True)))
  return jnp.mean(jnp.square(bend)) / (spread + 1e-6)


def make_vae_step(model, disc_model, g_tx, d_tx, train_config, perceptual_fn=None):
  """The pure VAE step `(state, batch, phase) -> (state, metrics)` (phase from
  `phase_of`, static); batch['video'] is uint8 [B, T, H, W, 3]."""

  def reconstruct(params, video, key):
    return model.apply({"params": params}, video, key, method=ar_vae.ARVAE.training_reconstruction)

  error = jnp.square if train_config.get("pixel_loss", "l1") == "l2" else jnp.abs
  proxy_weight = train_config.get("proxy_weight", 0.0)
  chroma_weight = train_config.get("chroma_weight", 0.0)
  max_ema_decay = train_config.get("ema_decay", 0.0)

  def nll_of(video, recon):
    l1 = jnp.mean(jnp.abs(video - recon))
    pixel = jnp.mean(error(video - recon))
    if chroma_weight > 0:
      pixel = pixel + chroma_weight * jnp.mean(error(chroma(video) - chroma(recon)))
    perceptual = jnp.zeros(())
    if perceptual_fn is not None:
      flat = lambda v: v.reshape((-1,) + v.shape[2:])
      perceptual = jnp.mean(perceptual_fn(flat(video), flat(recon)))
    return pixel + train_config.perceptual_weight * perceptual, l1, perceptual

  def discriminate(disc_params, batch_stats, images):
    logits, updates = disc_model.apply({"params": disc_params, "batch_stats": batch_stats},
                                       images.reshape((-1,) + images.shape[2:]),
                                       mutable=["batch_stats"])
    return logits, updates["batch_stats"]

  motion_weight = train_config.get("motion_weight", 0.0)

  def generator_step(state, video, key, with_gan):
    def losses(params):  # one forward pass for both the reconstruction and the GAN term
      recon, proxy, mean = reconstruct(params, video, key)
      nll, l1, perceptual = nll_of(video, recon)
      motion = jnp.zeros(())
      if motion_weight > 0:  # validation guarantees clips of >= 3 frames
        motion = motion_penalty(mean)
        nll = nll + motion_weight * motion
      proxy_loss = jnp.zeros(())
      if proxy_weight > 0:  # validation guarantees the head
        proxy_loss = jnp.mean(jnp.square(video - proxy))
        nll = nll + proxy_weight * proxy_loss
      g_loss = jnp.zeros(())
      if with_gan:
        logits, _ = discriminate(state.disc_params, state.disc_batch_stats, recon)
        g_loss = discriminator.generator_adversarial_loss(logits)
      return (nll, g_loss), (recon, l1, perceptual, proxy_loss, motion)

    (nll, g_loss), backward, (recon, l1, perceptual, proxy_loss, motion) = jax.vjp(
        losses, state.params, has_aux=True)
    (grads,) = backward((jnp.ones(()), jnp.zeros(())))
    metrics = _metrics(video, recon, loss=nll, l1=l1, perceptual=perceptual, proxy=proxy_loss,
                       motion=motion)
    if with_gan:
      (gan_grads,) = backward((jnp.zeros(()), jnp.ones(())))
      weight = train_config.disc_weight * discriminator.adaptive_weight(
          _last_layer(grads), _last_layer(gan_grads))
      grads = jax.tree.map(lambda a, b: a + weight * b, grads, gan_grads)
      metrics.update(g_loss=g_loss, d_weight=weight)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(nll) & jnp.isfinite(g_loss) & jnp.isfinite(grad_norm)
    updates, opt_state = g_tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if max_ema_decay > 0:  # the discriminator's steps leave the generator, and its EMA, alone
      ema_params = state_lib.update_ema(ema_params, params,
                                        state_lib.ema_decay(state.step, max_ema_decay))
    keep = functools.partial(state_lib.keep_if_finite, ok)
    new_state = state.replace(params=keep(params, state.params),
                              ema_params=keep(ema_params, state.ema_params),
                              opt_state=keep(opt_state, state.opt_state))
    metrics.update(grad_norm=grad_norm,
                   **state_lib.finite_flags(ok, new_state.params, new_state.ema_params))
    return new_state, metrics

  def discriminator_step(state, video, key):
    recon = jax.lax.stop_gradient(reconstruct(state.params, video, key)[0])

    def d_loss_fn(disc_params):
      real, stats = discriminate(disc_params, state.disc_batch_stats, video)
      fake, stats = discriminate(disc_params, stats, recon)
      return discriminator.hinge_discriminator_loss(real, fake), stats

    (d_loss, stats), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.disc_params)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(d_loss) & jnp.isfinite(grad_norm)
    updates, disc_opt_state = d_tx.update(grads, state.disc_opt_state, state.disc_params)
    keep = functools.partial(state_lib.keep_if_finite, ok)
    new_state = state.replace(
        disc_params=keep(optax.apply_updates(state.disc_params, updates), state.disc_params),
        disc_batch_stats=keep(stats, state.disc_batch_stats),
        disc_opt_state=keep(disc_opt_state, state.disc_opt_state))
    l1 = jnp.mean(jnp.abs(video - recon))
    metrics = _metrics(video, recon, loss=l1, l1=l1, d_loss=d_loss, grad_norm=grad_norm,
                       **state_lib.finite_flags(ok, new_state.disc_params,
                                                new_state.disc_batch_stats))
    return new_state, metrics

  def step(state, batch, phase: str):
    video = batch["video"].astype(jnp.float32) / 255.0
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if phase == "discriminator":
      new_state, metrics = discriminator_step(state, video, key)
    else:
      new_state, metrics = generator_step(state, video, key, with_gan=phase == "generator_gan")
    return new_state.replace(step=state.step + 1), metrics

  return step


def perceptual_loss_fn(train_config):
  """LPIPS as a function of two image batches in [0, 1], or None (with a warning) when
  no weights are configured."""
  if train_config.perceptual_weight == 0:
    return None
  if not train_config.lpips_weights:
    warnings.warn("the perceptual loss is off: set vae_train.lpips_weights to the .npz from "
                  "`ardiff convert lpips` (torchvision VGG-16 + LPIPS v0.1 heads); training "
                  "uses the pixel loss (and the GAN) only", stacklevel=2)
    return None
  params = lpips.load_lpips_params(train_config.lpips_weights)
  module = lpips.LPIPS(rescale_inputs=train_config.lpips_rescale_inputs)
  return lambda images, other: module.apply({"params": params}, images, other)


def _models(config):
  model = ar_vae.vae_from_config(config.vae)
  disc_model = discriminator.PatchDiscriminator()
  return model, disc_model


def vae_state_init(model, disc_model, g_tx, d_tx, config):
  """key -> VAEState (for jit or eval_shape) and a function giving its shardings."""
  train_config = config.vae_train
  (example,) = model.example_inputs(train_config.clip_frames)
  video = jnp.zeros(example.shape, example.dtype)
  with_ema = train_config.ema_decay > 0

  def init(key):
    key_g, key_d, key_train = jax.random.split(key, 3)
    params = nn.meta.unbox(model.init(key_g, video))["params"]
    disc_vars = nn.meta.unbox(disc_model.init(key_d, video[:, 0]))
    return VAEState(step=jnp.zeros((), jnp.int32), params=params,
                    ema_params=params if with_ema else {}, opt_state=g_tx.init(params),
                    disc_params=disc_vars["params"], disc_batch_stats=disc_vars["batch_stats"],
                    disc_opt_state=d_tx.init(disc_vars["params"]),
                    rng=jax.random.key_data(key_train))

  def shardings(mesh):
    boxed_g = jax.eval_shape(model.init, jax.random.key(0), video)
    boxed_d = jax.eval_shape(disc_model.init, jax.random.key(0), video[:, 0])
    g = sharding.logical_shardings(boxed_g, mesh)["params"]
    d = sharding.logical_shardings(boxed_d, mesh)
    replicated = sharding.replicated(mesh)
    return VAEState(
        step=replicated, params=g, ema_params=g if with_ema else {},
        opt_state=state_lib.optimizer_shardings(g_tx, nn.meta.unbox(boxed_g)["params"], g, mesh),
        disc_params=d["params"], disc_batch_stats=d["batch_stats"],
        disc_opt_state=state_lib.optimizer_shardings(d_tx, nn.meta.unbox(boxed_d)["params"],
                                                     d["params"], mesh),
        rng=replicated)

  return init, shardings


def video_source(config):
  """The clips the VAE trains on: the dataset's videos cut into `clip_frames` runs."""
  videos = datasets.video_source(config.data)
  return pipeline.ClipSource(videos, config.vae_train.clip_frames, config.data.num_frames)


def _warm_start(state, init_from):
  """Copies generator params (its EMA, if it kept one) from another run's newest
  checkpoint (stage 3 from stage 2); parameters missing there (the temporal blocks) keep
  their fresh initialisation. This run's EMA, if any, starts from the same weights."""
  try:
    source = runs.load_run(init_from, "vae").variables["params"]
  except CheckpointError as error:
    raise CheckpointError(f"vae_train.init_from={init_from!r}: {error}") from error

  def pick(path, fresh):
    node = source
    for key in path:
      name = getattr(key, "key", key)
      if not isinstance(node, dict) or name not in node:
        return fresh
      node = node[name]
    if tuple(node.shape) != tuple(fresh.shape):
      raise CheckpointError(f"{jax.tree_util.keystr(path)}: shape {tuple(node.shape)} in "
                            f"{init_from}, model expects {tuple(fresh.shape)}")
    return jax.device_put(jnp.asarray(node, fresh.dtype), fresh.sharding)

  params = jax.tree_util.tree_map_with_path(pick, state.params)
  ema_params = jax.tree.map(jnp.copy, params) if state.ema_params else {}  # own buffers: the step donates both
  return state.replace(params=params, ema_params=ema_params)


def train(config, workdir, hooks=(), devices=None, logdir=None) -> loop.LoopResult:
  """`ardiff train-vae`: trains the AR-VAE stage the config describes."""
  train_config = config.vae_train
  devices = jax.devices() if devices is None else list(devices)
  config_lib.validate(config, num_devices=len(devices))
  mesh = sharding.make_mesh(config.mesh, devices)
  model, disc_model = _models(config)
  params_shape = nn.meta.unbox(jax.eval_shape(
      model.init, jax.random.key(0), *model.example_inputs(train_config.clip_frames)))["params"]
  g_tx, d_tx = make_optimizers(train_config, params_shape)
  init, shardings_of = vae_state_init(model, disc_model, g_tx, d_tx, config)
  shardings = shardings_of(mesh)
  abstract = state_lib.abstract_sharded(init, shardings)

  def init_state():
    state = state_lib.init_sharded(init, shardings, mesh, jax.random.key(config.seed))
    return _warm_start(state, train_config.init_from) if train_config.init_from else state

  # One jitted step per phase, picked on the host: a lax.switch over the three made
  # every step about 50x slower on XLA CPU (docs/results.md).
  step = make_vae_step(model, disc_model, g_tx, d_tx, train_config,
                       perceptual_loss_fn(train_config))
  jitted = {phase: jax.jit(functools.partial(step, phase=phase), in_shardings=(shardings, None),
                           out_shardings=(shardings, sharding.replicated(mesh)),
                           donate_argnums=0)
            for phase in ("generator", "generator_gan", "discriminator")}

  def step_fn(state, batch):
    return jitted[phase_of(int(jax.device_get(state.step)), train_config.disc_start)](state, batch)

  source = video_source(config)
  data_iterator = pipeline.global_batches(source, train_config.batch_size,
                                          seed=config.seed, fields=("video",))
  settings = loop.LoopSettings.from_config(train_config)
  return loop.run(workdir=workdir, mesh=mesh, init_state=init_state, abstract_state=abstract,
                  step_fn=step_fn, data_iterator=data_iterator, settings=settings, config=config,
                  hooks=hooks, desc="train AR-VAE", logdir=logdir, data_source=source)
