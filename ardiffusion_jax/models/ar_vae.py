"""AR-VAE: a TiTok-style 1D video tokenizer with an optional temporally causal decoder.

Frames are encoded one by one into 32 continuous tokens of 4 dims. The
decoder turns tokens back into pixels through a ViT over mask tokens, a soft codebook
and the MaskGIT-VQGAN pixel decoder. With `temporal_causal=True` every decoder layer
first attends over time, so frame f's reconstruction sees the latents and pixel
features of frames <= f only (the authors' `TiTok_KL_wT`).

Variants (flags, one module):
| flag | official | clean |
|---|---|---|
| legacy_reshape | TiTok's reinterpretation of [32, W] as [W, 32] before conv_out | per-token Linear |
| nin_shortcut_quirk | nin applied to the block output, input residual dropped | nin on the input |
| temporal_zero_init | False: their generic re-init perturbs the temporal blocks | True: out proj zero |

`proxy_head=True` (off in both variants' checkpoints; on in the tiny synthetic configs)
adds a training-only linear head that reads each patch's pixels straight off the decoder
ViT, our stand-in for TiTok's proxy-code stage: its loss gives the ViTs a direct
gradient, without which the tokenizer trained from scratch stays at the mean image.
`spatial_init=True` (also the tiny synthetic configs'; an initialisation only, the same
parameters) starts attention local, which shortens that stay from ~450 steps to ~150.

Images are float in [0, 1], NHWC. Latents are [..., 32, 4]; `encode` returns the raw
mean and logvar, `decode` L2-normalises each token first, exactly where the authors do.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ardiffusion_jax.models import layers, module_from_config

PRESETS = {
    # ViT width, depth, heads; pixel decoder hidden, channel multipliers, res blocks a level.
    "paper": dict(width=1024, depth=24, num_heads=16, image_size=256, patch_size=16,
                  pixel_hidden=128, channel_mult=(1, 1, 2, 2, 4), pixel_res_blocks=2,
                  pixel_z_channels=256, pixel_codebook_size=1024, norm_groups=32),
    # tiny: the pixel decoder is most of the cost. 8 wide and one res block a level learn
    # almost as much per step as 16 wide and two at a fraction of the step time, so more
    # steps fit a time budget (measured: docs/results.md, docs/experiments/tokenizer.md).
    "tiny": dict(width=64, depth=2, num_heads=2, image_size=64, patch_size=8,
                 pixel_hidden=8, channel_mult=(1, 1, 2, 2), pixel_res_blocks=1,
                 pixel_z_channels=32, pixel_codebook_size=64, norm_groups=4),
}
VARIANTS = {
    "official": dict(legacy_reshape=True, nin_shortcut_quirk=True, temporal_zero_init=False),
    "clean": dict(legacy_reshape=False, nin_shortcut_quirk=False, temporal_zero_init=True),
}


def legacy_moments(tokens, kernel, bias):
  """TiTok's legacy head: [N, L, W] reinterpreted (C order, no transpose) as [N, W, L],
  then a 1x1 conv over that "channel" axis. Returns moments as [N, L, C_out]."""
  n, length, width = tokens.shape
  reinterpreted = tokens.reshape(n, width, length)
  return jnp.einsum("nkj,kc->njc", reinterpreted, kernel) + bias


# TiTok's initialisation (its `_init_weights`): Linear and conv kernels N(0, 0.02) with zero
# biases, except the attention's packed in-projection (PyTorch's Xavier-uniform); the learned
# embeddings N(0, 1/width). Positions then dominate the tokens at the start, which is what
# lets attention route patches to latent tokens and latent tokens to pixels.
LINEAR_INIT = nn.initializers.normal(0.02)


def _embedding(module, name, shape, axes, codes=None):
  """A learned embedding drawn N(0, 1/width); with `codes` [K, width] its last K rows
  start as those instead (`spatial_init`)."""
  draw = nn.initializers.normal(shape[-1] ** -0.5)

  def init(key, shape, dtype):
    table = draw(key, shape, dtype)
    return table if codes is None else table.at[shape[0] - len(codes):].set(codes)

  return module.param(name, layers.param_with_axes(init, axes), shape, jnp.float32)


# `spatial_init` (the tiny synthetic configs; docs/architecture.md, "The AR-VAE"): the
# positions of patch tokens and latent tokens start as 2-D Fourier codes whose dot products
# fall off with distance, and every ViT block's query and key projections start equal, so
# attention starts local: each latent token reads the patches of its own region, each patch
# of the decoder the latent tokens near it. The scale and the kernel's length (in patches)
# come from screens.
SPATIAL_CODE_SCALE = 2.0
SPATIAL_CODE_LENGTH = 1.0


def fourier_codes(points, width, lengthscale):
  """[N, width] codes of 2-D points: cos/sin pairs whose dot products approximate the
  Gaussian kernel exp(-|p - q|² / 2ℓ²), each code of unit norm. The frequencies are fixed,
  a golden-angle spiral with Rayleigh-quantile radii, and rise with the feature index, so
  the first heads see the broad part of the kernel and the last the sharp part."""
  pairs = width // 2
  k = np.arange(pairs)
  radius = np.sqrt(-2 * np.log(1 - (k + 0.5) / pairs)) / lengthscale
  angle = k * np.pi * (3 - np.sqrt(5))
  phases = np.asarray(points, np.float64) @ np.stack([radius * np.cos(angle), radius * np.sin(angle)])
  codes = np.stack([np.cos(phases), np.sin(phases)], -1).reshape(len(phases), 2 * pairs)
  return np.pad(codes / np.sqrt(pairs), ((0, 0), (0, width - 2 * pairs))).astype(np.float32)


def spatial_position_codes(grid, num_latent_tokens, width):
  """Initial positions for `spatial_init`: (patch codes [grid², width] in token order,
  latent codes [L, width]), the latent tokens tiling the patch grid as a rows × cols
  array (rows the largest divisor of L not above √L)."""
  patches = np.stack(np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij"), -1).reshape(-1, 2)
  rows = max(d for d in range(1, int(np.sqrt(num_latent_tokens)) + 1) if num_latent_tokens % d == 0)
  cols = num_latent_tokens // rows
  centre = lambda n: (np.arange(n) + 0.5) * grid / n - 0.5
  latents = np.stack(np.meshgrid(centre(rows), centre(cols), indexing="ij"), -1).reshape(-1, 2)
  code = lambda points: SPATIAL_CODE_SCALE * fourier_codes(points, width, SPATIAL_CODE_LENGTH)
  return code(patches), code(latents)


def _initial_position_codes(vit, grid):
  """What the encoder's or decoder's position embeddings start as: the spatial codes
  while `vit.spatial_init` creates them, else (None, None), their usual draw."""
  if vit.spatial_init and vit.is_initializing():
    return spatial_position_codes(grid, vit.num_latent_tokens, vit.width)
  return None, None


def matched_qk_init(key, shape, dtype=jnp.float32):
  """The fused qkv kernel as a matrix [D, 3·H·hd]: the query and key projections both
  start as the selection of the first H·hd input features (head h the h-th block), so
  q·k starts as the dot product of the normalised tokens; values keep the usual draw."""
  kernel = layers.xavier(key, shape, dtype)
  inner = shape[1] // 3
  select = jnp.eye(shape[0], inner, dtype=dtype)
  return kernel.at[:, :inner].set(select).at[:, inner:2 * inner].set(select)


def _layer_norm(name):
  # TiTok uses PyTorch's default eps 1e-5, with affine parameters.
  return nn.LayerNorm(epsilon=1e-5, name=name,
                      scale_init=layers.param_with_axes(nn.initializers.ones, ("embed",)),
                      bias_init=layers.param_with_axes(nn.initializers.zeros, ("embed",)))


class ViTBlock(nn.Module):
  """Pre-LN transformer block (TiTok's ResidualAttentionBlock): exact GELU, no mask."""
  num_heads: int
  mlp_ratio: float = 4.0
  matched_qk: bool = False  # spatial_init: queries and keys start equal
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    x = x + layers.Attention(self.num_heads, dtype=self.dtype, proj_init=LINEAR_INIT,
                             qkv_init=matched_qk_init if self.matched_qk else None,
                             name="attn")(_layer_norm("ln_1")(x))
    return x + layers.Mlp(int(width * self.mlp_ratio), dtype=self.dtype, approximate_gelu=False,
                          kernel_init=LINEAR_INIT, name="mlp")(_layer_norm("ln_2")(x))


class TemporalBlocks(nn.Module):
  """The two causal-in-time blocks run before each decoder layer (the authors' `TiTok_KL_wT`).

  pixels: [B, T, P, D]; latents: [B, T, L, D]. Fine: each pixel position attends over
  time (frames <= t). Coarse: each frame's latent and pixel tokens attend to the latent
  tokens of frames <= t.
  """
  num_heads: int
  zero_init: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels, latents):
    batch, frames, num_pixels, width = pixels.shape
    num_latents = latents.shape[2]
    out_init = layers.zeros if self.zero_init else None
    causal = jnp.tril(jnp.ones((frames, frames), bool))

    # Fine: sequences over time, one per (video, pixel position).
    seq = pixels.transpose(0, 2, 1, 3).reshape(batch * num_pixels, frames, width)
    fine = layers.CrossAttention(self.num_heads, out_init=out_init, dtype=self.dtype,
                                 name="fine_attn")
    normed = _layer_norm("fine_ln")(seq)
    seq = seq + fine(normed, normed, normed, mask=causal[None, None])
    pixels = seq.reshape(batch, num_pixels, frames, width).transpose(0, 2, 1, 3)

    # Coarse: per frame, [latents; pixels] queries over all frames' latents, masked by time.
    queries = jnp.concatenate([latents, pixels], axis=2).reshape(batch, frames * (num_latents + num_pixels), width)
    context = latents.reshape(batch, frames * num_latents, width)
    query_frame = jnp.repeat(jnp.arange(frames), num_latents + num_pixels)
    key_frame = jnp.repeat(jnp.arange(frames), num_latents)
    mask = layers.frame_mask(query_frame[None], key_frame[None])
    coarse = layers.CrossAttention(self.num_heads, out_init=out_init, dtype=self.dtype,
                                   name="coarse_attn")
    queries = queries + coarse(_layer_norm("ln_q")(queries), _layer_norm("ln_k")(context),
                               _layer_norm("ln_v")(context), mask=mask)
    queries = queries.reshape(batch, frames, num_latents + num_pixels, width)
    return queries[:, :, num_latents:], queries[:, :, :num_latents]


