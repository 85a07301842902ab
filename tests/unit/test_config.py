"""Configs load, validate before compiling, and name the bad field when they fail."""

import pytest

from ardiffusion_jax import config as config_lib
from ardiffusion_jax.models import dit
from ardiffusion_jax.errors import ArgumentError, ConfigError


@pytest.mark.parametrize("variant", ["default", "smoke"])
def test_variants_load_and_validate(variant):
  config = config_lib.load_config(f"configs/synthetic.py:{variant}", num_devices=8)
  assert config.variant == variant
  assert config.data.resolution % config.vae.patch_size == 0


def test_the_motion_stage_finetunes_a_run_on_clips_of_three():
  spec = "configs/synthetic.py:vae_motion"
  with pytest.raises(ConfigError, match="vae_train.motion_weight"):  # needs a run to start from
    config_lib.load_config(spec)
  config = config_lib.load_config(spec, ["vae_train.init_from='runs/demo/vae'"], num_devices=2)
  train = config.vae_train
  assert (train.clip_frames, train.motion_weight, train.disc_start) == (3, 0.05, -1)
  assert config.vae == config_lib.config_from_file("configs/synthetic.py", "default").vae


@pytest.mark.parametrize("dataset", ["ucf101", "sky", "taichi", "faceforensics"])
def test_dataset_vae_configs_keep_the_authors_optimizer(dataset):
  # Spec §1.7: AdamW (0.9, 0.999), no EMA. The synthetic tiny tokenizer's beta2 and EMA
  # (tuned for the 10-minute bench) must not leak into them.
  for variant in ("vae", "vae_causal"):
    train = config_lib.config_from_file(f"configs/{dataset}.py", variant).vae_train
    assert (train.b1, train.b2, train.ema_decay) == (0.9, 0.999, 0.0)
  assert config_lib.config_from_file("configs/synthetic.py", "vae").vae_train.ema_decay > 0


def test_the_demos_tokenizer_has_no_adversarial_stage():
  from ardiffusion_jax.train import vae as train_vae
  for variant in ("default", "smoke"):  # the demo, and the demo at CI's size
    train = config_lib.config_from_file("configs/synthetic.py", variant).vae_train
    assert {train_vae.phase_of(step, train.disc_start) for step in range(train.steps)} == {"generator"}
    # A longer run stays in stage 1: a disc_start pinned to the default step count once
    # turned --set vae_train.steps=5000 into 1,000 silent adversarial steps.
    longer = config_lib.load_config(f"configs/synthetic.py:{variant}", ["vae_train.steps=100000"])
    assert train_vae.phase_of(longer.vae_train.steps - 1, longer.vae_train.disc_start) == "generator"
  staged = config_lib.config_from_file("configs/synthetic.py", "vae").vae_train
  assert train_vae.phase_of(staged.steps - 1, staged.disc_start) != "generator"  # stage 2 runs


@pytest.mark.parametrize("dataset", ["synthetic", "ucf101", "sky", "taichi", "faceforensics"])
def test_the_paper_dit_configs_keep_one_latent_token_a_transformer_token(dataset):
  # The demo's DiT groups a frame's 32 tokens (token_patch = 32); the authors' must not.
  variant = "paper" if dataset == "synthetic" else "dit"
  model = dit.dit_from_config(config_lib.config_from_file(f"configs/{dataset}.py", variant).dit)
  assert (model.token_patch, model.hidden_size, model.depth) == (1, 1152, 28)
  demo = dit.dit_from_config(config_lib.config_from_file("configs/synthetic.py", "default").dit)
  assert demo.token_patch == 32 and demo.frame_tokens == 1


