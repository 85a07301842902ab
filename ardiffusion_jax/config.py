"""Loading, overriding and validating ml_collections configs.

A config is a Python file with `get_config(arg)`; it is named on the command line as
`configs/<name>.py:<variant>`. `validate` runs before anything is compiled and raises
`ConfigError` naming the field and the reason.
"""

import ast
import importlib.util
import math
import pathlib

import ml_collections

from ardiffusion_jax import diffusion, timesteps
from ardiffusion_jax.data import synthetic
from ardiffusion_jax.errors import ArgumentError, ConfigError

CONFIGS = "configs"  # the folder name configs are given under: configs/<name>.py
MESH_AXES = ("data", "fsdp", "tensor")


def resolve_config_path(path: str) -> pathlib.Path:
  """A config path as given (relative to the working directory), else a shipped one:
  `configs/<name>.py` is also looked up in the `ardiffusion_jax.configs` package, so the
  shipped configs work from any directory and from an installed package."""
  candidate = pathlib.Path(path)
  if candidate.exists() or candidate.is_absolute():
    return candidate
  parts = candidate.parts
  if len(parts) > 1 and parts[0] == CONFIGS:
    return pathlib.Path(__file__).resolve().parent / CONFIGS / pathlib.Path(*parts[1:])
  return candidate