class Encoder(nn.Module):
  width: int
  depth: int
  num_heads: int
  patch_size: int
  num_latent_tokens: int
  token_dim: int
  legacy_reshape: bool
  spatial_init: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, latent_tokens):
    """images [N, H, W, 3] in [0, 1] -> moments [N, L, 2·token_dim]."""
    n = images.shape[0]
    patches = nn.Conv(self.width, (self.patch_size,) * 2, strides=(self.patch_size,) * 2,
                      padding="VALID", dtype=self.dtype, name="patch_embed",
                      kernel_init=layers.param_with_axes(layers.drawn_as_matrix(LINEAR_INIT),
                                                         (None, None, None, "embed")),
                      bias_init=layers.param_with_axes(nn.initializers.zeros, ("embed",)))(images)
    grid = patches.shape[1] * patches.shape[2]
    x = patches.reshape(n, grid, self.width)  # row-major: token = h * grid_w + w
    patch_codes, latent_codes = _initial_position_codes(self, patches.shape[1])
    cls = _embedding(self, "class_embedding", (1, self.width), (None, "embed"))
    x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, self.width)), x], axis=1)
    x = x + _embedding(self, "positional_embedding", (grid + 1, self.width), (None, "embed"),
                       patch_codes)
    latent = latent_tokens + _embedding(self, "latent_token_positional_embedding",
                                        (self.num_latent_tokens, self.width), (None, "embed"),
                                        latent_codes)
    x = jnp.concatenate([x, jnp.broadcast_to(latent, (n,) + latent.shape)], axis=1)
    x = _layer_norm("ln_pre")(x)
    for i in range(self.depth):
      x = ViTBlock(self.num_heads, matched_qk=self.spatial_init, dtype=self.dtype,
                   name=f"transformer_{i}")(x)
    x = _layer_norm("ln_post")(x[:, -self.num_latent_tokens:])
    head = layers.dense(2 * self.token_dim, ("embed", None), "conv_out", kernel_init=LINEAR_INIT,
                        dtype=self.dtype)
    if self.legacy_reshape:
      # Run the Linear once to create its parameters, then apply them the legacy way.
      head(x[:, :1])
      params = nn.meta.unbox(self.variables["params"]["conv_out"])
      return legacy_moments(x, params["kernel"], params["bias"])
    return head(x)


