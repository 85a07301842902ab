"""The AD sampler: cached == full for causal models, the s = 0 / s = S limits, the
authors' long-video window and its invalid settings, continuation and CFG."""

import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import pytest

from ardiffusion_jax import diffusion, sampling
from ardiffusion_jax.models import dit
from tests import support

STEPS = 6  # S: small so every s in {0, 1, 3, S} stays quick
TOKENS = 4


def _alphas():
  betas = diffusion.beta_schedule("scaled_linear", 1000, 1e-4, 0.02)
  return diffusion.alphas_cumprod(betas)


def _grid(kind="clean", steps=STEPS):
  return diffusion.ddim_grid(kind, _alphas(), steps)


def _model(variant="clean", num_frames=8, num_classes=0, **overrides):
  return dit.dit_from_config(ml_collections.ConfigDict(dict(variant=variant, size="tiny", num_frames=num_frames,
                                  tokens_per_frame=TOKENS, in_channels=4,
                                  num_classes=num_classes, context_dim=16, **overrides)))


def _variables(model, seed=0):
  """Random weights (the context tokens kept as initialised)."""
  return support.randomised(model, init_seed=seed, noise_seed=seed + 1, collections=("params",))


def _sample(model, variables, batch=2, seed=0, context=None, label=None, grid=None, **kwargs):
  plan, sample = sampling.make_sampler(model, grid or _grid(), **kwargs)
  out = jax.jit(sample, static_argnums=2)(variables, jax.random.key(seed), batch, context, label)
  return plan, np.asarray(out)


@pytest.mark.parametrize("num_frames", [4, 8])
@pytest.mark.parametrize("s", [0, 1, 3, STEPS])
def test_cached_equals_full_for_a_causal_model(num_frames, s):
  model = _model()
  variables = _variables(model)
  full_plan, full = _sample(model, variables, num_frames=num_frames, s=s, mode="full")
  cached_plan, cached = _sample(model, variables, num_frames=num_frames, s=s, mode="cached")
  np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)
  assert cached_plan.rows == full_plan.rows == STEPS + s * (num_frames - 1)
  if s:
    assert cached_plan.window == min(num_frames, -(-STEPS // s))
  else:
    assert cached_plan.cache_slots == 0  # one window over every frame: nothing to cache
  assert np.abs(full).max() > 0.1  # not a degenerate all-zero sample


@pytest.mark.parametrize("s", [0, 1, 3, STEPS])
def test_cached_equals_full_with_context_and_guidance(s):
  model = _model(num_classes=3)
  variables = _variables(model, seed=3)
  context = np.asarray(sampling.normalize_context(
      jax.random.normal(jax.random.key(9), (2, 2, TOKENS, 4))))
  kwargs = dict(num_frames=6, s=s, context_frames=2, cfg_scale=2.5,
                context=jnp.asarray(context), label=jnp.asarray([0, 2]))
  _, full = _sample(model, variables, mode="full", **kwargs)
  _, cached = _sample(model, variables, mode="cached", **kwargs)
  np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)
  # Continuation: the context frames come out bit-identical, in both modes.
  np.testing.assert_array_equal(full[:, :2], context)
  np.testing.assert_array_equal(cached[:, :2], context)
  # Guidance changes the generated frames.
  _, unguided = _sample(model, variables, mode="cached", **dict(kwargs, cfg_scale=1.0))
  assert np.abs(unguided[:, 2:] - cached[:, 2:]).max() > 1e-3


@pytest.mark.parametrize("mode", sampling.MODES)
def test_a_scanned_model_samples_like_its_unrolled_twin(mode):
  """The sampler runs stacked ([depth, ...]) layer weights through `dit.unrolled`."""
  scanned = _model(scan_layers=True, num_frames=5)
  variables = _variables(scanned)
  twin, twin_variables = dit.unrolled(scanned, variables)
  _, out = _sample(scanned, variables, num_frames=5, s=2, mode=mode)
  _, expected = _sample(twin, twin_variables, num_frames=5, s=2, mode=mode)
  np.testing.assert_array_equal(out, expected)


def test_stochastic_ddim_cached_equals_full():
  model = _model()
  variables = _variables(model)
  _, full = _sample(model, variables, num_frames=5, s=2, mode="full", eta=1.0)
  _, cached = _sample(model, variables, num_frames=5, s=2, mode="cached", eta=1.0)
  np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)
  _, deterministic = _sample(model, variables, num_frames=5, s=2, mode="cached")
  assert np.abs(deterministic - cached).max() > 1e-3