def config_from_file(path: str, arg=None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file, not yet validated."""
  file = resolve_config_path(path)
  if not file.is_file():
    raise ConfigError("config", f"config file {path!r} not found")
  module_spec = importlib.util.spec_from_file_location(f"_ardiff_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError("config", f"{file} has no get_config(arg)")
  try:
    return module.get_config(arg or None)
  except ValueError as error:  # e.g. an unknown variant
    raise ConfigError("config", f"{path}:{arg}: {error}") from error


def load_config(spec: str, overrides=(), num_devices=None) -> ml_collections.ConfigDict:
  """Loads `path.py[:arg]`, applies `key.sub=value` overrides, then validates."""
  path, _, arg = spec.partition(":")
  config = config_from_file(path, arg)
  apply_overrides(config, overrides)
  validate(config, num_devices=num_devices)
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides):
  """Sets `a.b.c=value` entries; values are Python literals, else plain strings."""
  for item in overrides:
    key, sep, raw = item.partition("=")
    names = key.strip().split(".")
    if not sep or not all(names):
      raise ArgumentError("overrides", f"an override must look like field.sub=value, got {item!r}")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    *parents, leaf = names
    key = ".".join(names)
    node = config
    for depth, name in enumerate(parents):
      if name not in node:
        raise ConfigError(key, f"no field {name!r} in the config")
      node = node[name]
      if not isinstance(node, ml_collections.ConfigDict):
        raise ConfigError(".".join(parents[:depth + 1]),
                          f"is a value, not a section, so {key!r} cannot be set")
    if leaf not in node:
      fields = _model_fields(parents)
      if leaf not in fields:
        raise ConfigError(key, f"no field {leaf!r} in the config")
      _check_override_value(key, fields[leaf].default, value)
      node[leaf] = value  # a model field the config leaves to its size preset
      continue
    _check_override_value(key, node[leaf], value)
    try:
      node[leaf] = value  # ConfigDict keeps field types: int -> float is fine, str -> int is not.
    except (TypeError, ValueError) as error:
      raise ConfigError(key, str(error)) from error


def _model_fields(section) -> dict:
  """name -> dataclass field of the module a top-level `dit` or `vae` section builds: the
  section may set any of them over its size preset (`models.module_from_config`), so an
  override may too, e.g. `dit.depth=4` on a config that only names `dit.size`."""
  if len(section) != 1 or section[0] not in ("dit", "vae"):
    return {}
  from ardiffusion_jax.models import ar_vae, dit  # flax, only for these sections
  module = {"dit": dit.DiT, "vae": ar_vae.ARVAE}[section[0]]
  return {name: field for name, field in module.__dataclass_fields__.items()
          if name not in ("parent", "name")}


def _check_override_value(key: str, current, value):
  """What ConfigDict would accept silently: a bool for a number (True -> 1) and inf/nan."""
  if isinstance(current, bool) or not isinstance(current, (int, float)):
    return
  kind = "an int" if isinstance(current, int) else "a float"
  if isinstance(value, bool):
    raise ConfigError(key, f"expects {kind}, got the bool {value}")
  number = value
  if isinstance(value, str):
    try:
      number = float(value)  # 'inf', 'nan': not literals, but what the user meant
    except ValueError:
      return
  if isinstance(number, (int, float)) and not math.isfinite(number):
    raise ConfigError(key, f"must be a finite number, got {value!r}")


def check_sampling_steps(steps, diffusion_config) -> int:
  """DDIM steps S against a diffusion section: in [1, num_timesteps], and dividing
  num_timesteps on the official grid."""
  field = "diffusion.sampling_steps"
  total = diffusion_config.num_timesteps
  _require(isinstance(steps, int) and not isinstance(steps, bool), field,
           f"must be an int, got {steps!r}")
  _require(1 <= steps <= total, field, f"must be in [1, num_timesteps={total}], got {steps}")
  if diffusion_config.ddim_grid == "official" and total % steps:
    divisors = [d for d in range(1, total + 1) if total % d == 0]
    shown = ", ".join(map(str, divisors)) if len(divisors) <= 32 else f"{divisors[1]}, ..."
    raise ConfigError(field, f"the official DDIM grid needs the number of steps to divide "
                             f"{total} ({shown}), got {steps}")
  return steps


def resolve_mesh_shape(mesh_config, num_devices: int) -> tuple:
  """Mesh sizes for (data, fsdp, tensor); one axis may be -1 to take the rest."""
  sizes = [int(mesh_config[axis]) for axis in MESH_AXES]
  for axis, size in zip(MESH_AXES, sizes):
    if size == 0 or size < -1:
      raise ConfigError(f"mesh.{axis}", f"must be a positive size or -1, got {size}")
  if sizes.count(-1) > 1:
    raise ConfigError("mesh", "at most one axis may be -1")
  fixed = math.prod(size for size in sizes if size != -1)
  if num_devices % fixed:
    raise ConfigError("mesh", f"axes {dict(zip(MESH_AXES, sizes))} need a multiple of {fixed} "
                      f"devices, but there are {num_devices}")
  if -1 in sizes:
    sizes[sizes.index(-1)] = num_devices // fixed
  elif fixed != num_devices:
    raise ConfigError("mesh", f"axes {dict(zip(MESH_AXES, sizes))} use {fixed} devices, "
                      f"but there are {num_devices}; set one axis to -1 to fill the rest")
  return tuple(sizes)


def _require(condition: bool, field: str, reason: str):
  if not condition:
    raise ConfigError(field, reason)


def _validate_data(data):
  from ardiffusion_jax.data import datasets
  _require(data.name in datasets.DATASETS, "data.name",
           f"unknown dataset {data.name!r}; available: {', '.join(datasets.DATASETS)}")
  if data.name == "synthetic":
    synthetic.check_synthetic_fields(data)
    return
  if data.name == "tfds":
    _require(bool(data.get("tfds_dir")), "data.tfds_dir",
             "set it to a TFDS builder directory (ardiff build-tfds) or a TFDS data dir")
    _require(pathlib.Path(data.tfds_dir).is_dir(), "data.tfds_dir", f"{data.tfds_dir} is not a folder")
  else:
    _require(bool(data.get("root")), "data.root",
             f"set it to your copy of {data.name} (expected layout: README, Datasets)")
    _require(pathlib.Path(data.root).is_dir(), "data.root", f"{data.root} is not a folder")
  splits = ("train", "test")
  _require(data.get("split", "train") in splits, "data.split",
           f"expected one of {splits}, got {data.get('split')!r}")
  _require(data.num_frames >= 1, "data.num_frames", f"must be >= 1, got {data.num_frames}")
  _require(data.get("frame_stride", 1) >= 1, "data.frame_stride",
           f"must be >= 1, got {data.get('frame_stride')}")
  _require(data.resolution >= 8, "data.resolution", f"must be >= 8, got {data.resolution}")


def validate(config: ml_collections.ConfigDict, num_devices=None):
  """Checks every field the pipeline relies on; raises ConfigError on the first problem.

  `num_devices` (when given) also checks that the mesh fits that many devices.
  """
  for section in ("data", "vae", "diffusion", "sample", "mesh"):
    _require(section in config, section, "section is missing")

  data = config.data
  _validate_data(data)

  _validate_vae(config.vae, data)

  diff = config.diffusion
  _require(diff.num_timesteps >= 1, "diffusion.num_timesteps", f"must be >= 1, got {diff.num_timesteps}")
  _require(diff.beta_schedule in diffusion.BETA_SCHEDULES, "diffusion.beta_schedule",
           f"unknown schedule {diff.beta_schedule!r}; expected one of {diffusion.BETA_SCHEDULES}")
  _require(0 < diff.beta_start < diff.beta_end < 1, "diffusion.beta_start",
           f"need 0 < beta_start < beta_end < 1, got {diff.beta_start}, {diff.beta_end}")
  _require(diff.parameterization in diffusion.PARAMETERIZATIONS, "diffusion.parameterization",
           f"unknown {diff.parameterization!r}; expected one of {diffusion.PARAMETERIZATIONS}")
  snr_clip = tuple(diff.get("loss_snr_clip", ()))
  numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in snr_clip)
  _require(snr_clip == () or (len(snr_clip) == 2 and numbers and 0 <= snr_clip[0] <= snr_clip[1]
                              and snr_clip[1] > 0),
           "diffusion.loss_snr_clip",
           f"expected () for the unweighted loss or (lo, hi) with 0 <= lo <= hi and hi > 0, "
           f"got {snr_clip!r}")
  _require(diff.timestep_scheme in timesteps.SCHEMES, "diffusion.timestep_scheme",
           f"unknown scheme {diff.timestep_scheme!r}; expected one of {timesteps.SCHEMES}")
  _require(diff.ddim_grid in ("official", "clean"), "diffusion.ddim_grid",
           f"expected 'official' or 'clean', got {diff.ddim_grid!r}")
  steps = check_sampling_steps(diff.sampling_steps, diff)
  _require(diff.eta >= 0, "diffusion.eta", f"must be >= 0, got {diff.eta}")

  for s in config.sample.s_values:
    _require(0 <= s <= steps, "sample.s_values",
             f"timestep difference {s} is outside [0, sampling_steps={steps}]")
  _require(config.sample.num_frames >= 1, "sample.num_frames",
           f"must be >= 1, got {config.sample.num_frames}")

  for axis in MESH_AXES:
    _require(axis in config.mesh, f"mesh.{axis}", "axis is missing")
  mesh_shape = resolve_mesh_shape(config.mesh, num_devices) if num_devices else None
  if "dit" in config:
    _validate_dit(config.dit)
  if "train" in config:
    _validate_train(config.train, mesh_shape)
  if "vae_train" in config:
    _validate_vae_train(config.vae_train, data, config.vae, mesh_shape)
  return config


def _validate_vae(vae, data):
  patch = vae.patch_size
  _require(isinstance(patch, int) and patch >= 1, "vae.patch_size", f"must be an int >= 1, got {patch!r}")
  _require(data.resolution % patch == 0, "vae.patch_size",
           f"resolution {data.resolution} is not divisible by the patch size {patch}")
  _require(vae.num_latent_tokens >= 1, "vae.num_latent_tokens", "must be >= 1")
  _require(vae.token_dim >= 1, "vae.token_dim", "must be >= 1")
  if "variant" not in vae:
    return
  from ardiffusion_jax.models import ar_vae

  _require(vae.variant in ar_vae.VARIANTS, "vae.variant",
           f"unknown variant {vae.variant!r}; expected one of {tuple(ar_vae.VARIANTS)}")
  _require(vae.size in ar_vae.PRESETS, "vae.size",
           f"unknown size {vae.size!r}; expected one of {tuple(ar_vae.PRESETS)}")
  _require(vae.image_size == data.resolution, "vae.image_size",
           f"{vae.image_size} differs from data.resolution {data.resolution}")
  model = ar_vae.vae_from_config(vae)
  grid = model.image_size // model.patch_size
  _require(grid * 2 ** (len(model.channel_mult) - 1) == model.image_size, "vae.channel_mult",
           f"{len(model.channel_mult)} levels upsample the {grid}x{grid} grid to "
           f"{grid * 2 ** (len(model.channel_mult) - 1)}, not {model.image_size}; use "
           f"log2(patch_size) + 1 levels")
  _require(model.width % model.num_heads == 0, "vae.num_heads", "must divide the width")
  _require(model.pixel_res_blocks >= 1, "vae.pixel_res_blocks",
           f"must be >= 1, got {model.pixel_res_blocks}")
  for mult in model.channel_mult:
    _require((model.pixel_hidden * mult) % model.norm_groups == 0, "vae.norm_groups",
             f"{model.norm_groups} groups do not divide {model.pixel_hidden * mult} channels")


def _validate_vae_train(train, data, vae, mesh_shape):
  _require(train.steps >= 1, "vae_train.steps", f"must be >= 1, got {train.steps}")
  _require(train.batch_size >= 1, "vae_train.batch_size", f"must be >= 1, got {train.batch_size}")
  _check_batch_split("vae_train.batch_size", train.batch_size, mesh_shape)
  _require(1 <= train.clip_frames <= data.num_frames, "vae_train.clip_frames",
           f"must be in [1, data.num_frames={data.num_frames}], got {train.clip_frames}")
  _validate_lr_schedule(train, "vae_train")
  _check_lr("vae_train.disc_lr", train.disc_lr)
  _require(train.disc_start >= -1, "vae_train.disc_start", "must be -1 (off) or a step >= 0")
  _require(train.trainable in ("all", "temporal"), "vae_train.trainable",
           f"expected 'all' or 'temporal', got {train.trainable!r}")
  _require(train.trainable != "temporal" or vae.temporal_causal, "vae_train.trainable",
           "'temporal' needs vae.temporal_causal = True (there are no temporal blocks)")
  _require(train.perceptual_weight >= 0, "vae_train.perceptual_weight", "must be >= 0")
  ema_decay = train.get("ema_decay", 0.0)
  _require(0 <= ema_decay < 1, "vae_train.ema_decay", f"must be in [0, 1) (0: no EMA), got {ema_decay}")
  _require(train.get("pixel_loss", "l1") in ("l1", "l2"), "vae_train.pixel_loss",
           f"expected 'l1' (the authors') or 'l2', got {train.get('pixel_loss')!r}")
  proxy_weight = train.get("proxy_weight", 0.0)
  _require(proxy_weight >= 0, "vae_train.proxy_weight", f"must be >= 0, got {proxy_weight}")
  chroma_weight = train.get("chroma_weight", 0.0)
  _require(chroma_weight >= 0, "vae_train.chroma_weight", f"must be >= 0, got {chroma_weight}")
  _require(proxy_weight == 0 or vae.get("proxy_head", False), "vae_train.proxy_weight",
           "needs vae.proxy_head = True (the head whose loss it weights)")
  motion_weight = train.get("motion_weight", 0.0)
  _require(motion_weight >= 0, "vae_train.motion_weight", f"must be >= 0, got {motion_weight}")
  _require(motion_weight == 0 or train.clip_frames >= 3, "vae_train.motion_weight",
           f"scores the latents' second difference in time, so it needs clips of >= 3 "
           f"frames: set vae_train.clip_frames >= 3 (got {train.clip_frames})")
  _require(motion_weight == 0 or train.init_from, "vae_train.motion_weight",
           "finetunes a trained tokenizer (from scratch it holds it at the mean image): set "
           "vae_train.init_from to a frames-stage run folder, e.g. runs/demo/vae")
  _validate_loop_fields(train, "vae_train")


def _validate_dit(dit_config):
  from ardiffusion_jax.models import dit  # models import flax; keep plain validation light

  _require(dit_config.variant in dit.VARIANTS, "dit.variant",
           f"unknown variant {dit_config.variant!r}; expected one of {tuple(dit.VARIANTS)}")
  _require(dit_config.size in dit.PRESETS, "dit.size",
           f"unknown size {dit_config.size!r}; expected one of {tuple(dit.PRESETS)}")
  model = dit.dit_from_config(dit_config)
  _require(model.temporal_attention in ("causal", "bidirectional"), "dit.temporal_attention",
           f"expected 'causal' or 'bidirectional' (the ablation, sampled in full mode only), "
           f"got {model.temporal_attention!r}")
  _require(model.hidden_size % model.num_heads == 0, "dit.num_heads",
           f"hidden_size {model.hidden_size} is not divisible by num_heads {model.num_heads}")
  head_dim = model.hidden_size // model.num_heads
  _require(model.position != "rope" or head_dim % 2 == 0, "dit.num_heads",
           f"temporal RoPE needs an even head dim, got {head_dim}")
  _require(model.hidden_size % 2 == 0, "dit.hidden_size", "must be even (sin-cos positions)")
  _require(model.token_patch >= 1 and model.tokens_per_frame % model.token_patch == 0,
           "dit.token_patch", f"must be >= 1 and divide tokens_per_frame="
                              f"{model.tokens_per_frame}, got {model.token_patch}")
  _require(model.depth >= 1, "dit.depth", f"must be >= 1, got {model.depth}")
  _require(model.num_frames >= 1, "dit.num_frames", f"must be >= 1, got {model.num_frames}")
  _require(model.num_classes >= 0, "dit.num_classes", f"must be >= 0, got {model.num_classes}")
  _require(model.attention_chunks >= 1 and model.num_frames % model.attention_chunks == 0,
           "dit.attention_chunks", f"must divide num_frames={model.num_frames}, got "
                                   f"{model.attention_chunks}")
  _require(str(dit_config.dtype) in ("float32", "bfloat16"), "dit.dtype",
           f"expected 'float32' or 'bfloat16', got {dit_config.dtype!r}")


def _check_lr(field, lr):
  _require(math.isfinite(lr) and lr > 0, field, f"must be a finite number > 0, got {lr}")


def _validate_lr_schedule(train, section: str):
  """The fields of `train.state.learning_rate_schedule`, in `train` or `vae_train`."""
  _check_lr(f"{section}.lr", train.lr)
  _require(train.lr_schedule in ("constant", "cosine", "wsd"), f"{section}.lr_schedule",
           f"expected 'constant', 'cosine' or 'wsd', got {train.lr_schedule!r}")
  if train.lr_schedule != "constant":  # a constant schedule never reaches lr_final
    _check_lr(f"{section}.lr_final", train.lr_final)
    _require(train.lr_final <= train.lr, f"{section}.lr_final", "must be in (0, lr]")
  _require(0 <= train.warmup_steps <= train.steps, f"{section}.warmup_steps",
           "must be in [0, steps]")
  if train.lr_schedule == "wsd":
    decay = train.get("decay_steps", 0)
    _require(isinstance(decay, int) and 1 <= decay <= train.steps - train.warmup_steps,
             f"{section}.decay_steps", f"'wsd' decays over the last decay_steps steps, after "
             f"the warmup: an int in [1, steps - warmup_steps], got {decay!r}")


def _validate_loop_fields(train, section: str):
  """The shared training loop's settings (train/loop.py), in `train` or `vae_train`."""
  for field in ("log_every", "checkpoint_every", "keep_checkpoints", "max_nonfinite_steps"):
    value = train.get(field, 1)
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
             f"{section}.{field}", f"must be an int >= 1, got {value!r}")