class PixelResBlock(nn.Module):
  """MaskGIT-VQGAN ResBlock: GN, SiLU, conv3x3, GN, SiLU, conv3x3 (no biases)."""
  features: int
  groups: int
  nin_shortcut_quirk: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = lambda name, k: layers.Conv(self.features, (k, k), padding="SAME", use_bias=False,
                                       dtype=self.dtype, name=name)
    h = conv("conv1", 3)(nn.silu(layers.GroupNorm(self.groups, name="norm1")(x)))
    h = conv("conv2", 3)(nn.silu(layers.GroupNorm(self.groups, name="norm2")(h)))
    if x.shape[-1] == self.features:
      return x + h
    if self.nin_shortcut_quirk:  # the authors' code: out = h + nin(h), input dropped
      return h + conv("nin_shortcut", 1)(h)
    return conv("nin_shortcut", 1)(x) + h


def upsample_nearest_2x(images):
  """[N, H, W, C] -> [N, 2H, 2W, C], each pixel repeated (PyTorch's nearest, scale 2).
  A broadcast, not `jax.image.resize`, whose gradient is a slow scatter on XLA CPU."""
  n, height, width, c = images.shape
  doubled = jnp.broadcast_to(images[:, :, None, :, None], (n, height, 2, width, 2, c))
  return doubled.reshape(n, 2 * height, 2 * width, c)


