"""The AR-Diffusion denoiser: a DiT over 1D video tokens with a timestep per frame.

`DiT(...).apply(variables, x [B,F,L,C], t [B,F], label=None)` returns the prediction
[B,F,L,C] (x̂0 in the paper). Two variants share this one module; each difference is a
flag so ablations can isolate it (docs/architecture.md):

| flag | official (authors' release) | clean (default for new training) |
|---|---|---|
| residual | `share_norm`: the stream is re-normalised, LN(x) | `adaln_zero` |
| context_tokens | 77 fixed tokens (`constants` collection) | 0 |
| context_sees_video | True: context attends to every frame (the leak) | -- |
| position | `sincos_1d` over frame·L + token | `rope`: temporal RoPE + sin-cos over L |
| final_modulation | False: LN + Linear | True: adaLN final layer |
| class conditioning | fixed `class_emb` rows as context | trained embedding + null row, added to t |
| CFG's null branch | `class_emb[0]`; unconditional: all-zeros context | the null row; unconditional: none |

`token_patch` (either variant; the authors' is 1) groups a frame's latent tokens p at a
time into one transformer token, DiT's patch size over the 1D token axis.

`self_condition` (off in both variants; the authors have none) is Chen et al.'s
self-conditioning ("Analog Bits", 2022): the model also reads an earlier estimate of x̂0,
`x0_estimate` [B, F, L, C], concatenated to x channel-wise (zeros when there is none).
Training feeds it the model's own stop-gradient x̂0 on part of the batch
(`train/dit.py`); the AD sampler feeds each frame its x̂0 from the last row that moved it.

`temporal_attention` is the method's "causal" (a frame attends to itself and earlier
frames) or "bidirectional" (every frame of the window attends to every other: Table 3's
"− temporal causal attention" ablation, which only the full-mode sampler can run).

Strict causality: with causal temporal attention and context_tokens = 0 (or
context_sees_video = False), the output of frame f depends only on frames <= f, their
timesteps and the label. Such a model can
also run on a window of frames with the keys and values of earlier frames from a
`KVCache` (the AD sampler's cached mode, `sampling.py`).
"""

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ardiffusion_jax.models import layers, module_from_config

# Sizes (hidden, depth, heads); the paper's is 1152 / 28 / 16 with MLP ratio 4.
PRESETS = {
    "paper": dict(hidden_size=1152, depth=28, num_heads=16),
    "small": dict(hidden_size=384, depth=6, num_heads=6),
    "demo": dict(hidden_size=256, depth=4, num_heads=4),  # with token_patch = 32: one token a frame
    "tiny": dict(hidden_size=64, depth=2, num_heads=2),
}

VARIANTS = {
    "official": dict(residual="share_norm", context_tokens=77, context_sees_video=True,
                     position="sincos_1d", final_modulation=False),
    "clean": dict(residual="adaln_zero", context_tokens=0, context_sees_video=False,
                  position="rope", final_modulation=True),
}


# The frame index of an empty cache slot: later than any query, so never attended.
EMPTY_SLOT = 2**30
# The official unconditional model's CFG null: all-zeros context tokens, as the authors'
# sampler feeds its unconditional branch (a context the model never saw in training).
NO_CONTEXT = -1


class KVCache(NamedTuple):
  """Keys and values of earlier frames: `keys` and `values` are tuples with one
  [B, slots·L, H, head_dim] array per layer (RoPE applied; separate arrays, since slicing
  a layer out of a stacked one copies it), `frames` [slots] the absolute frame held by
  each slot (EMPTY_SLOT when none)."""
  keys: tuple
  values: tuple
  frames: jax.Array


class TimestepEmbedder(nn.Module):
  """Integer timesteps [B, F] -> [B, F, D]: 256 sinusoidal features, Linear, SiLU, Linear."""
  hidden_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, t):
    init = nn.initializers.normal(0.02)
    h = layers.timestep_features(t, 256)
    h = layers.dense(self.hidden_size, (None, "embed"), "mlp_0", kernel_init=init,
                     dtype=self.dtype)(h)
    return layers.dense(self.hidden_size, ("mlp", "embed"), "mlp_2", kernel_init=init,
                        dtype=self.dtype)(nn.silu(h))


def modulate(x, shift, scale):
  return x * (1 + scale) + shift


