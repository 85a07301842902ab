"""LPIPS: the network on random weights, the converter's key checks, and the VAE hook."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ardiffusion_jax import cli
from ardiffusion_jax.convert.lpips import params_from_torch_state
from ardiffusion_jax.errors import CheckpointError
from ardiffusion_jax.eval.nets import lpips
from ardiffusion_jax.train import vae as train_vae


def _torch_style_states(seed=0):
  """Random state dicts with torchvision's and lpips' exact key names and shapes."""
  rng = np.random.default_rng(seed)
  vgg, in_channels = {}, 3
  for index, channels in zip(lpips.VGG_CONVS, lpips.VGG_CHANNELS):
    vgg[f"features.{index}.weight"] = rng.normal(0, (2 / (9 * in_channels)) ** 0.5,
                                                 (channels, in_channels, 3, 3)).astype(np.float32)
    vgg[f"features.{index}.bias"] = np.zeros(channels, np.float32)
    in_channels = channels
  vgg["classifier.0.weight"] = np.zeros((4, 4), np.float32)  # ignored, as in torchvision files
  lin = {f"lin{k}.model.1.weight": rng.uniform(0, 1, (1, c, 1, 1)).astype(np.float32)
         for k, c in enumerate([64, 128, 256, 512, 512])}
  return vgg, lin


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  folder = tmp_path_factory.mktemp("lpips")
  vgg, lin = _torch_style_states()
  np.savez(folder / "vgg16.npz", **vgg)
  np.savez(folder / "lin.npz", **lin)
  out = folder / "lpips_vgg.npz"
  assert cli.main(["convert", "lpips", "--vgg", str(folder / "vgg16.npz"), "--lin",
                   str(folder / "lin.npz"), "--out", str(out)]) == 0
  return out


def test_distance_properties_with_random_weights(weights):
  params = lpips.load_lpips_params(weights)
  module = lpips.LPIPS()
  a = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  b = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  distance = jax.jit(lambda x, y: module.apply({"params": params}, x, y))
  same, ab, ba = distance(a, a), distance(a, b), distance(b, a)
  assert same.shape == (2,)
  np.testing.assert_allclose(same, 0.0, atol=1e-6)
  assert np.all(ab > 1e-3)
  np.testing.assert_allclose(ab, ba, rtol=1e-5)
  assert np.all(distance(a, a * 0.9 + 0.05) < ab)  # a small change is closer than noise


def test_renamed_key_and_wrong_shape_are_named():
  vgg, lin = _torch_style_states()
  vgg["features.99.weight"] = vgg.pop("features.5.weight")
  lin["lin2.model.1.weight"] = lin["lin2.model.1.weight"][:, :10]
  with pytest.raises(CheckpointError) as error:
    params_from_torch_state(vgg, lin)
  message = str(error.value)
  assert "missing features.5.weight" in message
  assert "lin2.model.1.weight: shape (1, 10, 1, 1), expected (1, 256, 1, 1)" in message


def test_missing_file_says_what_to_supply(tmp_path):
  with pytest.raises(CheckpointError, match="ardiff convert lpips"):
    lpips.load_lpips_params(tmp_path / "nope.npz")


def test_vae_training_uses_lpips_when_configured_and_warns_otherwise(weights):
  from ardiffusion_jax import config as config_lib
  config = config_lib.load_config("configs/synthetic.py:vae_smoke")
  with pytest.warns(UserWarning, match="perceptual loss is off"):
    assert train_vae.perceptual_loss_fn(config.vae_train) is None
  config.vae_train.lpips_weights = str(weights)
  fn = train_vae.perceptual_loss_fn(config.vae_train)
  x = jnp.full((1, 32, 32, 3), 0.5)
  assert float(fn(x, x)[0]) == pytest.approx(0.0, abs=1e-6)