@pytest.mark.parametrize("overrides,field", [
    (["data.num_frames=0"], "data.num_frames"),
    (["vae.patch_size=7"], "vae.patch_size"),
    (["diffusion.timestep_scheme='sideways'"], "diffusion.timestep_scheme"),
    (["diffusion.ddim_grid='official'", "diffusion.sampling_steps=30"], "diffusion.sampling_steps"),
    (["sample.s_values=(0, 60)"], "sample.s_values"),
    (["mesh.fsdp=3"], "mesh"),
    (["diffusion.beta_schedule='quadratic'"], "diffusion.beta_schedule"),
    (["vae_train.pixel_loss='l3'"], "vae_train.pixel_loss"),
    (["vae.proxy_head=False"], "vae_train.proxy_weight"),  # a weight for a missing head
    (["vae_train.proxy_weight=-1.0"], "vae_train.proxy_weight"),
    (["vae_train.chroma_weight=-0.5"], "vae_train.chroma_weight"),
    (["vae_train.lr_schedule='wsd'"], "vae_train.decay_steps"),  # wsd needs its decay steps
    (["vae_train.lr_schedule='wsd'", "vae_train.decay_steps=21"], "vae_train.decay_steps"),
    (["vae_train.motion_weight=-0.1"], "vae_train.motion_weight"),
    # The motion term needs clips of >= 3 frames, and a trained tokenizer to start from.
    (["vae_train.motion_weight=0.1", "vae_train.init_from='runs/vae'"], "vae_train.motion_weight"),
    (["vae_train.motion_weight=0.1", "vae_train.clip_frames=3"], "vae_train.motion_weight"),
    (["vae_train.ema_decay=1.0"], "vae_train.ema_decay"),
    (["dit.attention_chunks=3"], "dit.attention_chunks"),
    (["dit.token_patch=3"], "dit.token_patch"),
    (["dit.temporal_attention='acausal'"], "dit.temporal_attention"),
    (["diffusion.loss_snr_clip=(5, 1)"], "diffusion.loss_snr_clip"),
    (["diffusion.loss_snr_clip=(1,)"], "diffusion.loss_snr_clip"),
    (["diffusion.loss_snr_clip=(0, 0)"], "diffusion.loss_snr_clip"),
    (["diffusion.loss_snr_clip=('a', 5)"], "diffusion.loss_snr_clip"),
    (["train.self_condition_rate=1.5"], "train.self_condition_rate"),
])
def test_bad_fields_are_named(overrides, field):
  with pytest.raises(ConfigError) as error:
    config_lib.load_config("configs/synthetic.py:smoke", overrides, num_devices=8)
  assert error.value.field == field
  assert str(error.value).startswith(f"config.{field}: ")


def test_mesh_resolution():
  mesh = {"data": -1, "fsdp": 4, "tensor": 1}
  assert config_lib.resolve_mesh_shape(mesh, 8) == (2, 4, 1)
  assert config_lib.resolve_mesh_shape({"data": 8, "fsdp": 1, "tensor": 1}, 8) == (8, 1, 1)
  with pytest.raises(ConfigError, match="multiple of 3"):
    config_lib.resolve_mesh_shape({"data": -1, "fsdp": 3, "tensor": 1}, 8)
  with pytest.raises(ConfigError, match="use 4 devices, but there are 8"):
    config_lib.resolve_mesh_shape({"data": 4, "fsdp": 1, "tensor": 1}, 8)
  with pytest.raises(ConfigError, match="at most one axis"):
    config_lib.resolve_mesh_shape({"data": -1, "fsdp": -1, "tensor": 1}, 8)


def test_overrides_keep_types_and_reject_unknown_fields():
  config = config_lib.load_config("configs/synthetic.py:smoke", ["data.num_frames=12",
                                                                 "diffusion.eta=1"])
  assert config.data.num_frames == 12 and config.diffusion.eta == 1.0
  with pytest.raises(ConfigError, match="no field 'frames'"):
    config_lib.load_config("configs/synthetic.py:smoke", ["data.frames=12"])
  # A model field the config leaves to the size preset can be set over it, nothing else.
  deeper = config_lib.load_config("configs/synthetic.py:smoke", ["dit.depth=3",
                                                                 "dit.hidden_size=96"])
  model = dit.dit_from_config(deeper.dit)
  assert (model.depth, model.hidden_size, model.num_heads) == (3, 96, 4)
  with pytest.raises(ConfigError, match="dit.depth: expects an int, got the bool True"):
    config_lib.load_config("configs/synthetic.py:smoke", ["dit.depth=True"])
  with pytest.raises(ConfigError, match="dit.depth: must be >= 1, got 0"):
    config_lib.load_config("configs/synthetic.py:smoke", ["dit.depth=0"])
  with pytest.raises(ConfigError, match="dit.num_heads: hidden_size 96 is not divisible by "
                                        "num_heads 5"):
    config_lib.load_config("configs/synthetic.py:smoke", ["dit.hidden_size=96",
                                                           "dit.num_heads=5"])
  with pytest.raises(ConfigError, match="no field 'depht'"):
    config_lib.load_config("configs/synthetic.py:smoke", ["dit.depht=3"])
  with pytest.raises(ConfigError, match="no field 'depth'"):
    config_lib.load_config("configs/synthetic.py:smoke", ["train.depth=3"])
  with pytest.raises(ConfigError, match="data.num_frames"):
    config_lib.load_config("configs/synthetic.py:smoke", ["data.num_frames='many'"])
  with pytest.raises(ArgumentError, match="overrides: an override must look like field.sub=value"):
    config_lib.load_config("configs/synthetic.py:smoke", ["data.num_frames"])