def _x0_and_eps(output, x, alpha, parameterization):
  """x̂0 and ε̂ from a model output, written out here rather than taken from
  `diffusion`: x_t = √ᾱ x0 + √(1-ᾱ) ε and v = √ᾱ ε - √(1-ᾱ) x0."""
  a, b = np.sqrt(alpha), np.sqrt(1.0 - alpha)
  if parameterization == "x0":
    return output, (x - a * output) / b
  if parameterization == "eps":
    return (x - b * output) / a, output
  return a * x - b * output, b * x + a * output  # v


@pytest.mark.parametrize("parameterization", ["x0", "eps", "v"])
def test_s0_is_plain_synchronous_ddim(parameterization):
  """Every frame at one level, moving together: DDIM on the model's own output, whatever
  it was trained to predict."""
  model = _model()
  variables = _variables(model)
  grid = _grid()
  batch, frames = 2, 5
  _, sampled = _sample(model, variables, batch=batch, num_frames=frames, s=0,
                       parameterization=parameterization)
  key_init, _ = jax.random.split(jax.random.key(0))
  x = np.asarray(sampling.frame_noise(key_init, batch, 0, frames, (TOKENS, 4)), np.float64)
  for k in range(1, STEPS + 1):
    t = jnp.full((batch, frames), grid.model_timesteps[k], jnp.int32)
    output = np.asarray(model.apply(variables, jnp.asarray(x, jnp.float32), t), np.float64)
    x0, eps = _x0_and_eps(output, x, grid.alphas[k], parameterization)
    x = np.sqrt(grid.alphas_prev[k]) * x0 + np.sqrt(1.0 - grid.alphas_prev[k]) * eps
  np.testing.assert_allclose(sampled, x, atol=2e-4, rtol=0)
  assert np.abs(x).max() > 0.1


@pytest.mark.parametrize("parameterization", ["eps", "v"])
def test_cached_equals_full_for_eps_and_v_models(parameterization):
  model = _model(num_classes=3)
  variables = _variables(model, seed=2)
  kwargs = dict(num_frames=6, s=2, cfg_scale=2.0, label=jnp.asarray([1, 2]),
                parameterization=parameterization)
  _, full = _sample(model, variables, mode="full", **kwargs)
  _, cached = _sample(model, variables, mode="cached", **kwargs)
  # x̂0 from ε̂ divides by √ᾱ (0.027 at t = 999, the first level): the modes' float
  # rounding, 1e-6 for x0 models, comes out up to ~37x larger.
  np.testing.assert_allclose(cached, full, atol=1e-4, rtol=0)
  _, as_x0 = _sample(model, variables, mode="cached", **dict(kwargs, parameterization="x0"))
  assert np.abs(as_x0 - cached).max() > 1e-2


def test_s0_self_conditioning_feeds_each_step_the_previous_estimate():
  """At s = 0 a self-conditioning DiT's first step reads zeros and every later step the
  x̂0 of the step before: DDIM written out here with that rule."""
  model = _model(self_condition=True)
  variables = _variables(model)
  grid = _grid()
  batch, frames = 2, 5
  _, sampled = _sample(model, variables, batch=batch, num_frames=frames, s=0)
  key_init, _ = jax.random.split(jax.random.key(0))
  noise = np.asarray(sampling.frame_noise(key_init, batch, 0, frames, (TOKENS, 4)), np.float64)

  def ddim(self_condition):
    x, estimate = noise, np.zeros_like(noise)
    for k in range(1, STEPS + 1):
      t = jnp.full((batch, frames), grid.model_timesteps[k], jnp.int32)
      x0 = np.asarray(model.apply(variables, jnp.asarray(x, jnp.float32), t,
                                  x0_estimate=jnp.asarray(estimate, jnp.float32)), np.float64)
      _, eps = _x0_and_eps(x0, x, grid.alphas[k], "x0")
      x = np.sqrt(grid.alphas_prev[k]) * x0 + np.sqrt(1.0 - grid.alphas_prev[k]) * eps
      estimate = x0 if self_condition else estimate
    return x

  expected = ddim(self_condition=True)
  np.testing.assert_allclose(sampled, expected, atol=2e-4, rtol=0)
  # The estimate is read: fed zeros at every step, the same weights sample otherwise.
  assert np.abs(ddim(self_condition=False) - expected).max() > 1e-2


