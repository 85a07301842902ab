"""Configs load, validate before compiling, and name the bad field when they fail."""

import pytest

from ardiffusion_jax import config as config_lib
from ardiffusion_jax.errors import ConfigError


@pytest.mark.parametrize("variant", ["default", "smoke"])
def test_variants_load_and_validate(variant):
  config = config_lib.load_config(f"configs/synthetic.py:{variant}", num_devices=8)
  assert config.variant == variant
  assert config.data.resolution % config.vae.patch_size == 0


@pytest.mark.parametrize("dataset", ["ucf101", "sky", "taichi", "faceforensics"])
def test_dataset_vae_configs_keep_the_authors_optimizer(dataset):
  # Spec §1.7: AdamW (0.9, 0.999), no EMA. The synthetic tiny tokenizer's beta2 and EMA
  # (tuned for the 10-minute bench) must not leak into them.
  for variant in ("vae", "vae_causal"):
    train = config_lib.config_from_file(f"configs/{dataset}.py", variant).vae_train
    assert (train.b1, train.b2, train.ema_decay) == (0.9, 0.999, 0.0)
  assert config_lib.config_from_file("configs/synthetic.py", "vae").vae_train.ema_decay > 0


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
    (["vae_train.ema_decay=1.0"], "vae_train.ema_decay"),
    (["dit.attention_chunks=3"], "dit.attention_chunks"),
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
  with pytest.raises(ConfigError, match="data.num_frames"):
    config_lib.load_config("configs/synthetic.py:smoke", ["data.num_frames='many'"])
  with pytest.raises(ConfigError, match="field.sub=value"):
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
