"""The authors' PyTorch checkpoints -> our `official` variants (docs/porting.md).

`ardiff convert official-dit | official-vae | titok-init`. Each reads a state dict one
tensor at a time (`convert.open_state_dict`), checks every key and shape against the
model the config describes, and writes an orbax checkpoint with that config, which
`ardiff sample`, `Generator.from_checkpoint` and `vae_train.init_from` read.

A conversion is a list of `Rule`s: one official tensor, the leaf it fills and how its
layout changes. Every problem (missing key, unexpected key, wrong shape) is collected
and raised together in one `CheckpointError`.
"""

import dataclasses
import re
from typing import Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ardiffusion_jax import config as config_lib, diffusion
from ardiffusion_jax.convert import open_state_dict, write_model_checkpoint
from ardiffusion_jax.errors import CheckpointError
from ardiffusion_jax.models import ar_vae, dit, layers

# The official head widths: the DiT's 1152 / 16, TiTok's 1024 / 16.
DIT_HEAD_DIM = 72
VAE_HEAD_DIM = 64


@dataclasses.dataclass(frozen=True)
class Rule:
  """Official tensor `source` (PyTorch layout, `shape`) -> our leaf `target`.

  `convert` maps the PyTorch array to our layout; `layer` indexes a leaf stacked over
  layers by `nn.scan` (None: not stacked).
  """
  source: str
  target: tuple
  shape: tuple
  convert: Callable[[np.ndarray], np.ndarray]
  layer: Optional[int] = None


def _copy(array):
  return array


def _linear(our_shape):
  """A Linear [out, in] or 1x1 conv [out, in, 1, 1] -> our kernel ([in, out] reshaped)."""
  return lambda w: np.ascontiguousarray(w.reshape(w.shape[0], -1).T).reshape(our_shape)


def _conv(w):
  """[out, in, kh, kw] -> [kh, kw, in, out]."""
  return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def _rows(start, stop, our_shape):
  """Rows [start:stop] of a packed Linear (q, k or v of `in_proj_weight`)."""
  convert = _linear(our_shape)
  return lambda w: convert(w[start:stop])


class RuleSet:
  """Builds the rules of one model from its abstract parameter tree."""

  def __init__(self, abstract_params: dict, stacked_prefix: Optional[str] = None):
    self.shapes = {k: tuple(v.shape) for k, v in
                   flax.traverse_util.flatten_dict(abstract_params).items()}
    self.stacked_prefix = stacked_prefix  # e.g. "blocks": leaves under it have a layer axis
    self.rules = []

  def _target(self, path):
    """(target, our per-layer shape, layer) for a path like ("blocks_3", "attn", ...)."""
    match = re.fullmatch(r"(\w+)_(\d+)", path[0]) if self.stacked_prefix else None
    if match and match.group(1) == self.stacked_prefix:
      target = (self.stacked_prefix,) + tuple(path[1:])
      return target, self.shapes[target][1:], int(match.group(2))
    return tuple(path), self.shapes[tuple(path)], None

  def add(self, source, path, kind="copy", rows=None):
    target, shape, layer = self._target(path)
    if kind == "copy":
      torch_shape, convert = shape, _copy
    elif kind == "bias":
      torch_shape, convert = (int(np.prod(shape)),), lambda b: b.reshape(shape)
    elif kind in ("linear", "conv1x1"):
      # Attention output projections [H, hd, D] contract two axes; other kernels one.
      split = 2 if path[-2] == "proj" else 1
      fan_in, fan_out = int(np.prod(shape[:split])), int(np.prod(shape[split:]))
      torch_shape = (fan_out, fan_in) + ((1, 1) if kind == "conv1x1" else ())
      convert = _linear(shape)
    elif kind == "conv":
      torch_shape, convert = (shape[3], shape[2], shape[0], shape[1]), _conv
    elif kind == "qkv_rows":  # one of q, k, v from a packed in_proj
      index, width = rows
      torch_shape = (3 * width,) + ((width,) if len(shape) == 3 else ())
      if len(shape) == 3:
        convert = _rows(index * width, (index + 1) * width, shape)
      else:
        convert = lambda b, i=index: b[i * width:(i + 1) * width].reshape(shape)
    else:
      raise ValueError(kind)
    self.rules.append(Rule(source, target, tuple(torch_shape), convert, layer))

  def linear(self, source, path, kind="linear"):
    self.add(f"{source}.weight", path + ("kernel",), kind)
    self.add(f"{source}.bias", path + ("bias",), "bias")

  def norm(self, source, path):
    self.add(f"{source}.weight", path + ("scale",))
    self.add(f"{source}.bias", path + ("bias",))

  def packed_attention(self, source, path, width, packed=True):
    """nn.MultiheadAttention: in_proj [3W, W] rows q; k; v, then out_proj."""
    if packed:  # our fused qkv kernel [W, 3, H, hd]: the packed rows reshape directly
      self.add(f"{source}.in_proj_weight", path + ("qkv", "kernel"), "linear")
      self.add(f"{source}.in_proj_bias", path + ("qkv", "bias"), "bias")
    else:  # separate q, k, v
      for index, name in enumerate("qkv"):
        self.add(f"{source}.in_proj_weight", path + (name, "kernel"), "qkv_rows", (index, width))
        self.add(f"{source}.in_proj_bias", path + (name, "bias"), "qkv_rows", (index, width))
    self.linear(f"{source}.out_proj", path + ("proj",))