@pytest.mark.parametrize("s", [0, 1, 3, STEPS])
def test_self_conditioning_cached_equals_full(s):
  """The estimate store changes only where the latents do, so both modes feed every
  frame the same estimate: with context, guidance, and past the trained window."""
  model = _model(num_classes=3, self_condition=True, num_frames=4)
  variables = _variables(model, seed=5)
  context = sampling.normalize_context(jax.random.normal(jax.random.key(6), (2, 2, TOKENS, 4)))
  for frames, context_frames in ((4, 0), (7, 2)):
    kwargs = dict(num_frames=frames, s=s, context_frames=context_frames, cfg_scale=2.0,
                  label=jnp.asarray([0, 2]), context=context if context_frames else None)
    _, full = _sample(model, variables, mode="full", **kwargs)
    _, cached = _sample(model, variables, mode="cached", **kwargs)
    np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)
    assert np.abs(full).max() > 0.1


def test_an_unknown_parameterization_is_refused():
  with pytest.raises(ValueError, match="unknown parameterization 'epsilon'"):
    sampling.make_sampler(_model(), _grid(), num_frames=4, s=1, parameterization="epsilon")
  with pytest.raises(ValueError, match="unknown parameterization 'epsilon'"):
    sampling.make_stream(_model(), _grid(), s=1, parameterization="epsilon")


def test_s_equal_S_finishes_each_frame_before_the_next_starts():
  model = _model()
  plan = sampling.make_plan(model, _grid(), num_frames=5, s=STEPS, mode="full")
  updates = plan.update_mask  # full mode: the window is the whole video
  assert np.all(updates.sum(axis=1) == 1)  # one frame moves per row
  moving = np.argmax(updates, axis=1)
  np.testing.assert_array_equal(moving, np.repeat(np.arange(5), STEPS))
  # Cached mode evaluates one frame per row and writes each finished frame once.
  cached = sampling.make_plan(model, _grid(), num_frames=5, s=STEPS, mode="cached")
  assert cached.window == 1
  np.testing.assert_array_equal(cached.commit_frame[cached.commit_frame >= 0], np.arange(4))


def test_official_long_video_window_follows_the_authors_schedule():
  """Spec §3.4: F=128, S=50, s=5 with a 16-frame window. The window moves one frame when
  the frame after it is due; in steady state it holds about 6 finished frames (context)
  and 10 in progress, and every frame gets its S updates inside the window."""
  model = _model("official", num_frames=16)
  plan = sampling.make_plan(model, _grid("official", 50), num_frames=128, s=5, mode="full")
  assert plan.rows == 50 + 5 * 127 and plan.window == 16
  assert plan.window_start[0] == 0 and plan.window_start[-1] == 112
  assert np.all(np.diff(plan.window_start) >= 0) and np.all(np.diff(plan.window_start) <= 1)
  updates = np.zeros(128, int)
  for r in range(plan.rows):
    updates[plan.window_start[r]:plan.window_start[r] + 16] += plan.update_mask[r]
  np.testing.assert_array_equal(updates, 50)
  steady = plan.update_mask[300]
  assert steady.sum() == 10 and not steady[:6].any()
  # Frames that are not moving in a steady row are fed t = 1, the authors' context step.
  assert np.all(plan.timesteps[300][~steady] == 1)


def test_official_invalid_long_video_settings_name_the_constraint():
  model = _model("official", num_frames=16)
  grid = _grid("official", 50)
  with pytest.raises(ValueError, match=r"s \* window >= S"):
    sampling.make_plan(model, grid, num_frames=128, s=3, mode="full")
  with pytest.raises(ValueError, match="s = 0 with more frames than the window"):
    sampling.make_plan(model, grid, num_frames=32, s=0, mode="full")
  with pytest.raises(ValueError, match="strictly causal"):
    sampling.make_plan(model, grid, num_frames=16, s=5, mode="cached")
  for scale in (-0.5, float("nan")):
    with pytest.raises(ValueError, match="guidance scale must be a number >= 0"):
      sampling.make_sampler(model, grid, num_frames=16, s=5, mode="full", cfg_scale=scale)


def test_clean_unconditional_refuses_guidance_and_says_why():
  with pytest.raises(ValueError, match="clean unconditional DiT was trained with none"):
    sampling.make_sampler(_model(), _grid(), num_frames=4, s=1, cfg_scale=2.0)


