"""LPIPS (VGG-16 variant): the AR-VAE's perceptual loss.

The weights cannot be downloaded here, so they come from files the user supplies:
torchvision's ImageNet VGG-16 (`vgg16-397923af.pth`) and the LPIPS v0.1 linear heads
(`vgg.pth` from the lpips package). `ardiff convert lpips` turns them into one .npz that
`load_lpips_params` reads without torch.
"""

import pathlib

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ardiffusion_jax.errors import CheckpointError
from ardiffusion_jax.models import layers

# torchvision vgg16.features: conv layer indices, and the ReLU after which LPIPS taps.
VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
TAP_AFTER = (2, 7, 14, 21, 28)  # conv indices whose ReLU output is compared
POOL_AFTER = (2, 7, 14, 21)  # max-pool follows these convs' ReLUs
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)


class LPIPS(nn.Module):
  """Distance [N] between image batches [N, H, W, 3].

  `rescale_inputs` maps [0, 1] images to the [-1, 1] LPIPS expects; the authors feed
  [0, 1] straight in, which `rescale_inputs=False` reproduces.
  """
  rescale_inputs: bool = True

  def features(self, x):
    taps = []
    for index, channels in zip(VGG_CONVS, VGG_CHANNELS):
      x = nn.relu(layers.Conv(channels, (3, 3), padding="SAME", name=f"conv_{index}")(x))
      if index in TAP_AFTER:
        taps.append(x)
      if index in POOL_AFTER:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return taps

  @nn.compact
  def __call__(self, images, other):
    if self.rescale_inputs:
      images, other = images * 2.0 - 1.0, other * 2.0 - 1.0
    both = (jnp.concatenate([images, other]) - SHIFT) / SCALE
    taps = self.features(both)
    total = 0.0
    for k, tap in enumerate(taps):
      tap = tap / (jnp.sqrt(jnp.sum(jnp.square(tap), axis=-1, keepdims=True)) + 1e-10)
      a, b = jnp.split(tap, 2)
      weight = self.param(f"lin_{k}", nn.initializers.uniform(1.0), (tap.shape[-1],))
      total = total + jnp.mean(jnp.sum(jnp.square(a - b) * weight, axis=-1), axis=(1, 2))
    return total


def load_lpips_params(path) -> dict:
  """Reads the .npz written by `ardiff convert lpips`."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f"LPIPS weights {path} not found; make them with `ardiff convert "
                          "lpips --vgg vgg16-397923af.pth --lin vgg.pth --out FILE.npz`")
  params = {}
  with np.load(path) as data:
    for key in data.files:
      name, leaf = key.split("/")
      if leaf == "weight":
        params[name] = data[key]
      else:
        params.setdefault(name, {})[leaf] = data[key]
  expected = {f"conv_{i}" for i in VGG_CONVS} | {f"lin_{k}" for k in range(len(TAP_AFTER))}
  if set(params) != expected:
    raise CheckpointError(f"{path}: missing {sorted(expected - set(params))}, "
                          f"unexpected {sorted(set(params) - expected)}")
  return params