def _apply(rules, state, shapes, allow_missing, fresh_params):
  """Fills every leaf from its rule; reports all problems together."""
  missing, wrong = [], []
  for rule in rules:
    if rule.source not in state:
      missing.append(rule.source)
    elif tuple(state.shape(rule.source)) != rule.shape:
      wrong.append(f"{rule.source}: shape {tuple(state.shape(rule.source))}, expected {rule.shape}")
  used = {rule.source for rule in rules}
  unexpected = sorted(set(state.keys()) - used)
  problems = []
  if missing and not allow_missing:
    problems.append(f"{len(missing)} missing: " + ", ".join(missing))
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected: " + ", ".join(unexpected))
  if wrong:
    problems.append(f"{len(wrong)} with the wrong shape: " + "; ".join(wrong))
  if problems:
    raise CheckpointError(f"{state.path} does not match the model: " + " | ".join(problems)
                          + (" (--allow-missing loads a partial state dict on purpose)"
                             if missing and not allow_missing else ""))
  filled_by = {}
  for rule in rules:
    filled_by.setdefault(rule.target, []).append(rule)
  flat = {}
  for target, shape in shapes.items():
    if target not in filled_by:
      raise CheckpointError(f"internal: no rule fills {'/'.join(target)}")
    if all(rule.source not in missing for rule in filled_by[target]):
      flat[target] = np.empty(shape, np.float32)  # filled below, one tensor at a time
    else:  # a deliberate partial load: what is missing keeps a fresh initialisation
      flat[target] = np.array(fresh_params()[target], np.float32)
  for rule in rules:
    if rule.source in missing:
      continue
    value = rule.convert(np.asarray(state[rule.source], np.float32))
    if rule.layer is None:
      flat[rule.target][...] = value
    else:
      flat[rule.target][rule.layer] = value
  return flax.traverse_util.unflatten_dict(flat), missing


def _fresh(model):
  """Lazily initialised parameters (only built when a partial load needs them)."""
  cache = {}

  def get():
    if not cache:
      example = [jnp.zeros(x.shape, x.dtype) for x in model.example_inputs()]
      params = nn.meta.unbox(model.init(jax.random.key(0), *example))["params"]
      cache.update(flax.traverse_util.flatten_dict(jax.device_get(params)))
    return cache
  return get


def _abstract(model):
  return nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                      *model.example_inputs()))["params"]


# ------------------------------------------------------------------------------- DiT

DIT_PREFIX = "diffusion_model.model."
DIFFUSION_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "logvar")


def _count(state, pattern):
  found = {int(m.group(1)) for key in state.keys() if (m := re.fullmatch(pattern, key))}
  if found != set(range(len(found))):
    raise CheckpointError(f"layer indices {sorted(found)} of {pattern!r} are not 0..{len(found) - 1}")
  return len(found)