@pytest.mark.parametrize("num_frames", [4, 10])  # 10: the sliding window of a 4-frame model
def test_official_unconditional_guides_against_zero_context_tokens(num_frames):
  """The authors' CFG for unconditional models: the null branch sees all-zeros context
  tokens (through c_embedder). At w = 0 only that branch is left, so the guided sampler
  equals the unguided one on a model whose context_emb is zero."""
  model = _model("official", num_frames=4)
  variables = _variables(model)
  grid = _grid("official", 4)
  zeroed = dict(variables, constants={"context_emb": jnp.zeros_like(
      variables["constants"]["context_emb"])})
  x = jax.random.normal(jax.random.key(3), (2, 4, TOKENS, 4))
  t = jnp.array([[1, 200, 400, 999], [0, 0, 500, 700]])
  null = jnp.full((2,), model.null_label)
  np.testing.assert_array_equal(np.asarray(model.apply(variables, x, t, null)),
                                np.asarray(model.apply(zeroed, x, t)))
  kwargs = dict(num_frames=num_frames, s=2, mode="full", grid=grid)
  _, unguided = _sample(model, variables, **kwargs)
  _, null_only = _sample(model, variables, cfg_scale=0.0, **kwargs)
  _, zero_context = _sample(model, zeroed, **kwargs)
  np.testing.assert_allclose(null_only, zero_context, atol=1e-5, rtol=0)
  _, guided = _sample(model, variables, cfg_scale=2.0, **kwargs)
  assert np.all(np.isfinite(guided)) and np.abs(guided - unguided).max() > 1e-3


def test_official_full_mode_runs_a_long_video_in_its_window():
  model = _model("official", num_frames=4)
  variables = _variables(model)
  grid = _grid("official", 4)
  plan, out = _sample(model, variables, num_frames=10, s=2, mode="full", grid=grid)
  assert plan.window == 4 and out.shape == (2, 10, TOKENS, 4)
  assert np.all(np.isfinite(out))


def test_official_without_the_leak_can_use_the_cache():
  model = _model("official", num_frames=6, context_sees_video=False)
  variables = _variables(model)
  _, full = _sample(model, variables, num_frames=6, s=2, mode="full", grid=_grid("official", 5))
  _, cached = _sample(model, variables, num_frames=6, s=2, mode="cached", grid=_grid("official", 5))
  np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)


def test_a_bidirectional_dit_samples_in_full_mode_only():
  """Table 3's "− temporal causal attention" row: the cached sampler and streaming refuse
  it before anything compiles; full mode runs it, past its window with the sliding
  window, and its frames depend on later ones."""
  model = _model(num_frames=4, temporal_attention="bidirectional")
  with pytest.raises(ValueError, match="bidirectionally.*mode='full'"):
    sampling.make_plan(model, _grid(), num_frames=4, s=2, mode="cached")
  with pytest.raises(ValueError, match="bidirectionally"):
    sampling.make_stream(model, _grid(), s=2, max_frames=4)
  variables = _variables(model)
  plan, short = _sample(model, variables, num_frames=4, s=2, mode="full")
  assert plan.attention_window is None and plan.window == 4
  causal = _model(num_frames=4)
  _, causal_out = _sample(causal, variables, num_frames=4, s=2, mode="full")
  assert np.abs(short - causal_out).max() > 1e-3
  plan, long = _sample(model, variables, num_frames=10, s=2, mode="full")
  assert plan.window == 4 and plan.attention_window is None and plan.window_start.max() == 6
  assert long.shape == (2, 10, TOKENS, 4) and np.all(np.isfinite(long))


@pytest.mark.parametrize("s,token_patch", [(1, 1), (3, 1), (3, 2)])
def test_rolling_cache_matches_full_past_the_trained_window(s, token_patch):
  """Clean variant, 10 frames from a 4-frame model: both modes use the rolling window
  (each frame sees the 3 before it), the cache is a 4-slot ring (of 2 transformer tokens
  a frame with token_patch = 2)."""
  model = _model(num_frames=4, token_patch=token_patch)
  variables = _variables(model)
  context = sampling.normalize_context(jax.random.normal(jax.random.key(4), (2, 5, TOKENS, 4)))
  for context_frames in (0, 5):
    kwargs = dict(num_frames=10, s=s, context_frames=context_frames,
                  context=context if context_frames else None)
    _, full = _sample(model, variables, mode="full", **kwargs)
    plan, cached = _sample(model, variables, mode="cached", **kwargs)
    assert plan.cache_slots == 4
    np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)