class PixelDecoder(nn.Module):
  """MaskGIT-VQGAN decoder: conv_in, mid, up stages (last to first), GN, SiLU, conv_out."""
  hidden: int
  channel_mult: Sequence[int]
  groups: int
  nin_shortcut_quirk: bool
  num_res_blocks: int  # a level; ARVAE.pixel_res_blocks
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    conv = lambda features, name, bias=True: layers.Conv(features, (3, 3), padding="SAME",
                                                         use_bias=bias, dtype=self.dtype, name=name)
    block = lambda features, name: PixelResBlock(features, self.groups, self.nin_shortcut_quirk,
                                                 dtype=self.dtype, name=name)
    top = self.hidden * self.channel_mult[-1]
    h = conv(top, "conv_in")(z)
    for i in range(2):
      h = block(top, f"mid_{i}")(h)
    for level in reversed(range(len(self.channel_mult))):
      features = self.hidden * self.channel_mult[level]
      for i in range(self.num_res_blocks):
        h = block(features, f"up_{level}_block_{i}")(h)
      if level > 0:
        h = conv(features, f"up_{level}_upsample_conv")(upsample_nearest_2x(h))
    h = nn.silu(layers.GroupNorm(self.groups, name="norm_out")(h))
    return conv(3, "conv_out")(h)