def _need(state, key):
  if key not in state:
    raise CheckpointError(f"{state.path} has no {key!r}; is it an official "
                          f"{'AR-Diffusion' if key.startswith('diff') else 'AR-VAE'} checkpoint?")
  return tuple(state.shape(key))


def dit_config_from_state(state, config):
  """Sets config.dit (official variant) and data/sample frames from the tensor shapes.
  The head count is not in the shapes: config.dit.num_heads when set, else width / 72."""
  hidden, channels = _need(state, DIT_PREFIX + "x_embedder.weight")
  positions = _need(state, DIT_PREFIX + "pos_embed")[1]
  tokens = config.dit.tokens_per_frame
  if positions % tokens:
    raise CheckpointError(f"pos_embed covers {positions} positions, not a multiple of "
                          f"dit.tokens_per_frame={tokens}")
  if "class_emb" in state:
    rows, context_tokens, context_dim = state.shape("class_emb")
    num_classes = rows - 1
  else:
    context_tokens, context_dim = _need(state, "context_emb")
    num_classes = 0
  heads = config.dit.get("num_heads") or max(hidden // DIT_HEAD_DIM, 1)
  mlp = _need(state, DIT_PREFIX + "blocks.0.mlp.fc1.weight")[0]
  config.dit.update(variant="official", hidden_size=hidden, depth=_count(
      state, re.escape(DIT_PREFIX) + r"blocks\.(\d+)\.attn\.qkv\.weight"), num_heads=heads,
                    mlp_ratio=mlp / hidden, in_channels=channels, num_frames=positions // tokens,
                    num_classes=num_classes, context_tokens=context_tokens,
                    context_dim=context_dim, dtype="float32", remat=False,
                    # The authors' DiT: one latent token per DiT token, no self-conditioning.
                    token_patch=1, self_condition=False)
  config.data.num_frames = config.sample.num_frames = positions // tokens
  config.diffusion.ddim_grid = "official"
  if hidden % heads:
    raise CheckpointError(f"hidden size {hidden} is not divisible by {heads} heads; set "
                          "config.dit.num_heads (--num-heads N)")
  config_lib.validate(config)
  return config


def dit_rules(model: dit.DiT, abstract_params) -> RuleSet:
  rules = RuleSet(abstract_params, "blocks" if model.scan_layers else None)
  p = DIT_PREFIX
  rules.linear(p + "x_embedder", ("x_embedder",))
  rules.linear(p + "c_embedder", ("c_embedder",))
  rules.linear(p + "t_embedder.mlp.0", ("t_embedder", "mlp_0"))
  rules.linear(p + "t_embedder.mlp.2", ("t_embedder", "mlp_2"))
  for i in range(model.depth):
    block = (f"blocks_{i}",)
    rules.linear(f"{p}blocks.{i}.attn.qkv", block + ("attn", "qkv"))
    rules.linear(f"{p}blocks.{i}.attn.proj", block + ("attn", "proj"))
    rules.linear(f"{p}blocks.{i}.mlp.fc1", block + ("mlp", "fc1"))
    rules.linear(f"{p}blocks.{i}.mlp.fc2", block + ("mlp", "fc2"))
    rules.linear(f"{p}blocks.{i}.adaLN_modulation.1", block + ("adaLN_modulation",))
  rules.linear(p + "final_layer.1", ("final_layer",))
  return rules


def expected_buffers(config, model) -> dict:
  """The official checkpoint's fixed tensors as this config recomputes them (float64):
  LatentDiffusion's schedule buffers and the DiT's sin-cos `pos_embed`."""
  betas = diffusion.beta_schedule(config.diffusion.beta_schedule, config.diffusion.num_timesteps,
                                  config.diffusion.beta_start, config.diffusion.beta_end)
  alphas = np.cumprod(1.0 - betas)
  prev = np.append(1.0, alphas[:-1])
  variance = betas * (1.0 - prev) / (1.0 - alphas)
  expected = dict(
      betas=betas, alphas_cumprod=alphas, alphas_cumprod_prev=prev,
      sqrt_alphas_cumprod=np.sqrt(alphas), sqrt_one_minus_alphas_cumprod=np.sqrt(1 - alphas),
      log_one_minus_alphas_cumprod=np.log(1 - alphas),
      sqrt_recip_alphas_cumprod=np.sqrt(1 / alphas), sqrt_recipm1_alphas_cumprod=np.sqrt(1 / alphas - 1),
      posterior_variance=variance, posterior_log_variance_clipped=np.log(np.maximum(variance, 1e-20)),
      posterior_mean_coef1=betas * np.sqrt(prev) / (1 - alphas),
      posterior_mean_coef2=(1 - prev) * np.sqrt(1 - betas) / (1 - alphas),
      logvar=np.zeros_like(betas))
  expected = {f"diffusion_model.{k}": v for k, v in expected.items()}
  tokens = model.num_frames * model.tokens_per_frame
  expected[DIT_PREFIX + "pos_embed"] = layers.sincos_table(np.arange(tokens), model.hidden_size)[None]
  return expected


def _check_buffers(state, config, model):
  """The recomputed buffers must equal the saved ones (then they are dropped)."""
  expected = expected_buffers(config, model)
  bad = []
  for key, value in expected.items():
    if key not in state:
      continue
    saved = np.asarray(state[key], np.float64)
    if saved.shape != value.shape or not np.allclose(saved, value, rtol=1e-5, atol=1e-6):
      bad.append(key)
  if bad:
    raise CheckpointError(
        f"{state.path}: the fixed buffers {', '.join(bad)} differ from the ones this config "
        f"recomputes (diffusion.beta_schedule={config.diffusion.beta_schedule!r}, "
        f"beta_start={config.diffusion.beta_start}, beta_end={config.diffusion.beta_end}, "
        f"num_timesteps={config.diffusion.num_timesteps}); fix the config's diffusion section")
  return set(expected)


def convert_official_dit(input_path, output, config, allow_missing=False, allow_nonfinite=False):
  """Reads the official DiT state dict, writes an orbax checkpoint of the `official`
  variant (its weights are the EMA ones: the authors swap the EMA into the model before
  every save). Returns (config, missing keys)."""
  state = open_state_dict(input_path, allow_nonfinite)
  config = dit_config_from_state(state, config)
  model = dit.dit_from_config(config.dit)
  rules = dit_rules(model, _abstract(model))
  table = "class_emb" if model.num_classes else "context_emb"
  context_shape = ((model.num_classes + 1,) if model.num_classes else ()) + (
      model.context_tokens, model.context_dim)
  rules.rules.append(Rule(table, ("constants", table), context_shape, _copy))
  rules.shapes[("constants", table)] = context_shape
  buffers = _check_buffers(state, config, model)
  params, missing = _apply(rules.rules, state.without(buffers), rules.shapes, allow_missing,
                           _fresh(model))
  constants = params.pop("constants")
  write_model_checkpoint(output, config, {"ema_params": params, "constants": constants})
  return config, missing


# ---------------------------------------------------------------------------- AR-VAE

def vae_config_from_state(state, config):
  """Sets config.vae (official variant) from the tensor shapes; heads (width / 64) and
  GroupNorm groups (32) are not in the shapes: config.vae.num_heads / norm_groups."""
  width = _need(state, "encoder.class_embedding")[1]
  patch = _need(state, "encoder.patch_embed.weight")[2]
  grid = int(round((_need(state, "encoder.positional_embedding")[0] - 1) ** 0.5))
  hidden = _need(state, "pixel_decoder.norm_out.weight")[0]
  stages = _count(state, r"pixel_decoder\.up\.(\d+)\.block\.0\.conv1\.weight")
  mult = tuple(state.shape(f"pixel_decoder.up.{k}.block.0.conv1.weight")[0] // hidden
               for k in range(stages))
  config.vae.update(
      variant="official", width=width,
      depth=_count(state, r"encoder\.transformer\.(\d+)\.ln_1\.weight"),
      num_heads=config.vae.get("num_heads") or max(width // VAE_HEAD_DIM, 1),
      norm_groups=config.vae.get("norm_groups") or 32, image_size=grid * patch,
      patch_size=patch, num_latent_tokens=_need(state, "latent_tokens")[0],
      token_dim=_need(state, "decoder.decoder_embed.weight")[1],
      pixel_hidden=hidden, channel_mult=mult,
      pixel_res_blocks=_count(state, r"pixel_decoder\.up\.0\.block\.(\d+)\.conv1\.weight"),
      pixel_z_channels=_need(state, "pixel_quantize_conv.weight")[0],
      pixel_codebook_size=_need(state, "decoder.ffn.2.weight")[0],
      temporal_causal="decoder.fine_temporal_blocks.0.ln_1.weight" in state, dtype="float32",
      proxy_head=False)  # the authors' checkpoints have none; init_from starts one fresh
  if "vae_train" in config:
    config.vae_train.proxy_weight = 0.0
  config.data.resolution = grid * patch
  if _need(state, "encoder.transformer.0.mlp.c_fc.weight")[0] != 4 * width:
    raise CheckpointError("the AR-VAE's MLP ratio is not 4")
  config_lib.validate(config)
  return config


def _vit_rules(rules, source, path, depth, width):
  rules.add(f"{source}.class_embedding", path + ("class_embedding",))
  rules.add(f"{source}.positional_embedding", path + ("positional_embedding",))
  rules.add(f"{source}.latent_token_positional_embedding", path + ("latent_token_positional_embedding",))
  rules.norm(f"{source}.ln_pre", path + ("ln_pre",))
  rules.norm(f"{source}.ln_post", path + ("ln_post",))
  for i in range(depth):
    block, name = f"{source}.transformer.{i}", path + (f"transformer_{i}",)
    rules.norm(f"{block}.ln_1", name + ("ln_1",))
    rules.norm(f"{block}.ln_2", name + ("ln_2",))
    rules.packed_attention(f"{block}.attn", name + ("attn",), width)
    rules.linear(f"{block}.mlp.c_fc", name + ("mlp", "fc1"))
    rules.linear(f"{block}.mlp.c_proj", name + ("mlp", "fc2"))


def vae_rules(model: ar_vae.ARVAE, abstract_params) -> RuleSet:
  rules = RuleSet(abstract_params)
  width = model.width
  rules.add("latent_tokens", ("latent_tokens",))
  _vit_rules(rules, "encoder", ("encoder",), model.depth, width)
  rules.add("encoder.patch_embed.weight", ("encoder", "patch_embed", "kernel"), "conv")
  rules.add("encoder.patch_embed.bias", ("encoder", "patch_embed", "bias"), "bias")
  rules.linear("encoder.conv_out", ("encoder", "conv_out"), "conv1x1")
  _vit_rules(rules, "decoder", ("decoder",), model.depth, width)
  rules.add("decoder.mask_token", ("decoder", "mask_token"))
  rules.linear("decoder.decoder_embed", ("decoder", "decoder_embed"))
  rules.linear("decoder.ffn.0", ("decoder", "ffn_0"), "conv1x1")
  rules.linear("decoder.ffn.2", ("decoder", "ffn_2"), "conv1x1")
  if model.temporal_causal:
    for i in range(model.depth):
      name = ("decoder", f"temporal_{i}")
      fine, coarse = f"decoder.fine_temporal_blocks.{i}", f"decoder.coarse_temporal_blocks.{i}"
      rules.norm(f"{fine}.ln_1", name + ("fine_ln",))
      rules.packed_attention(f"{fine}.attn", name + ("fine_attn",), width, packed=False)
      for ln in ("ln_q", "ln_k", "ln_v"):
        rules.norm(f"{coarse}.{ln}", name + (ln,))
      rules.packed_attention(f"{coarse}.attn", name + ("coarse_attn",), width, packed=False)
  rules.linear("pixel_quantize_conv", ("pixel_quantize_conv",), "conv1x1")
  pixel = ("pixel_decoder",)
  rules.add("pixel_decoder.conv_in.weight", pixel + ("conv_in", "kernel"), "conv")
  rules.add("pixel_decoder.conv_in.bias", pixel + ("conv_in", "bias"), "bias")
  blocks = [(f"pixel_decoder.mid.{i}", f"mid_{i}") for i in range(2)]
  for k in range(len(model.channel_mult)):
    blocks += [(f"pixel_decoder.up.{k}.block.{j}", f"up_{k}_block_{j}")
               for j in range(model.pixel_res_blocks)]
    if k > 0:
      rules.add(f"pixel_decoder.up.{k}.upsample_conv.weight", pixel + (f"up_{k}_upsample_conv", "kernel"), "conv")
      rules.add(f"pixel_decoder.up.{k}.upsample_conv.bias", pixel + (f"up_{k}_upsample_conv", "bias"), "bias")
  for source, name in blocks:
    rules.norm(f"{source}.norm1", pixel + (name, "norm1"))
    rules.norm(f"{source}.norm2", pixel + (name, "norm2"))
    rules.add(f"{source}.conv1.weight", pixel + (name, "conv1", "kernel"), "conv")
    rules.add(f"{source}.conv2.weight", pixel + (name, "conv2", "kernel"), "conv")
    if pixel + (name, "nin_shortcut", "kernel") in rules.shapes:
      rules.add(f"{source}.nin_shortcut.weight", pixel + (name, "nin_shortcut", "kernel"), "conv")
  rules.norm("pixel_decoder.norm_out", pixel + ("norm_out",))
  rules.add("pixel_decoder.conv_out.weight", pixel + ("conv_out", "kernel"), "conv")
  rules.add("pixel_decoder.conv_out.bias", pixel + ("conv_out", "bias"), "bias")
  return rules


def convert_state_to_vae(state, output, config, allow_missing=False):
  config = vae_config_from_state(state, config)
  model = ar_vae.vae_from_config(config.vae)
  rules = vae_rules(model, _abstract(model))
  params, missing = _apply(rules.rules, state, rules.shapes, allow_missing, _fresh(model))
  write_model_checkpoint(output, config, {"params": params})
  return config, missing


def convert_official_vae(input_path, output, config, allow_missing=False, allow_nonfinite=False):
  """TiTok_KL or TiTok_KL_wT (temporal-causal decoder) -> the `official` AR-VAE.
  Returns (config, missing keys)."""
  return convert_state_to_vae(open_state_dict(input_path, allow_nonfinite), output, config,
                              allow_missing)


def titok_to_arvae_state(state):
  """TiTok-L-32 (VQ, token_size 12) -> an AR-VAE state dict as the authors' VAE training
  script initialises it: mean <- channels [0:4], logvar <- [h:h+4] with h = token_size / 2,
  the decoder embedding's first 4 columns, the VQ codebook dropped. Unlike their code, the
  pixel codebook is copied into the soft-codebook conv (`pixel_quantize_conv`)."""
  token_size = _need(state, "encoder.conv_out.weight")[0]
  half, dim = token_size // 2, 4
  if token_size < 2 * dim:
    raise CheckpointError(f"encoder.conv_out has {token_size} channels; TiTok-init needs >= {2 * dim}")
  rows = np.r_[0:dim, half:half + dim]
  codebook_key = "pixel_quantize.embedding.weight"
  codebook_shape = _need(state, codebook_key)

  def mapping(key):
    if key == "encoder.conv_out.weight" or key == "encoder.conv_out.bias":
      return key, lambda a: a[rows]
    if key == "decoder.decoder_embed.weight":
      return key, lambda a: a[:, :dim]
    if key == codebook_key:  # [K, Z] -> conv [Z, K, 1, 1]
      return "pixel_quantize_conv.weight", lambda a: np.ascontiguousarray(a.T)[:, :, None, None]
    if key == "quantize.embedding.weight":
      return None, None
    return key, None

  extra = {"pixel_quantize_conv.bias": np.zeros(codebook_shape[1], np.float32)}
  return state.mapped(mapping, extra)


def convert_titok_init(input_path, output, config, allow_missing=False, allow_nonfinite=False):
  """TiTok-L-32 weights -> an AR-VAE initialisation (`vae_train.init_from`)."""
  state = open_state_dict(input_path, allow_nonfinite)
  return convert_state_to_vae(titok_to_arvae_state(state), output, config, allow_missing)