def _check_batch_split(field, batch, mesh_shape):
  if mesh_shape is not None:
    shards = mesh_shape[0] * mesh_shape[1]
    _require(batch % shards == 0, field,
             f"a (micro-)batch of {batch} does not split over data x fsdp = {shards} devices")


def _validate_train(train, mesh_shape):
  _require(train.steps >= 1, "train.steps", f"must be >= 1, got {train.steps}")
  _require(train.batch_size >= 1, "train.batch_size", f"must be >= 1, got {train.batch_size}")
  _require(train.grad_accum >= 1 and train.batch_size % train.grad_accum == 0, "train.grad_accum",
           f"must be >= 1 and divide batch_size {train.batch_size}, got {train.grad_accum}")
  _check_batch_split("train.batch_size", train.batch_size // train.grad_accum, mesh_shape)
  _validate_lr_schedule(train, "train")
  _require(train.grad_clip > 0, "train.grad_clip", f"must be > 0, got {train.grad_clip}")
  _require(0 <= train.ema_decay < 1, "train.ema_decay", f"must be in [0, 1), got {train.ema_decay}")
  _require(0 <= train.label_dropout < 1, "train.label_dropout",
           f"must be in [0, 1), got {train.label_dropout}")
  _require(0 <= train.self_condition_rate <= 1, "train.self_condition_rate",
           f"must be in [0, 1], got {train.self_condition_rate}")
  _validate_loop_fields(train, "train")