class Block(nn.Module):
  """One transformer block with per-frame adaLN modulation.

  x: [B, C + F·L, D] (C context tokens first); cond: [B, F, D]. `share_norm` follows the
  authors' `DiT_crossattn` block: the stream is replaced by LN(x) before each branch, and the
  context tokens are neither modulated nor gated. Returns (x, kv): kv is None, or with a
  `kv_cache` this layer's (keys, values) of the video tokens.
  """
  num_heads: int
  mlp_ratio: float
  residual: str
  context_tokens: int
  use_rope: bool
  dtype: Any = jnp.float32
  attention_chunks: int = 1

  @nn.compact
  def __call__(self, x, cond, mask, positions, kv_cache=None):
    batch, _, width = x.shape
    frames = cond.shape[1]
    mod = layers.dense((6, width), ("embed", None, "mlp"), "adaLN_modulation",
                       kernel_init=layers.zeros, dtype=self.dtype)(nn.silu(cond))
    # [B, F, 6, D] -> six [B, F, 1, D] tensors that broadcast over a frame's tokens.
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
        mod[:, :, i, None, :] for i in range(6))
    c = self.context_tokens

    def per_frame(fn, tokens, *args):  # apply fn to the video tokens as [B, F, L, D]
      video = tokens[:, c:].reshape(batch, frames, -1, width)
      return jnp.concatenate([tokens[:, :c], fn(video, *args).reshape(batch, -1, width)], axis=1)

    attention = layers.Attention(self.num_heads, use_rope=self.use_rope, dtype=self.dtype,
                                 causal_chunks=self.attention_chunks, prefix=c, name="attn")
    mlp = layers.Mlp(int(width * self.mlp_ratio), dtype=self.dtype, name="mlp")
    kv = None

    def attend(h):
      nonlocal kv
      if kv_cache is None:
        return attention(h, mask, positions)
      out, (k, v) = attention(h, mask, positions, kv_cache)
      kv = (k[:, c:], v[:, c:])
      return out

    if self.residual == "share_norm":
      x = layers.layer_norm(x)
      x = x + per_frame(lambda v, g: v * g, attend(per_frame(modulate, x, shift_msa, scale_msa)),
                        gate_msa)
      x = layers.layer_norm(x)
      x = x + per_frame(lambda v, g: v * g, mlp(per_frame(modulate, x, shift_mlp, scale_mlp)),
                        gate_mlp)
    elif self.residual == "adaln_zero":
      h = per_frame(modulate, layers.layer_norm(x), shift_msa, scale_msa)
      x = x + per_frame(lambda v, g: v * g, attend(h), gate_msa)
      h = per_frame(modulate, layers.layer_norm(x), shift_mlp, scale_mlp)
      x = x + per_frame(lambda v, g: v * g, mlp(h), gate_mlp)
    else:
      raise ValueError(f"unknown residual {self.residual!r}; expected share_norm or adaln_zero")
    return layers.constrain(x, ("act_batch", "act_length", "act_embed")), kv


