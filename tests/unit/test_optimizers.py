"""Both trainers' optimizers follow `train.state.learning_rate_schedule`."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ardiffusion_jax.train import state as state_lib
from ardiffusion_jax.train import vae as train_vae


def _train_config(**changes):
  fields = dict(lr=1e-2, lr_schedule="cosine", lr_final=1e-4, warmup_steps=4, steps=20,
                b1=0.9, b2=0.99, weight_decay=0.0, grad_clip=1e9, disc_lr=1e-3,
                trainable="all")
  fields.update(changes)
  return ml_collections.ConfigDict(fields)


def _step_sizes(tx, steps):
  """|update| of one parameter under a constant gradient: Adam's normalised step, so
  (after its first steps) the learning rate of that step."""
  params = {"w": jnp.ones(())}
  opt_state, sizes = tx.init(params), []
  for _ in range(steps):
    updates, opt_state = tx.update({"w": jnp.ones(())}, opt_state, params)
    sizes.append(abs(float(updates["w"])))
  return np.array(sizes)


@pytest.mark.parametrize("trainer", ["dit", "vae"])
def test_optimizer_warms_up_then_decays_along_the_schedule(trainer):
  config = _train_config()
  if trainer == "dit":
    tx = state_lib.make_optimizer(config)
  else:
    tx, _ = train_vae.make_optimizers(config, {"w": jnp.ones(())})
  sizes = _step_sizes(tx, config.steps)
  schedule = state_lib.learning_rate_schedule(config)
  expected = np.array([float(schedule(i)) for i in range(config.steps)])
  assert sizes[0] == 0.0  # the warmup starts at zero
  np.testing.assert_allclose(sizes, expected, rtol=1e-3, atol=1e-8)
  assert sizes[config.warmup_steps] == pytest.approx(config.lr, rel=1e-3)
  assert sizes[-1] < 0.05 * config.lr  # cosine decay towards lr_final


def test_constant_schedule_keeps_the_learning_rate():
  config = _train_config(lr_schedule="constant", warmup_steps=0)
  tx, _ = train_vae.make_optimizers(config, {"w": jnp.ones(())})
  np.testing.assert_allclose(_step_sizes(tx, 5), config.lr, rtol=1e-3)


def test_a_constant_tokenizer_rate_keeps_the_optimizer_state_of_earlier_runs():
  # Runs saved before vae_train had a schedule hold AdamW's state for a float rate.
  params = {"w": jnp.ones(())}
  config = _train_config(lr_schedule="constant", warmup_steps=0)
  tx, _ = train_vae.make_optimizers(config, params)
  earlier = optax.chain(optax.identity(), optax.clip_by_global_norm(config.grad_clip),
                        optax.adamw(config.lr, b1=config.b1, b2=config.b2, mask={"w": True}))
  assert (jax.tree.structure(tx.init(params)) == jax.tree.structure(earlier.init(params)))


def test_wsd_schedule_holds_the_peak_then_decays_over_its_last_steps():
  config = _train_config(lr_schedule="wsd", warmup_steps=4, steps=20, decay_steps=6)
  tx, _ = train_vae.make_optimizers(config, {"w": jnp.ones(())})
  sizes = _step_sizes(tx, config.steps)
  np.testing.assert_allclose(sizes[4:14], config.lr, rtol=1e-3)  # stable until step 14
  assert np.all(np.diff(sizes[14:]) < 0)  # then a cosine decay
  assert sizes[-1] < 0.1 * config.lr and sizes[-1] >= config.lr_final * 0.999
