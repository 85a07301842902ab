"""The AR-VAE step's reconstruction loss: the pixel loss, its chroma term and the
latents' motion term."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ardiffusion_jax.train import vae as train_vae


class _FixedImage:
  """Stands in for the AR-VAE: every frame reconstructs as the one image in params, and
  its posterior mean is its own pixels (4 channels a token)."""

  def apply(self, variables, video, key, method=None):
    return (jnp.broadcast_to(variables["params"]["image"], video.shape), None,
            video.reshape(video.shape[:2] + (-1, 4)))


def _metrics(video, image, pixel_loss="l2", chroma_weight=0.0, **train):
  train_config = ml_collections.ConfigDict(dict(
      pixel_loss=pixel_loss, proxy_weight=0.0, chroma_weight=chroma_weight, ema_decay=0.0,
      perceptual_weight=1.0, disc_weight=0.1, **train))
  tx = optax.sgd(0.0)
  step_fn = train_vae.make_vae_step(_FixedImage(), None, tx, tx, train_config)
  params = {"image": jnp.asarray(image)}
  state = train_vae.VAEState(step=jnp.zeros((), jnp.int32), params=params, ema_params={},
                             opt_state=tx.init(params), disc_params={}, disc_batch_stats={},
                             disc_opt_state=tx.init({}),
                             rng=jax.random.key_data(jax.random.key(0)))
  _, metrics = step_fn(state, {"video": jnp.asarray(video)}, phase="generator")
  return {key: float(value) for key, value in metrics.items()}


def _loss(video, image, pixel_loss, chroma_weight):
  return _metrics(video, image, pixel_loss, chroma_weight)["loss"]


def test_chroma_is_each_pixels_colour_less_its_grey_level():
  grey = jnp.full((2, 2, 3), 0.4)
  np.testing.assert_allclose(train_vae.chroma(grey), 0.0, atol=1e-7)
  # Two colours of the same grey level have different chroma; a brighter copy the same.
  pink, teal = jnp.array([0.9, 0.5, 0.6]), jnp.array([0.3, 0.8, 0.9])
  assert float(jnp.abs(train_vae.chroma(pink) - train_vae.chroma(teal)).max()) > 0.3
  np.testing.assert_allclose(train_vae.chroma(pink + 0.1), train_vae.chroma(pink), atol=1e-6)


@pytest.mark.parametrize("pixel_loss", ["l2", "l1"])
def test_the_chroma_term_adds_its_weight_times_the_pixel_loss_on_chroma(pixel_loss):
  rng = np.random.default_rng(0)
  video = rng.integers(0, 256, (2, 1, 8, 8, 3), dtype=np.uint8)
  image = rng.uniform(0, 1, (8, 8, 3)).astype(np.float32)
  target = video.astype(np.float32) / 255.0
  error = np.square if pixel_loss == "l2" else np.abs
  chroma = lambda x: x - x.mean(-1, keepdims=True)
  plain = _loss(video, image, pixel_loss, 0.0)
  np.testing.assert_allclose(plain, error(target - image).mean(), rtol=1e-5)
  weighted = _loss(video, image, pixel_loss, 2.5)
  np.testing.assert_allclose(weighted - plain, 2.5 * error(chroma(target) - chroma(image)).mean(),
                             rtol=1e-4)
  # A grey reconstruction of a grey video: no chroma error, whatever the weight.
  grey_video = np.repeat(video[..., :1], 3, axis=-1)
  grey_image = np.repeat(image[..., :1], 3, axis=-1)
  np.testing.assert_allclose(_loss(grey_video, grey_image, pixel_loss, 2.5),
                             _loss(grey_video, grey_image, pixel_loss, 0.0), rtol=1e-6)


def _paths(kind):
  """[2, 6, 8, 4] token paths: straight lines at a constant step, or a zigzag of the
  same step length."""
  rng = np.random.default_rng(1)
  start, step = rng.normal(size=(2, 1, 8, 4)), 0.05 * rng.normal(size=(2, 1, 8, 4))
  t = np.arange(6).reshape(1, 6, 1, 1)
  offsets = t if kind == "straight" else (t % 2)
  return jnp.asarray(start + offsets * step, jnp.float32)


def test_the_motion_penalty_scores_bends_not_straight_paths():
  straight, zigzag = (train_vae.motion_penalty(_paths(kind)) for kind in ("straight", "zigzag"))
  # Straight lines bend only as the unit sphere bends them; a zigzag turns every frame.
  assert float(straight) < 0.01 * float(zigzag)
  # Tokens are unit vectors, so the latents' scale does not matter.
  np.testing.assert_allclose(train_vae.motion_penalty(3.0 * _paths("zigzag")), zigzag, rtol=1e-5)


def test_the_motion_term_adds_its_weight_times_the_penalty():
  rng = np.random.default_rng(2)
  video = rng.integers(0, 256, (2, 4, 4, 4, 3), dtype=np.uint8)  # 4 frames, 12 tokens a frame
  image = rng.uniform(0, 1, (4, 4, 3)).astype(np.float32)
  plain = _metrics(video, image)
  weighted = _metrics(video, image, motion_weight=0.3)
  penalty = float(train_vae.motion_penalty(
      jnp.asarray(video, jnp.float32).reshape((2, 4, -1, 4)) / 255.0))
  assert penalty > 0 and plain["motion"] == 0.0
  assert weighted["motion"] == pytest.approx(penalty, rel=1e-4)
  assert weighted["loss"] - plain["loss"] == pytest.approx(0.3 * penalty, rel=1e-4)