class DiT(nn.Module):
  """The causal video DiT. See the module docstring for the variant flags."""
  hidden_size: int = 1152
  depth: int = 28
  num_heads: int = 16
  mlp_ratio: float = 4.0
  in_channels: int = 4
  tokens_per_frame: int = 32
  # Latent tokens per transformer token: a frame's L tokens of C channels enter as L/p
  # tokens of p·C (DiT's patch size, over the 1D token axis). 1 is the authors' DiT.
  token_patch: int = 1
  num_frames: int = 16  # the trained window; sincos_1d positions cover exactly this
  num_classes: int = 0  # 0: unconditional
  residual: str = "adaln_zero"
  context_tokens: int = 0
  context_dim: int = 768
  context_sees_video: bool = False
  temporal_attention: str = "causal"  # or "bidirectional" (the ablation)
  self_condition: bool = False  # also read x0_estimate (see the module docstring)
  position: str = "rope"
  final_modulation: bool = True
  scan_layers: bool = False
  remat: bool = False
  # Skip the masked blocks of causal attention: query frames in this many groups (exact).
  # Bidirectional attention masks no block, so it runs unchunked whatever this says.
  attention_chunks: int = 1
  dtype: Any = jnp.float32

  @property
  def null_label(self):
    """The label of CFG's unconditional branch, as the authors sample: class_emb[0] for
    the official class-conditional model, the extra trained row for the clean one, and
    NO_CONTEXT (all-zeros context tokens) for the official unconditional model. None for
    the clean unconditional model: it has no condition to guide against."""
    if self.num_classes:
      return 0 if self.context_tokens else self.num_classes
    return NO_CONTEXT if self.context_tokens else None

  @property
  def default_label(self) -> int:
    """The label when none is given: the unconditional one for class-conditional models,
    and for unconditional ones the model's only condition (its context tokens)."""
    return self.null_label if self.num_classes else 0

  def _context(self, batch, label):
    """The official model's fixed context tokens [B, 77, context_dim] (never trained);
    zeros where an unconditional model's label is NO_CONTEXT."""
    shape = (self.context_tokens, self.context_dim)
    if self.num_classes:
      table = self.variable("constants", "class_emb", lambda: 0.1 * jax.random.normal(
          self.make_rng("params"), (self.num_classes + 1,) + shape)).value
      return table[label]
    table = self.variable("constants", "context_emb",
                          lambda: 0.1 * jax.random.normal(self.make_rng("params"), shape)).value
    context = jnp.broadcast_to(table, (batch,) + shape)
    return jnp.where((label == NO_CONTEXT)[:, None, None], jnp.zeros_like(context), context)

  def example_inputs(self, batch: int = 1):
    """Abstract (x, t, label) for `init`, `eval_shape` and AOT lowering: latents
    [B, num_frames, tokens, channels], one timestep per frame, one label per video."""
    return (jax.ShapeDtypeStruct((batch, self.num_frames, self.tokens_per_frame,
                                  self.in_channels), jnp.float32),
            jax.ShapeDtypeStruct((batch, self.num_frames), jnp.int32),
            jax.ShapeDtypeStruct((batch,), jnp.int32))

  @property
  def frame_tokens(self) -> int:
    """The transformer's tokens per frame (what attention and the KV cache hold)."""
    return self.tokens_per_frame // self.token_patch

  @property
  def future_leak(self) -> str:
    """How a token can see a later frame, in words ('' when none can)."""
    if self.temporal_attention == "bidirectional":
      return "it attends bidirectionally over frames (dit.temporal_attention='bidirectional')"
    if self.context_tokens and self.context_sees_video:
      return "its context tokens see every frame (the official variant's leak)"
    return ""

  @property
  def strictly_causal(self) -> bool:
    """No token ever sees a later frame (what the cached sampler needs)."""
    return not self.future_leak

  @nn.compact
  def __call__(self, x, t, label=None, *, x0_estimate=None, first_frame=0, cache=None,
               attention_window=None):
    """x [B, F, L, C], t [B, F], label [B] or None -> prediction [B, F, L, C].

    x0_estimate: a self-conditioning DiT's earlier x̂0 of x's frames [B, F, L, C]; None
      reads as zeros (no estimate yet). Other DiTs refuse one.

    label may also be [B, F], one class per frame (a stream that switches class): the
    clean variant adds each frame's embedding to its timestep's.

    first_frame: the absolute index of x's first frame (positions and masks), an int or
      a traced scalar. cache: a `KVCache` of earlier frames; then the call returns
      (prediction, (keys, values)) with this call's keys and values, one [B, F·L, H, hd]
      array per layer in each tuple; the layers must be unrolled (`unrolled`).
    attention_window: a frame sees only itself and the attention_window - 1 frames
      before it (None: every earlier frame).
    """
    batch, frames, latent_tokens, channels = x.shape
    width = self.hidden_size
    if latent_tokens % self.token_patch:
      raise ValueError(f"{latent_tokens} latent tokens per frame do not split into patches of "
                       f"token_patch={self.token_patch}")
    tokens = latent_tokens // self.token_patch
    if self.self_condition:
      estimate = jnp.zeros_like(x) if x0_estimate is None else x0_estimate.astype(x.dtype)
      x = jnp.concatenate([x, estimate], axis=-1)
    elif x0_estimate is not None:
      raise ValueError("x0_estimate is for a self-conditioning DiT (dit.self_condition=True)")
    x = x.reshape(batch, frames, tokens, -1)
    if label is None:
      label = jnp.full((batch,), self.default_label, jnp.int32)
    if label.ndim == 2 and self.context_tokens:
      raise ValueError("labels per frame need the clean variant's label embedding; this DiT "
                       "conditions through context tokens, one label per video")
    if self.temporal_attention not in ("causal", "bidirectional"):
      raise ValueError(f"unknown temporal_attention {self.temporal_attention!r}; expected "
                       f"causal or bidirectional")
    if cache is not None and not self.strictly_causal:
      raise ValueError(f"a KV cache needs a strictly causal DiT, but {self.future_leak}")
    if cache is not None and self.scan_layers:
      raise ValueError("a KV cache holds one array per layer; run the cache on unrolled "
                       "layers: dit.unrolled(model, variables)")

    video = layers.dense(width, (None, "embed"), "x_embedder", dtype=self.dtype)(x)
    if self.position == "sincos_1d":
      if isinstance(first_frame, int) and first_frame + frames > self.num_frames:
        raise ValueError(f"the sincos_1d position table covers {self.num_frames} frames, got "
                         f"frames {first_frame}..{first_frame + frames - 1}")
      table = jnp.asarray(layers.sincos_table(np.arange(self.num_frames * tokens), width))
      table = jax.lax.dynamic_slice_in_dim(table, first_frame * tokens, frames * tokens)
      video = video + table.reshape(frames, tokens, width)
    elif self.position == "rope":
      video = video + layers.sincos_table(np.arange(tokens), width)
    else:
      raise ValueError(f"unknown position {self.position!r}; expected sincos_1d or rope")
    video = video.reshape(batch, frames * tokens, width)

    cond = TimestepEmbedder(width, dtype=self.dtype, name="t_embedder")(t)  # [B, F, D]
    if self.num_classes and not self.context_tokens:
      embed = nn.Embed(self.num_classes + 1, width, name="label_embedder",
                       embedding_init=layers.param_with_axes(nn.initializers.normal(0.02),
                                                             (None, "embed")))
      cond = cond + (embed(label) if label.ndim == 2 else embed(label)[:, None, :])

    frame_of_token = first_frame + jnp.repeat(jnp.arange(frames), tokens)
    if self.context_tokens:
      context = layers.dense(width, (None, "embed"), "c_embedder", dtype=self.dtype)(
          self._context(batch, label))
      video = jnp.concatenate([context.astype(video.dtype), video], axis=1)
      # Context keys sit at frame -1 (visible to all); context queries see either every
      # frame (the authors' leak) or only the context.
      query_context = EMPTY_SLOT if self.context_sees_video else -1
      key_frames = jnp.concatenate([jnp.full((self.context_tokens,), -1), frame_of_token])
      query_frames = jnp.concatenate([jnp.full((self.context_tokens,), query_context),
                                      frame_of_token])
    else:
      key_frames = query_frames = frame_of_token
    positions = jnp.broadcast_to(jnp.maximum(key_frames, 0)[None], (batch, key_frames.shape[0]))
    kv_cache = None
    if cache is not None:
      # Slots at or after first_frame are being recomputed in this window: not read.
      slot_frames = jnp.where(cache.frames < first_frame, cache.frames, EMPTY_SLOT)
      key_frames = jnp.concatenate([jnp.repeat(slot_frames, tokens), key_frames])
      kv_cache = (cache.keys, cache.values)
    causal = self.temporal_attention == "causal"
    mask = layers.frame_mask(query_frames[None], key_frames[None], attention_window, causal)
    h = layers.constrain(video, ("act_batch", "act_length", "act_embed"))

    block_kwargs = dict(num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
                        residual=self.residual, context_tokens=self.context_tokens,
                        use_rope=self.position == "rope", dtype=self.dtype,
                        attention_chunks=math.gcd(self.attention_chunks, frames) if causal else 1)
    if self.scan_layers:
      block = nn.remat(Block, prevent_cse=False) if self.remat else Block
      h, _ = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=self.depth,
                     metadata_params={nn.PARTITION_NAME: "layers"})(
                         **block_kwargs, name="blocks")(h, cond, mask, positions)
    else:
      block = nn.remat(Block) if self.remat else Block
      layer_kv = []
      for i in range(self.depth):
        layer_cache = None if kv_cache is None else (kv_cache[0][i], kv_cache[1][i])
        h, kv_i = block(**block_kwargs, name=f"blocks_{i}")(h, cond, mask, positions, layer_cache)
        layer_kv.append(kv_i)
      kv = None if kv_cache is None else tuple(zip(*layer_kv))

    h = layers.layer_norm(h[:, self.context_tokens:]).reshape(batch, frames, tokens, width)
    if self.final_modulation:
      mod = layers.dense((2, width), ("embed", None, "mlp"), "final_adaLN",
                         kernel_init=layers.zeros, dtype=self.dtype)(nn.silu(cond))
      h = modulate(h, mod[:, :, 0, None], mod[:, :, 1, None])
    out = layers.dense(self.token_patch * channels, ("embed", None), "final_layer",
                       kernel_init=layers.zeros, dtype=self.dtype)(h).astype(jnp.float32)
    out = out.reshape(batch, frames, latent_tokens, channels)
    return out if cache is None else (out, kv)


def unrolled(model: DiT, variables):
  """The same network with unrolled layers and no remat, and its variables to match
  (the stacked `blocks` [depth, ...] split into `blocks_i`). For inference: a scanned
  layer slices (copies) its weights out of the stack on every call, which dominates a
  small-batch forward pass."""
  if not model.scan_layers:
    return model.clone(remat=False), variables
  params = dict(variables["params"])
  stacked = params.pop("blocks")
  for i in range(model.depth):
    params[f"blocks_{i}"] = jax.tree.map(lambda a, i=i: a[i], stacked)
  return model.clone(scan_layers=False, remat=False), {**variables, "params": params}


def dit_from_config(dit_config) -> DiT:
  """Builds the DiT from a config's `dit` section: `variant`, `size` and any overrides."""
  return module_from_config(DiT, VARIANTS, PRESETS, dit_config)