class Decoder(nn.Module):
  """Latent tokens -> logits over the pixel codebook at each patch position."""
  width: int
  depth: int
  num_heads: int
  grid: int
  num_latent_tokens: int
  codebook_size: int
  temporal_causal: bool
  temporal_zero_init: bool
  spatial_init: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    """z [B, T, L, token_dim] (unit-norm tokens) -> (features [B·T, grid, grid, width] after
    ln_post, logits [B, T, grid, grid, codebook])."""
    batch, frames = z.shape[:2]
    n = batch * frames
    patch_codes, latent_codes = _initial_position_codes(self, self.grid)
    latent = layers.dense(self.width, (None, "embed"), "decoder_embed", kernel_init=LINEAR_INIT,
                          dtype=self.dtype)(z)
    latent = latent + _embedding(self, "latent_token_positional_embedding",
                                 (self.num_latent_tokens, self.width), (None, "embed"),
                                 latent_codes)
    latent = latent.reshape(n, self.num_latent_tokens, self.width)
    mask_token = _embedding(self, "mask_token", (1, 1, self.width), (None, None, "embed"))
    cls = _embedding(self, "class_embedding", (1, self.width), (None, "embed"))
    num_pixels = self.grid * self.grid
    x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, self.width)),
                         jnp.broadcast_to(mask_token, (n, num_pixels, self.width))], axis=1)
    x = x + _embedding(self, "positional_embedding", (num_pixels + 1, self.width), (None, "embed"),
                       patch_codes)
    x = _layer_norm("ln_pre")(jnp.concatenate([x, latent], axis=1))
    for i in range(self.depth):
      if self.temporal_causal:
        pixels = x[:, 1:1 + num_pixels].reshape(batch, frames, num_pixels, self.width)
        lat = x[:, 1 + num_pixels:].reshape(batch, frames, self.num_latent_tokens, self.width)
        pixels, lat = TemporalBlocks(self.num_heads, self.temporal_zero_init, dtype=self.dtype,
                                     name=f"temporal_{i}")(pixels, lat)
        x = jnp.concatenate([x[:, :1], pixels.reshape(n, num_pixels, self.width),
                             lat.reshape(n, self.num_latent_tokens, self.width)], axis=1)
      x = ViTBlock(self.num_heads, matched_qk=self.spatial_init, dtype=self.dtype,
                   name=f"transformer_{i}")(x)
    x = _layer_norm("ln_post")(x[:, 1:1 + num_pixels])
    features = x.reshape(n, self.grid, self.grid, self.width)
    h = jnp.tanh(layers.dense(2 * self.width, ("embed", "mlp"), "ffn_0", kernel_init=LINEAR_INIT,
                              dtype=self.dtype)(features))
    logits = layers.dense(self.codebook_size, ("mlp", None), "ffn_2", kernel_init=LINEAR_INIT,
                          dtype=self.dtype)(h)
    return features, logits.reshape(batch, frames, self.grid, self.grid, self.codebook_size)


