"""Beta schedules, per-frame q_sample, parameterisations, the DDIM update and grids."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ardiffusion_jax import diffusion, timesteps

ALPHAS = diffusion.alphas_cumprod(diffusion.beta_schedule("scaled_linear"))


def test_scaled_linear_matches_the_authors_reference_values():
  # The LDM schedule the authors call "linear" (their diffusion.py).
  for t, value in [(0, 0.9999), (1, 0.999797), (250, 0.8200), (500, 0.3313), (750, 0.03815),
                   (981, 1.049e-3), (999, 7.334e-4)]:
    assert ALPHAS[t] == pytest.approx(value, rel=2e-4)


@pytest.mark.parametrize("name", diffusion.BETA_SCHEDULES)
def test_schedules_are_valid(name):
  betas = diffusion.beta_schedule(name, 1000)
  alphas = diffusion.alphas_cumprod(betas)
  assert betas.dtype == np.float64 and betas.shape == (1000,)
  assert np.all((betas > 0) & (betas < 1))
  assert np.all(np.diff(alphas) < 0) and 0 < alphas[-1] < alphas[0] < 1


def test_unknown_schedule_raises():
  with pytest.raises(ValueError, match="unknown beta schedule"):
    diffusion.beta_schedule("quadratic")


def test_q_sample_uses_one_timestep_per_frame():
  key_x, key_n = jax.random.split(jax.random.key(0))
  x0 = jax.random.normal(key_x, (2, 3, 32, 4))
  noise = jax.random.normal(key_n, x0.shape)
  t = jnp.array([[0, 500, 999], [10, 10, 700]])
  x_t = diffusion.q_sample(x0, t, noise, ALPHAS)
  for b in range(2):
    for f in range(3):
      a = ALPHAS[int(t[b, f])]
      np.testing.assert_allclose(x_t[b, f], np.sqrt(a) * x0[b, f] + np.sqrt(1 - a) * noise[b, f],
                                 rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parameterization", ["x0", "eps", "v"])
def test_parameterisations_round_trip(parameterization):
  key_x, key_n = jax.random.split(jax.random.key(1))
  x0 = jax.random.normal(key_x, (4, 8))
  noise = jax.random.normal(key_n, (4, 8))
  alpha = jnp.float32(ALPHAS[300])
  x_t = jnp.sqrt(alpha) * x0 + jnp.sqrt(1 - alpha) * noise
  target = diffusion.training_target(x0, noise, alpha, parameterization)
  np.testing.assert_allclose(diffusion.prediction_to_x0(target, x_t, alpha, parameterization),
                             x0, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(diffusion.eps_from_x0(x_t, x0, alpha), noise, rtol=1e-4, atol=1e-4)
  v = diffusion.v_from_x0_eps(x0, noise, alpha)
  np.testing.assert_allclose(diffusion.eps_from_v(x_t, v, alpha), noise, rtol=1e-4, atol=1e-4)


def test_ddim_update_with_true_x0_lands_on_the_next_level():
  key_x, key_n = jax.random.split(jax.random.key(2))
  x0 = jax.random.normal(key_x, (3, 16))
  noise = jax.random.normal(key_n, (3, 16))
  a_t, a_prev = ALPHAS[700], ALPHAS[400]
  x_t = np.sqrt(a_t) * x0 + np.sqrt(1 - a_t) * noise
  x_prev = diffusion.ddim_update(x_t, x0, a_t, a_prev)
  np.testing.assert_allclose(x_prev, np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * noise,
                             rtol=1e-4, atol=1e-5)
  # Equal levels make the step an identity (not-started frames in the AD sampler).
  np.testing.assert_allclose(diffusion.ddim_update(x_t, x0 * 0.3, a_t, a_t), x_t, atol=1e-5)


def test_ddim_update_with_eta():
  key_x, key_n, key_z = jax.random.split(jax.random.key(3), 3)
  x_t, x0, z = (jax.random.normal(k, (5,)) for k in (key_x, key_n, key_z))
  a_t, a_prev, eta = ALPHAS[800], ALPHAS[600], 0.7
  eps = (x_t - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
  sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
  expected = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma**2) * eps + sigma * z
  np.testing.assert_allclose(diffusion.ddim_update(x_t, x0, a_t, a_prev, eta=eta, noise=z),
                             expected, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="noise"):
    diffusion.ddim_update(x_t, x0, a_t, a_prev, eta=eta)


def test_official_grid_reproduces_the_authors_arrays():
  num_steps = 50
  grid = diffusion.official_ddim_grid(ALPHAS, num_steps)
  # Their make_ddim_timesteps / make_ddim_sampling_parameters, built straight from their formulas.
  ddim_timesteps = np.arange(0, 1000, 20) + 1
  ddim_alphas = np.append(ALPHAS[ddim_timesteps], ALPHAS[999])
  ddim_alphas_prev = np.concatenate([[ALPHAS[0]], ALPHAS[ddim_timesteps[:-1]], [ALPHAS[999]]])
  step_template = np.concatenate([[999], ddim_timesteps[::-1]])
  np.testing.assert_array_equal(grid.model_timesteps, step_template)
  assert list(grid.model_timesteps[:3]) == [999, 981, 961] and grid.model_timesteps[-1] == 1
  for k in range(num_steps + 1):
    assert grid.alphas[k] == ddim_alphas[num_steps - k]
    assert grid.alphas_prev[k] == ddim_alphas_prev[num_steps - k]
  assert grid.context_timestep == 1 and grid.num_steps == num_steps
  with pytest.raises(ValueError, match="divide"):
    diffusion.official_ddim_grid(ALPHAS, 30)


@pytest.mark.parametrize("num_steps", [1, 30, 50, 1000])
def test_clean_grid_is_a_consistent_chain(num_steps):
  grid = diffusion.clean_ddim_grid(ALPHAS, num_steps)
  assert grid.model_timesteps[0] == grid.model_timesteps[1] == 999
  assert np.all(np.diff(grid.model_timesteps[1:]) < 0)
  assert grid.alphas[0] == grid.alphas_prev[0]  # not started: identity
  np.testing.assert_array_equal(grid.alphas[2:], grid.alphas_prev[1:-1])
  assert grid.alphas_prev[-1] == 1.0 and grid.context_timestep == 0


def test_grid_timesteps_follow_the_ad_matrix():
  grid = diffusion.official_ddim_grid(ALPHAS, 10)
  step_index, update_mask = timesteps.ad_step_matrix(3, 10, 10)
  model_t = grid.timesteps_for(step_index, update_mask)
  assert list(model_t[0]) == [901, 999, 999]  # frame 0 starts, the others wait at pure noise
  assert list(model_t[10]) == [1, 901, 999]  # frame 0 finished: fed as context
  assert np.all(model_t[-1] == 1)
  with pytest.raises(ValueError, match="unknown DDIM grid"):
    diffusion.ddim_grid("fancy", ALPHAS)


def test_loss_weights_clip_the_snr_of_the_x0_error():
  alphas = diffusion.alphas_cumprod(diffusion.beta_schedule("scaled_linear"))
  snr = alphas / (1 - alphas)
  assert diffusion.loss_weights(alphas, "x0", ()) is None  # the authors' unweighted loss
  x0 = diffusion.loss_weights(alphas, "x0", (1, 5))
  np.testing.assert_allclose(x0.mean(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(x0 / x0[0], np.clip(snr, 1, 5) / 5, rtol=1e-5)
  assert x0[0] == x0.max() and x0[-1] == x0.min() and np.all(np.diff(x0) <= 0)
  # Min-SNR-gamma vanishes at high noise; the floor of 1 keeps it.
  assert diffusion.loss_weights(alphas, "x0", (0, 5))[-1] < 0.01 * x0[-1]
  # The same weighting of the x0 error, written for the eps and v targets: an eps error
  # e is an x0 error e / SNR, a v error e an x0 error e / (1 + SNR).
  np.testing.assert_allclose(diffusion.loss_weights(alphas, "eps", (1, 5)) * snr, x0, rtol=1e-5)
  np.testing.assert_allclose(diffusion.loss_weights(alphas, "v", (1, 5)) * (1 + snr), x0,
                             rtol=1e-5)
