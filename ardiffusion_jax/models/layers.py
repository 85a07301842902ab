"""Building blocks shared by the DiT and the AR-VAE.

Every parameter carries logical axis names (see `train/sharding.py` for how they map
onto the mesh); activations are constrained with the `act_*` names.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

xavier = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros


def param_with_axes(init, axes):
  return nn.with_logical_partitioning(init, axes)


# XLA CPU compiles a random draw over three or more axes about 10x more slowly than a flat
# one (2-3 s each on two cores; the tiny AR-VAE's init took 70 s to compile). Drawing flat
# and reshaping gives the same values: threefry numbers the elements in C order.
def normal(key, shape, dtype=jnp.float32):
  """`jax.random.normal(key, shape, dtype)`, drawn flat."""
  return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def drawn_as_matrix(init, num_out_axes=1):
  """`init` for a kernel [*in, *out], drawn as the matrix [prod(in), prod(out)] and reshaped.

  Equal to `init` on the full shape when its fans are the products of the in and out
  axes (a Linear's), and for a conv kernel [*window, in, out] when it is fan-in scaled
  (flax's default `lecun_normal`) or does not depend on the shape (`normal`).
  """
  def draw(key, shape, dtype=jnp.float32):
    split = len(shape) - num_out_axes
    return init(key, (math.prod(shape[:split]), math.prod(shape[split:])), dtype).reshape(shape)
  return draw


conv_init = drawn_as_matrix(nn.initializers.lecun_normal())  # flax's nn.Conv default
Conv = functools.partial(nn.Conv, kernel_init=conv_init)  # nn.Conv, its kernel drawn flat


def constrain(x, axes):
  return nn.with_logical_constraint(x, axes)


def sincos_table(positions: np.ndarray, dim: int) -> np.ndarray:
  """MAE-style 1-D table: [sin(p·ω), cos(p·ω)] with ω_i = 10000^(-i/(dim/2)), float32."""
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))
  angles = np.asarray(positions, np.float64)[:, None] * omega[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def timestep_features(t, dim: int = 256, max_period: float = 10000.0):
  """GLIDE/DiT features of integer timesteps: [cos(t·f), sin(t·f)], f_i = e^(-ln(P)·i/(dim/2))."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = t.astype(jnp.float32)[..., None] * freqs
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class Linear(nn.Module):
  """A general dense layer: contracts `axis` of x with a kernel [*in, *features].

  Parameters are float32 with logical axis names on every kernel and bias axis; the
  matmul runs in `dtype`. The default init is Xavier-uniform over the true fans, so a
  fused qkv kernel [D, 3, H, hd] initialises like the authors' [D, 3D] Linear.
  """
  features: tuple
  kernel_axes: tuple
  axis: tuple = (-1,)
  kernel_init: Any = None
  bias_init: Any = zeros
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    axis = tuple(a % x.ndim for a in self.axis)
    in_shape = tuple(x.shape[a] for a in axis)
    n_in, n_out = len(in_shape), len(self.features)
    init = drawn_as_matrix(self.kernel_init or xavier, n_out)
    kernel = self.param("kernel", param_with_axes(init, self.kernel_axes),
                        in_shape + self.features, jnp.float32)
    bias = self.param("bias", param_with_axes(self.bias_init, self.kernel_axes[n_in:]),
                      self.features, jnp.float32)
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                            ((axis, tuple(range(n_in))), ((), ())))
    return y + bias.astype(self.dtype)


def dense(features, kernel_axes, name, axis=-1, kernel_init=None, bias_init=zeros,
          dtype=jnp.float32):
  """A `Linear` named `name`; `features` may be an int or a tuple."""
  features = tuple(features) if isinstance(features, (tuple, list)) else (features,)
  axis = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
  return Linear(features, tuple(kernel_axes), axis, kernel_init, bias_init, dtype, name=name)


def layer_norm(x, eps: float = 1e-6):
  """LayerNorm without affine parameters, computed in float32."""
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  var = jnp.square(x32 - mean).mean(-1, keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class GroupNorm(nn.Module):
  """GroupNorm over the last axis of [N, ..., C], with flax's parameters (`scale`, `bias`)
  and numerics (float32 statistics, var = E[x²] - E[x]²).

  The statistics are taken per channel over the pixels first, then averaged per group:
  on XLA CPU that runs forward about 6x, and with its gradient about 2x, faster than
  flax's reduction over a [N, H, W, G, C/G] view (docs/results.md).
  """
  num_groups: int
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x):
    n, channels = x.shape[0], x.shape[-1]
    if channels % self.num_groups:
      raise ValueError(f"{channels} channels do not split into {self.num_groups} groups")
    scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    pixels = x.astype(jnp.float32).reshape(n, -1, channels)
    per_group = channels // self.num_groups

    def group_mean(per_channel):  # [N, C] -> [N, 1, ..., C], each channel its group's mean
      means = per_channel.reshape(n, self.num_groups, per_group).mean(-1)
      return jnp.repeat(means, per_group, axis=-1).reshape((n,) + (1,) * (x.ndim - 2) + (channels,))

    mean = group_mean(pixels.mean(1))
    var = jnp.maximum(group_mean(jnp.square(pixels).mean(1)) - jnp.square(mean), 0.0)
    multiplier = jax.lax.rsqrt(var + self.epsilon) * scale
    return (x * multiplier + (bias - mean * multiplier)).astype(jnp.result_type(x, scale))


def l2_normalize(z, eps: float = 1e-12):
  """Per-token L2 normalisation over the last axis (PyTorch F.normalize, eps 1e-12)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(z), axis=-1, keepdims=True))
  return z / jnp.maximum(norm, eps)


def rope(x, positions, base: float = 10000.0):
  """Rotary embedding over the head dim of x [B, N, H, hd] at integer positions [B, N]."""
  half = x.shape[-1] // 2
  freqs = 1.0 / base ** (jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., None, None] * freqs  # [B, N, 1, half]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


def frame_mask(query_frames, key_frames, window=None, causal: bool = True):
  """Boolean attention mask [B, 1, N, M]: a query sees keys whose frame is not later.

  Frames are per token ([B, N] and [B, M]); full attention inside a frame and block
  causality across frames follow from the single comparison. With `causal` False a video
  query (frame >= 0) also sees later frames' keys; context queries keep their rule. With
  `window`, a query also sees no frame `window` or more away from its own; negative key
  frames (context tokens) stay visible.
  """
  keys, queries = key_frames[:, None, None, :], query_frames[:, None, :, None]
  mask = keys <= queries
  if not causal:
    mask |= queries >= 0
  if window is not None:
    mask &= (keys < 0) | (jnp.abs(keys - queries) < window)
  return mask


def chunked_causal_attention(q, k, v, mask, chunks: int, prefix: int = 0):
  """`jax.nn.dot_product_attention` for block-causal masks without the masked blocks.

  The queries after `prefix` are split into `chunks` equal groups and group g reads only
  the keys up to its own last token: every later key is masked for it, so the result is
  exact. Prefix queries (context tokens) read every key. With one chunk per frame this
  skips about half of the attention work.
  """
  size = (q.shape[1] - prefix) // chunks
  outs = [jax.nn.dot_product_attention(q[:, :prefix], k, v, mask=mask[..., :prefix, :])] \
      if prefix else []
  for g in range(chunks):
    lo, hi = prefix + g * size, prefix + (g + 1) * size
    outs.append(jax.nn.dot_product_attention(q[:, lo:hi], k[:, :hi], v[:, :hi],
                                             mask=mask[..., lo:hi, :hi]))
  return jnp.concatenate(outs, axis=1)


class Attention(nn.Module):
  """Multi-head self-attention through `jax.nn.dot_product_attention`.

  With `kv_cache=(keys, values)` ([B, M, H, hd], RoPE already applied) the queries also
  attend to those cached keys, which come first in `mask`'s key axis; the call then
  returns (out, (k, v)) with this call's own keys and values, ready to be cached.
  `causal_chunks` > 1 promises a block-causal mask over `causal_chunks` equal groups of
  tokens after the first `prefix` ones and skips the masked blocks
  (`chunked_causal_attention`).
  """
  num_heads: int
  use_rope: bool = False
  dtype: jnp.dtype = jnp.float32
  causal_chunks: int = 1
  prefix: int = 0
  proj_init: Any = None  # None: Xavier-uniform
  qkv_init: Any = None  # for the kernel as a matrix [D, 3·H·hd]; None: Xavier-uniform

  @nn.compact
  def __call__(self, x, mask=None, positions=None, kv_cache=None):
    width = x.shape[-1]
    head_dim = width // self.num_heads
    qkv = dense((3, self.num_heads, head_dim), ("embed", None, "heads", "kv"), "qkv",
                kernel_init=self.qkv_init, dtype=self.dtype)(x)
    q, k, v = (qkv[:, :, i] for i in range(3))
    q = constrain(q, ("act_batch", "act_length", "act_heads", None))
    if self.use_rope:
      q, k = rope(q, positions), rope(k, positions)
    own = (k, v)
    if kv_cache is not None:
      k = jnp.concatenate([kv_cache[0].astype(k.dtype), k], axis=1)
      v = jnp.concatenate([kv_cache[1].astype(v.dtype), v], axis=1)
      out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    elif self.causal_chunks > 1:
      out = chunked_causal_attention(q, k, v, mask, self.causal_chunks, self.prefix)
    else:
      out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    out = dense(width, ("heads", "kv", "embed"), "proj", axis=(-2, -1), kernel_init=self.proj_init,
                dtype=self.dtype)(out)
    return out if kv_cache is None else (out, own)


class CrossAttention(nn.Module):
  """Queries from x [B, N, D]; keys and values from their own inputs [B, M, D]."""
  num_heads: int
  out_init: Any = None  # zeros makes the block start as an identity residual
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, keys, values, mask=None):
    width = x.shape[-1]
    shape, axes = (self.num_heads, width // self.num_heads), ("embed", "heads", "kv")
    q = dense(shape, axes, "q", dtype=self.dtype)(x)
    k = dense(shape, axes, "k", dtype=self.dtype)(keys)
    v = dense(shape, axes, "v", dtype=self.dtype)(values)
    out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    return dense(width, ("heads", "kv", "embed"), "proj", axis=(-2, -1), dtype=self.dtype,
                 kernel_init=self.out_init)(out)


class Mlp(nn.Module):
  """fc1, GELU, fc2: tanh-approximate GELU as timm's Mlp (the DiT), exact erf GELU as
  TiTok's ViT (`approximate_gelu=False`)."""
  hidden: int
  dtype: jnp.dtype = jnp.float32
  approximate_gelu: bool = True
  kernel_init: Any = None  # None: Xavier-uniform

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    h = dense(self.hidden, ("embed", "mlp"), "fc1", kernel_init=self.kernel_init,
              dtype=self.dtype)(x)
    h = nn.gelu(h, approximate=self.approximate_gelu)
    h = constrain(h, ("act_batch", "act_length", "act_mlp"))
    return dense(width, ("mlp", "embed"), "fc2", kernel_init=self.kernel_init, dtype=self.dtype)(h)
