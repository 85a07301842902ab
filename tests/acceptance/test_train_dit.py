"""The DiT train step: sharded over 8 fake devices it matches one device; it learns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ardiffusion_jax import config as config_lib
from ardiffusion_jax.models import dit
from ardiffusion_jax.train import dit as train_dit
from ardiffusion_jax.train import sharding
from ardiffusion_jax.train import state as state_lib


def _config(**overrides):
  config = config_lib.load_config("configs/synthetic.py:smoke",
                                  [f"{k}={v!r}" for k, v in overrides.items()])
  return config


def _latents(config, seed=0, batch=None):
  batch = batch or config.train.batch_size
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, config.dit.num_frames, 32, 4)).astype(np.float32)
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  labels = rng.integers(0, config.dit.num_classes, size=batch).astype(np.int32)
  return {"latents": x, "label": labels}


def _run(config, devices, mesh_axes, steps=3):
  config.mesh.update(mesh_axes)
  mesh = sharding.make_mesh(config.mesh, devices)
  model = dit.dit_from_config(config.dit)
  tx = state_lib.make_optimizer(config.train)
  example = (jnp.zeros((1, config.dit.num_frames, 32, 4)),
             jnp.zeros((1, config.dit.num_frames), jnp.int32), jnp.zeros((1,), jnp.int32))
  state, shardings = state_lib.create_train_state(model, tx, mesh, jax.random.key(0), example)
  with sharding.mesh_context(mesh):
    step = train_dit.jit_train_step(model, tx, config, shardings, mesh)
    losses = []
    for i in range(steps):
      state, metrics = step(state, sharding.global_batch(_latents(config, seed=i), mesh))
      losses.append(float(metrics["loss"]))
  return state, losses, shardings


@pytest.mark.parametrize("mesh_axes", [dict(data=8, fsdp=1, tensor=1),
                                       dict(data=2, fsdp=4, tensor=1),
                                       dict(data=2, fsdp=2, tensor=2)])
def test_sharded_steps_match_one_device(mesh_axes):
  # The tiny preset over every latent token: the demo's wider DiT has parameters whose
  # first gradients sit at float rounding, which Adam turns into full steps of either sign
  # under another reduction order, so the match would compare rounding, not sharding.
  config = _config(**{"train.batch_size": 8, "dit.num_classes": 3, "dit.scan_layers": True,
                      "dit.size": "tiny", "dit.token_patch": 1})
  single, single_losses, _ = _run(config, jax.devices()[:1], dict(data=1, fsdp=1, tensor=1))
  sharded, sharded_losses, shardings = _run(config, jax.devices(), mesh_axes)
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
  # Optimizer moments live exactly where their parameters do.
  adam = sharded.opt_state[1][0]
  for moments in (adam.mu, adam.nu):
    for param, moment in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(moments)):
      assert moment.sharding == param.sharding
  if mesh_axes["fsdp"] > 1:
    kernel = sharded.params["blocks"]["mlp"]["fc1"]["kernel"]  # [layers, embed, mlp]
    assert kernel.sharding.spec[1] == "fsdp"
    assert kernel.addressable_shards[0].data.shape[1] == kernel.shape[1] // mesh_axes["fsdp"]


def test_gradient_accumulation_equals_the_full_batch():
  config = _config(**{"train.batch_size": 8})
  full, full_losses, _ = _run(config, jax.devices()[:1], dict(data=1, fsdp=1, tensor=1), steps=2)
  config.train.grad_accum = 4
  accum, accum_losses, _ = _run(config, jax.devices()[:1], dict(data=1, fsdp=1, tensor=1), steps=2)
  np.testing.assert_allclose(accum_losses, full_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(accum.params), jax.tree.leaves(full.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)


def test_ema_warmup_follows_the_authors_formula():
  decays = [float(state_lib.ema_decay(jnp.int32(n), 0.9999)) for n in (0, 1, 10, 10**6)]
  np.testing.assert_allclose(decays, [0.1, 2 / 11, 11 / 20, 0.9999], rtol=1e-6)


def test_the_dit_learns_and_logs_loss_per_frame():
  config = _config(**{"train.batch_size": 16, "train.lr": 2e-3, "train.warmup_steps": 5,
                      "train.steps": 100, "train.lr_schedule": "constant"})
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  model = dit.dit_from_config(config.dit)
  tx = state_lib.make_optimizer(config.train)
  example = (jnp.zeros((1, 8, 32, 4)), jnp.zeros((1, 8), jnp.int32), jnp.zeros((1,), jnp.int32))
  state, shardings = state_lib.create_train_state(model, tx, mesh, jax.random.key(0), example)
  # A learnable dataset: one fixed clip, so x0 is predictable at every noise level.
  fixed = _latents(config, seed=0, batch=1)
  batch = {k: np.concatenate([v] * 16) for k, v in fixed.items()}
  with sharding.mesh_context(mesh):
    step = train_dit.jit_train_step(model, tx, config, shardings, mesh)
    losses = []
    for _ in range(100):
      state, metrics = step(state, sharding.global_batch(batch, mesh))
      losses.append(float(metrics["loss"]))
  assert metrics["loss_per_frame"].shape == (8,)
  assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])


def test_snr_weighting_scales_each_frames_error_by_its_level():
  from ardiffusion_jax import diffusion
  config = _config()
  model = dit.dit_from_config(config.dit)
  batch = _latents(config, batch=1)
  draws = train_dit.draw_noise(jax.random.key(3), batch, config.diffusion)
  variables = model.init(jax.random.key(0), batch["latents"], draws["t"], batch["label"])
  loss = lambda diffusion_config: train_dit.dit_loss(
      variables["params"], variables.get("constants", {}), model, batch, draws,
      diffusion_config, label_dropout=0.0, self_condition_rate=0.0)
  plain, plain_per_frame = loss(config.diffusion)
  weighted_config = config.diffusion.copy_and_resolve_references()
  weighted_config.loss_snr_clip = (1.0, 5.0)
  weighted, weighted_per_frame = loss(weighted_config)
  weights = diffusion.loss_weights(diffusion.alphas_from_config(config.diffusion), "x0", (1, 5))
  expected = np.asarray(plain_per_frame) * weights[np.asarray(draws["t"][0])]
  np.testing.assert_allclose(weighted_per_frame, expected, rtol=1e-5)
  np.testing.assert_allclose(weighted, expected.mean(), rtol=1e-5)
  assert not np.allclose(weighted, plain)


def test_plan_reports_fsdp_sharded_state_memory():
  from ardiffusion_jax.train import plan
  results = {}
  for fsdp in (1, 4):
    config = _config(**{"train.batch_size": 8, "mesh.data": 8 // fsdp, "mesh.fsdp": fsdp})
    results[fsdp] = plan.plan_train_step(config, jax.devices())
  assert results[4]["params"] == results[1]["params"]
  # params + EMA + Adam moments, sharded 4 ways: a quarter of the bytes (small leaves that
  # do not divide stay replicated, hence the tolerance).
  ratio = results[4]["argument_bytes"] / results[1]["argument_bytes"]
  assert 0.25 <= ratio < 0.32
  full_state = 4 * 4 * results[1]["params"]  # four float32 copies
  assert results[1]["argument_bytes"] >= full_state
  assert results[4]["peak_bytes"] >= results[4]["argument_bytes"]


def test_self_conditioning_trains_on_the_models_own_estimate_without_its_gradient():
  """Examples drawn under the rate read the first pass's x̂0 (here an eps model's, so
  converted), the rest zeros; the gradient is that of the second pass alone."""
  from ardiffusion_jax import diffusion
  config = _config(**{"dit.self_condition": True, "diffusion.parameterization": "eps"})
  model = dit.dit_from_config(config.dit)
  batch = _latents(config, batch=4)
  draws = train_dit.draw_noise(jax.random.key(3), batch, config.diffusion)
  draws["self_condition"] = jnp.asarray([0.1, 0.9, 0.3, 0.7])  # rate 0.5: examples 0 and 2
  variables = model.init(jax.random.key(0), batch["latents"], draws["t"], batch["label"])
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape),
                        variables["params"])
  loss = lambda p: train_dit.dit_loss(p, {}, model, batch, draws, config.diffusion,
                                      label_dropout=0.0, self_condition_rate=0.5)[0]

  alphas = diffusion.alphas_from_config(config.diffusion)
  latents = jnp.asarray(batch["latents"])
  alpha = diffusion.per_frame(alphas, draws["t"], 4)
  x_t = diffusion.q_sample(latents, draws["t"], draws["noise"], alphas)
  eps = model.apply({"params": params}, x_t, draws["t"], batch["label"])
  first = diffusion.x0_from_eps(x_t, eps, alpha)
  estimate = first * jnp.asarray([1.0, 0.0, 1.0, 0.0])[:, None, None, None]

  def by_hand(p):  # the estimate a constant
    out = model.apply({"params": p}, x_t, draws["t"], batch["label"], x0_estimate=estimate)
    return jnp.mean(jnp.square(out - draws["noise"]))

  np.testing.assert_allclose(loss(params), by_hand(params), rtol=1e-5)
  grads, expected = jax.grad(loss)(params), jax.grad(by_hand)(params)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  # Estimates reach the loss: zeros everywhere give another value.
  zeros = lambda p: jnp.mean(jnp.square(
      model.apply({"params": p}, x_t, draws["t"], batch["label"]) - draws["noise"]))
  assert abs(float(zeros(params)) - float(by_hand(params))) > 1e-3 * float(by_hand(params))
