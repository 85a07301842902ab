"""AR-VAE training stages on the shared loop, and latent extraction."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ardiffusion_jax import config as config_lib
from ardiffusion_jax import extract as extract_lib
from ardiffusion_jax import runs
from ardiffusion_jax.convert import portable
from ardiffusion_jax.data import latents as latents_lib
from ardiffusion_jax.data.synthetic import BouncingShapes
from ardiffusion_jax.errors import CheckpointError
from ardiffusion_jax.models import ar_vae
from ardiffusion_jax.train import vae as train_vae
from ardiffusion_jax.train.checkpoint import Checkpointer
from ardiffusion_jax.train.logging import read_metrics


def _config(variant="vae_smoke", **changes):
  return config_lib.load_config(f"configs/synthetic.py:{variant}",
                                [f"{k}={v!r}" for k, v in changes.items()])


def test_frame_stage_reconstruction_loss_falls_at_64px(tmp_path):
  config = _config("vae", **{"vae_train.batch_size": 4, "vae_train.steps": 120,
                             "vae_train.lr": 1e-3, "vae_train.warmup_steps": 0,
                             "vae_train.disc_start": -1, "vae_train.checkpoint_every": 1000,
                             "vae_train.log_every": 1, "mesh.data": 1})
  train_vae.train(config, str(tmp_path), devices=jax.devices()[:1])
  records = read_metrics(tmp_path)
  losses = [r["loss"] for r in records]
  assert len(losses) == 120
  assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:5])
  proxy = [r["proxy"] for r in records]  # the proxy head's MSE is in the loss and falls
  assert min(proxy) > 0 and np.mean(proxy[-20:]) < np.mean(proxy[:5])


def test_adversarial_stage_alternates_on_8_devices(tmp_path):
  config = _config(**{"vae_train.disc_start": 2, "vae_train.steps": 6,
                      "mesh.data": 2, "mesh.fsdp": 4})
  result = train_vae.train(config, str(tmp_path))
  records = {r["step"]: r for r in read_metrics(tmp_path)}
  # Steps are numbered from 1; state.step = n-1 picks the branch.
  assert records[1]["d_loss"] == 0 and records[1]["g_loss"] == 0  # before disc_start
  assert records[4]["d_loss"] > 0 and records[4]["g_loss"] == 0  # odd state.step: D only
  assert records[5]["g_loss"] != 0 and records[5]["d_weight"] > 0  # even: G with GAN
  kernel = result.state.disc_params["conv_3"]["kernel"]
  assert kernel.sharding.spec[-1] == "fsdp"  # sharded like every other weight
  assert kernel.addressable_shards[0].data.shape[-1] == kernel.shape[-1] // 4


def test_causal_stage_trains_only_the_temporal_blocks(tmp_path):
  stage2 = tmp_path / "stage2"
  train_vae.train(_config(**{"vae_train.steps": 2, "vae_train.disc_start": -1}), str(stage2),
                  devices=jax.devices()[:1])  # stage 2 is only where stage 3 starts
  before = runs.load_run(stage2, "vae").variables["params"]
  config = _config("vae_causal", **{
      "data.num_frames": 4, "data.resolution": 32, "vae.image_size": 32,
      "vae_train.clip_frames": 4, "vae_train.batch_size": 2, "vae_train.steps": 2,
      "vae_train.init_from": str(stage2 / "checkpoints"), "sample.num_frames": 4,
      "dit.num_frames": 4})
  snapshots = {}
  capture = lambda step, state, metrics, ckpt: snapshots.setdefault(step, jax.device_get(state.params))
  train_vae.train(config, str(tmp_path / "stage3"), hooks=[capture], devices=jax.devices()[:2])
  temporal_moved = 0
  for (path, first), last in zip(jax.tree_util.tree_leaves_with_path(snapshots[1]),
                                 jax.tree.leaves(snapshots[2])):
    name = jax.tree_util.keystr(path)
    if "temporal_" in name:
      temporal_moved += int(not np.array_equal(first, last))
      continue
    node = before
    for key in path:
      node = node[key.key]
    np.testing.assert_array_equal(last, node, err_msg=name)  # frozen at stage 2's EMA
  assert temporal_moved > 0


def _vae_params(run):
  """The weights extraction, sampling and the demo decode with."""
  loaded = runs.load_run(run, "vae")
  assert loaded.kind == "vae"
  return loaded.variables["params"]


def _assert_trees_equal(a, b):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def test_the_ema_follows_the_generator_and_is_what_decodes_and_exports(tmp_path, monkeypatch):
  config = _config(**{"vae_train.steps": 3, "vae_train.disc_start": 1, "vae_train.ema_decay": 0.5})
  seen = {}
  capture = lambda step, state, metrics, ckpt: seen.setdefault(
      step, jax.device_get((state.params, state.ema_params)))
  train_vae.train(config, str(tmp_path / "run"), hooks=[capture], devices=jax.devices()[:2])
  (params_1, ema_1), (params_2, ema_2), (params_3, ema_3) = seen[1], seen[2], seen[3]
  _assert_trees_equal(ema_2, ema_1)  # step 2 trains the discriminator only
  _assert_trees_equal(params_2, params_1)
  decay = min(0.5, (1 + 2) / (10 + 2))  # the warmup at state.step 2
  for e3, e2, p3 in zip(jax.tree.leaves(ema_3), jax.tree.leaves(ema_2), jax.tree.leaves(params_3)):
    np.testing.assert_allclose(e3, decay * e2 + (1 - decay) * p3, rtol=1e-6, atol=1e-7)
  assert not np.array_equal(ema_3["decoder"]["decoder_embed"]["kernel"],
                            params_3["decoder"]["decoder_embed"]["kernel"])

  _assert_trees_equal(_vae_params(tmp_path / "run"), ema_3)  # extract, sample, demo
  bundle = portable.export(tmp_path / "run", "safetensors", tmp_path / "portable")
  assert (bundle.kind, bundle.weights) == ("vae", "ema")
  np.testing.assert_array_equal(bundle.flat["params/decoder/decoder_embed/kernel"],
                                ema_3["decoder"]["decoder_embed"]["kernel"])
  portable.convert_portable(tmp_path / "portable", tmp_path / "back")
  _assert_trees_equal(_vae_params(tmp_path / "back"), ema_3)
  # A saved config that now builds another model (the preset changed) is refused, not
  # decoded with the parameters the model happens to use.
  monkeypatch.setitem(ar_vae.PRESETS["tiny"], "pixel_res_blocks", 2)
  with pytest.raises(CheckpointError, match=r"pixel_decoder/up_0_block_1/conv1/kernel missing"):
    _vae_params(tmp_path / "run")
  monkeypatch.undo()

  # ema_decay 0 (the authors' recipe): no EMA is kept, and the raw weights decode.
  train_vae.train(_config(**{"vae_train.steps": 1, "vae_train.ema_decay": 0.0}),
                  str(tmp_path / "no_ema"), devices=jax.devices()[:1])
  restored = Checkpointer(tmp_path / "no_ema" / "checkpoints").restore_raw()
  assert not restored.get("ema_params")
  _assert_trees_equal(_vae_params(tmp_path / "no_ema"), restored["params"])


def _save_vae_checkpoint(config, directory):
  model = ar_vae.vae_from_config(config.vae)
  size = config.data.resolution
  params = nn.meta.unbox(model.init(jax.random.key(3), jnp.zeros((1, 1, size, size, 3))))["params"]
  checkpointer = Checkpointer(directory)
  checkpointer.save(1, {"params": params, "step": jnp.int32(1)}, config=config, force=True)
  checkpointer.close()
  return model, params


def test_extraction_round_trip_and_exactly_once_after_restart(tmp_path):
  config = _config(**{"data.num_videos": 10, "data.num_frames": 4})
  model, params = _save_vae_checkpoint(config, tmp_path / "vae")
  out = tmp_path / "latents"

  class Interrupted(Exception):
    pass

  def stop_after_first(shard):
    raise Interrupted(shard)

  with pytest.raises(Interrupted):
    extract_lib.extract(config, tmp_path / "vae", out, shard_size=4, batch_size=3,
                        on_shard=stop_after_first)
  assert len(list(out.glob("*.array_record"))) == 1
  result = extract_lib.extract(config, tmp_path / "vae", out, shard_size=4, batch_size=3)
  assert result == {"shards": 3, "skipped": 1, "clips_written": 6, "skipped_files": 0}
  info = json.loads((out / "latents_info.json").read_text())
  assert info["vae_checkpoint"] == str((tmp_path / "vae").absolute())

  shards = latents_lib.LatentShards(latents_lib.shard_paths(out))
  indices = sorted(int(shards[i]["index"]) for i in range(len(shards)))
  assert indices == list(range(10))  # every clip exactly once

  source = BouncingShapes.from_config(config.data)
  example = shards[7]
  video = jnp.asarray(source[int(example["index"])]["video"][None], jnp.float32) / 255.0
  direct, _, _ = model.apply({"params": params}, video)  # mean latents, no sampling
  from_shard = model.apply({"params": params}, jnp.asarray(example["latents"][None]),
                           method=ar_vae.ARVAE.decode)
  np.testing.assert_allclose(from_shard, direct, rtol=1e-5, atol=1e-5)
  assert int(example["label"]) == int(source[int(example["index"])]["label"])


def test_phase_schedule_matches_the_authors_alternation():
  phases = [train_vae.phase_of(step, disc_start=4) for step in range(8)]
  assert phases == ["generator"] * 4 + ["generator_gan", "discriminator"] * 2
  assert {train_vae.phase_of(step, disc_start=-1) for step in range(10)} == {"generator"}
