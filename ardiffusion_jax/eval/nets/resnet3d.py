"""The 3D ResNet-50 of FID-vid (Kensho Hara's 3D-ResNets-PyTorch, Kinetics-400,
shortcut B), as AR-Diffusion's metric toolkit uses it: 2048-d pooled features.

Module names follow its state dict (`layer1.0.conv1`, `layer1.0.downsample.0`), so
`convert.metric_nets` maps `resnet-50-kinetics.pth` key by key. PyTorch-style symmetric
padding throughout. Input: NTHWC, 112×112 frames minus the per-channel Kinetics mean.
"""

import flax.linen as nn
import jax.numpy as jnp

from ardiffusion_jax.models import layers

LAYERS = (3, 4, 6, 3)


def _conv(features, kernel, strides, padding, name):
  pad = tuple((p, p) for p in padding)
  return layers.Conv(features, kernel, strides=strides, padding=pad, use_bias=False, name=name)


def _bn(name):
  return nn.BatchNorm(use_running_average=True, epsilon=1e-5, name=name)


class Bottleneck(nn.Module):
  planes: int
  stride: int
  downsample: bool

  @nn.compact
  def __call__(self, x):
    h = nn.relu(_bn("bn1")(_conv(self.planes, (1, 1, 1), 1, (0, 0, 0), "conv1")(x)))
    h = nn.relu(_bn("bn2")(_conv(self.planes, (3, 3, 3), self.stride, (1, 1, 1), "conv2")(h)))
    h = _bn("bn3")(_conv(4 * self.planes, (1, 1, 1), 1, (0, 0, 0), "conv3")(h))
    if self.downsample:  # shortcut B: a strided 1x1x1 conv and BatchNorm
      x = _bn("downsample_1")(_conv(4 * self.planes, (1, 1, 1), self.stride, (0, 0, 0),
                                    "downsample_0")(x))
    return nn.relu(h + x)


class ResNet3D50(nn.Module):
  @nn.compact
  def __call__(self, x):
    """x [N, T, 112, 112, 3] -> [N, 2048]."""
    x = nn.relu(_bn("bn1")(_conv(64, (7, 7, 7), (1, 2, 2), (3, 3, 3), "conv1")(x)))
    x = nn.max_pool(x, (3, 3, 3), strides=(2, 2, 2), padding=((1, 1),) * 3)
    channels = 64
    for index, (blocks, planes) in enumerate(zip(LAYERS, (64, 128, 256, 512))):
      for block in range(blocks):
        stride = 2 if index > 0 and block == 0 else 1
        downsample = block == 0 and (stride != 1 or channels != 4 * planes)
        x = Bottleneck(planes, stride, downsample, name=f"layer{index + 1}_{block}")(x)
        channels = 4 * planes
    # Their avg-pool kernel (ceil(T/16), 4, 4) covers the whole remaining volume of a
    # 16-frame, 112-px segment: a global mean.
    return jnp.mean(x, axis=(1, 2, 3))
