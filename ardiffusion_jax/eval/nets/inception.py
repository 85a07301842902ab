"""The FID InceptionV3 (TF `inception-2015-12-05`, as pytorch-fid ports it) in Flax.

Module names follow torchvision's Inception3 state dict (`Mixed_5b.branch1x1.conv`), so
`convert.metric_nets` maps pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` key by key.
FID quirks kept (the TF reference's, as pytorch-fid ports them): the pool branches of
Mixed_5b-5d, 6b-6e and 7b average over valid pixels only (TF padding), Mixed_7c
max-pools, BatchNorm eps 1e-3.
Input: NHWC in [-1, 1] at 299×299; output: the 2048-d pool3 features.
"""

import flax.linen as nn
import jax.numpy as jnp

from ardiffusion_jax.models import layers


class BasicConv(nn.Module):
  features: int
  kernel: tuple
  strides: int = 1
  padding: tuple = (0, 0)

  @nn.compact
  def __call__(self, x):
    pad = tuple((p, p) for p in self.padding)
    x = layers.Conv(self.features, self.kernel, strides=self.strides, padding=pad,
                    use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _conv(features, kernel, name, strides=1, padding=None):
  kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
  padding = padding if padding is not None else (0, 0)
  return BasicConv(features, kernel, strides, padding, name=name)


def _avg_pool_valid(x):
  """3×3, stride 1, padding 1, averaging over the pixels inside the image only."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, strides=2, padding="VALID"):
  return nn.max_pool(x, (3, 3), strides=(strides, strides), padding=padding)


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    a = _conv(64, 1, "branch1x1")(x)
    b = _conv(64, 5, "branch5x5_2", padding=(2, 2))(_conv(48, 1, "branch5x5_1")(x))
    c = _conv(64, 1, "branch3x3dbl_1")(x)
    c = _conv(96, 3, "branch3x3dbl_3", padding=(1, 1))(_conv(96, 3, "branch3x3dbl_2", padding=(1, 1))(c))
    d = _conv(self.pool_features, 1, "branch_pool")(_avg_pool_valid(x))
    return jnp.concatenate([a, b, c, d], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    a = _conv(384, 3, "branch3x3", strides=2)(x)
    b = _conv(96, 3, "branch3x3dbl_2", padding=(1, 1))(_conv(64, 1, "branch3x3dbl_1")(x))
    b = _conv(96, 3, "branch3x3dbl_3", strides=2)(b)
    return jnp.concatenate([a, b, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    a = _conv(192, 1, "branch1x1")(x)
    b = _conv(c7, 1, "branch7x7_1")(x)
    b = _conv(c7, (1, 7), "branch7x7_2", padding=(0, 3))(b)
    b = _conv(192, (7, 1), "branch7x7_3", padding=(3, 0))(b)
    c = _conv(c7, 1, "branch7x7dbl_1")(x)
    for i, (features, kernel, padding) in enumerate(
        [(c7, (7, 1), (3, 0)), (c7, (1, 7), (0, 3)), (c7, (7, 1), (3, 0)), (192, (1, 7), (0, 3))]):
      c = _conv(features, kernel, f"branch7x7dbl_{i + 2}", padding=padding)(c)
    d = _conv(192, 1, "branch_pool")(_avg_pool_valid(x))
    return jnp.concatenate([a, b, c, d], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    a = _conv(320, 3, "branch3x3_2", strides=2)(_conv(192, 1, "branch3x3_1")(x))
    b = _conv(192, 1, "branch7x7x3_1")(x)
    b = _conv(192, (1, 7), "branch7x7x3_2", padding=(0, 3))(b)
    b = _conv(192, (7, 1), "branch7x7x3_3", padding=(3, 0))(b)
    b = _conv(192, 3, "branch7x7x3_4", strides=2)(b)
    return jnp.concatenate([a, b, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
  max_pool: bool  # Mixed_7c: max-pool in the pool branch (a quirk of the TF graph)

  @nn.compact
  def __call__(self, x):
    def split(h, prefix):
      return jnp.concatenate([_conv(384, (1, 3), f"{prefix}a", padding=(0, 1))(h),
                              _conv(384, (3, 1), f"{prefix}b", padding=(1, 0))(h)], axis=-1)
    a = _conv(320, 1, "branch1x1")(x)
    b = split(_conv(384, 1, "branch3x3_1")(x), "branch3x3_2")
    c = _conv(384, 3, "branch3x3dbl_2", padding=(1, 1))(_conv(448, 1, "branch3x3dbl_1")(x))
    c = split(c, "branch3x3dbl_3")
    pooled = _max_pool(x, 1, ((1, 1), (1, 1))) if self.max_pool else _avg_pool_valid(x)
    d = _conv(192, 1, "branch_pool")(pooled)
    return jnp.concatenate([a, b, c, d], axis=-1)


class FIDInceptionV3(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = _conv(32, 3, "Conv2d_1a_3x3", strides=2)(x)
    x = _conv(32, 3, "Conv2d_2a_3x3")(x)
    x = _max_pool(_conv(64, 3, "Conv2d_2b_3x3", padding=(1, 1))(x))
    x = _conv(80, 1, "Conv2d_3b_1x1")(x)
    x = _max_pool(_conv(192, 3, "Conv2d_4a_3x3")(x))
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(False, name="Mixed_7b")(x)
    x = InceptionE(True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))