def test_unknown_variant_and_missing_file():
  with pytest.raises(ConfigError, match="unknown variant 'huge'"):
    config_lib.load_config("configs/synthetic.py:huge")
  with pytest.raises(ConfigError, match="not found"):
    config_lib.load_config("configs/nope.py:smoke")


def test_pixel_res_blocks_is_validated_where_a_config_sets_it():
  config = config_lib.config_from_file("configs/synthetic.py", "smoke")
  config.vae.pixel_res_blocks = 0  # the presets set it; a config file may too
  with pytest.raises(ConfigError) as error:
    config_lib.validate(config, num_devices=8)
  assert error.value.field == "vae.pixel_res_blocks"


@pytest.mark.parametrize("override,field,reason", [
    ("train.lr.x=3", "train.lr", "is a value, not a section"),
    ("=3", "overrides", "must look like field.sub=value"),
    ("train.=3", "overrides", "must look like field.sub=value"),
    (".lr=3", "overrides", "must look like field.sub=value"),
    ("train..lr=3", "overrides", "must look like field.sub=value"),
    ("train.batch_size=True", "train.batch_size", "expects an int"),
    ("train.lr=False", "train.lr", "expects a float"),
    ("train.lr=1e400", "train.lr", "must be a finite number"),
    ("train.lr=-1e400", "train.lr", "must be a finite number"),
    ("train.lr=inf", "train.lr", "must be a finite number"),
    ("train.lr=nan", "train.lr", "must be a finite number"),
    ("train.batch_size=1e400", "train.batch_size", "must be a finite number"),
])
def test_malformed_overrides_are_named(override, field, reason):
  # A malformed override is a bad argument (the CLI's --set); a bad value, a config field.
  kind = ArgumentError if field == "overrides" else ConfigError
  with pytest.raises(kind, match=reason) as error:
    config_lib.load_config("configs/synthetic.py:smoke", [override])
  assert (error.value.argument if kind is ArgumentError else error.value.field) == field
  assert override in str(error.value) or kind is ConfigError


def test_bool_overrides_still_set_bool_fields():
  config = config_lib.load_config("configs/synthetic.py:smoke", ["dit.scan_layers=True"])
  assert config.dit.scan_layers is True


@pytest.mark.parametrize("field", ["train.lr", "train.lr_final", "vae_train.lr", "vae_train.disc_lr"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_learning_rates_are_refused(field, value):
  config = config_lib.config_from_file("configs/synthetic.py", "smoke")
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match="finite") as error:
    config_lib.validate(config)
  assert error.value.field == field


def test_sampling_steps_are_checked_by_one_function():
  diff = config_lib.config_from_file("configs/synthetic.py", "smoke").diffusion
  diff.ddim_grid = "official"
  assert config_lib.check_sampling_steps(20, diff) == 20
  for steps, reason in [(0, r"\[1, num_timesteps=1000\]"), (-3, "got -3"), (5000, "got 5000"),
                        (30, "divide"), (True, "an int")]:
    with pytest.raises(ConfigError, match=reason) as error:
      config_lib.check_sampling_steps(steps, diff)
    assert error.value.field == "diffusion.sampling_steps"
  diff.ddim_grid = "clean"
  assert config_lib.check_sampling_steps(30, diff) == 30


@pytest.mark.parametrize("section", ["train", "vae_train"])
def test_the_nonfinite_step_limit_is_validated(section):
  assert config_lib.load_config("configs/synthetic.py:smoke")[section].max_nonfinite_steps == 1
  with pytest.raises(ConfigError, match=rf"config.{section}.max_nonfinite_steps: must be an "
                                        rf"int >= 1, got 0"):
    config_lib.load_config("configs/synthetic.py:smoke", [f"{section}.max_nonfinite_steps=0"])


@pytest.mark.parametrize("section", ["train", "vae_train"])
def test_learning_rate_schedules_are_checked_alike(section):
  for changes, field in [({"lr_schedule": "linear"}, "lr_schedule"),
                         ({"lr_schedule": "cosine", "lr_final": 1.0}, "lr_final"),
                         ({"warmup_steps": 10**9}, "warmup_steps")]:
    config = config_lib.config_from_file("configs/synthetic.py", "smoke")
    config[section].update(changes)
    with pytest.raises(ConfigError) as error:
      config_lib.validate(config)
    assert error.value.field == f"{section}.{field}"