class ARVAE(nn.Module):
  """The whole tokenizer. `__call__` reconstructs; `encode`/`decode` are separate entry
  points (use `apply(..., method=...)`)."""
  width: int = 1024
  depth: int = 24
  num_heads: int = 16
  image_size: int = 256
  patch_size: int = 16
  num_latent_tokens: int = 32
  token_dim: int = 4
  pixel_hidden: int = 128
  channel_mult: Sequence[int] = (1, 1, 2, 2, 4)
  pixel_res_blocks: int = 2
  pixel_z_channels: int = 256
  pixel_codebook_size: int = 1024
  norm_groups: int = 32
  legacy_reshape: bool = False
  nin_shortcut_quirk: bool = False
  temporal_causal: bool = False
  temporal_zero_init: bool = True
  proxy_head: bool = False
  spatial_init: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    grid = self.image_size // self.patch_size
    if grid * self.patch_size != self.image_size:
      raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
    if grid * 2 ** (len(self.channel_mult) - 1) != self.image_size:
      raise ValueError(f"the pixel decoder upsamples {grid} by 2^{len(self.channel_mult) - 1}, "
                       f"which is not image_size {self.image_size}; set channel_mult to "
                       f"log2(patch_size) + 1 levels")
    self.latent_tokens = self.param(
        "latent_tokens", layers.param_with_axes(nn.initializers.normal(self.width ** -0.5),
                                                (None, "embed")),
        (self.num_latent_tokens, self.width), jnp.float32)
    self.encoder = Encoder(self.width, self.depth, self.num_heads, self.patch_size,
                           self.num_latent_tokens, self.token_dim, self.legacy_reshape,
                           self.spatial_init, dtype=self.dtype)
    self.decoder = Decoder(self.width, self.depth, self.num_heads, grid, self.num_latent_tokens,
                           self.pixel_codebook_size, self.temporal_causal,
                           self.temporal_zero_init, self.spatial_init, dtype=self.dtype)
    self.pixel_quantize_conv = layers.dense(self.pixel_z_channels, (None, "embed"),
                                            "pixel_quantize_conv", dtype=self.dtype)
    self.pixel_decoder = PixelDecoder(self.pixel_hidden, tuple(self.channel_mult),
                                      self.norm_groups, self.nin_shortcut_quirk,
                                      self.pixel_res_blocks, dtype=self.dtype)
    if self.proxy_head:
      # Training only: reads each patch's pixels straight off the decoder ViT, a direct
      # gradient for both ViTs (docs/architecture.md, "The AR-VAE").
      self.proxy_patch_head = layers.dense(self.patch_size ** 2 * 3, ("embed", None),
                                           "proxy_patch_head", kernel_init=layers.zeros,
                                           dtype=self.dtype)

  def example_inputs(self, frames: int = 1, batch: int = 1):
    """Abstract (video,) for `init` and `eval_shape`: RGB frames in [0, 1]
    as float32 [B, frames, H, W, 3]. The weights do not depend on `frames`."""
    return (jax.ShapeDtypeStruct((batch, frames, self.image_size, self.image_size, 3),
                                 jnp.float32),)

  def encode(self, video):
    """video [B, T, H, W, 3] in [0, 1] -> (mean, logvar), each [B, T, L, token_dim].

    Frames are encoded independently. The mean is raw (not normalised), as the authors
    save it for the DiT.
    """
    batch, frames = video.shape[:2]
    moments = self.encoder(video.reshape((batch * frames,) + video.shape[2:]), self.latent_tokens)
    moments = moments.reshape(batch, frames, self.num_latent_tokens, 2 * self.token_dim)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, latents):
    """latents [B, T, L, token_dim] (any norm) -> video [B, T, H, W, 3], unbounded."""
    # The proxy head (if any) runs here too so that `init` creates its parameters; under
    # jit its unused output is dropped.
    return self._decode(latents)[0]

  def _decode(self, latents):
    """-> (video, the proxy head's video or None), each [B, T, H, W, 3]."""
    batch, frames = latents.shape[:2]
    features, logits = self.decoder(layers.l2_normalize(latents))
    soft_codes = self.pixel_quantize_conv(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))
    grid = logits.shape[2]
    pixels = self.pixel_decoder(soft_codes.reshape(batch * frames, grid, grid, -1))
    unflatten = lambda images: images.reshape((batch, frames) + images.shape[1:]).astype(
        jnp.float32)
    if not self.proxy_head:
      return unflatten(pixels), None
    p = self.patch_size
    patches = self.proxy_patch_head(features).reshape(batch * frames, grid, grid, p, p, 3)
    proxy = patches.transpose(0, 1, 3, 2, 4, 5).reshape(pixels.shape)
    return unflatten(pixels), unflatten(proxy)

  def _latents(self, video, sample_posterior, rng):
    mean, logvar = self.encode(video)
    z = mean
    if sample_posterior:
      z = layers.l2_normalize(mean + jnp.exp(0.5 * logvar) * layers.normal(rng, mean.shape))
    return z, mean, logvar

  def __call__(self, video, sample_posterior: bool = False, rng=None):
    """Reconstruction. Training samples z = normalize(mean + σ·ε) (needs `rng`);
    evaluation uses the mean. Returns (reconstruction, mean, logvar)."""
    z, mean, logvar = self._latents(video, sample_posterior, rng)
    return self.decode(z), mean, logvar

  def training_reconstruction(self, video, rng):
    """The sampled-posterior reconstruction and, with `proxy_head`, the proxy head's
    patch-by-patch reconstruction (else None), each [B, T, H, W, 3]; and the posterior
    mean [B, T, L, C], which the motion term scores without a second encoder pass."""
    z, mean, _ = self._latents(video, True, rng)
    return (*self._decode(z), mean)


def vae_from_config(vae_config) -> ARVAE:
  """Builds the AR-VAE from a config's `vae` section: `variant`, `size` and overrides."""
  return module_from_config(ARVAE, VARIANTS, PRESETS, vae_config)
