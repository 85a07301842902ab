"""Official checkpoints -> ours, proven against a PyTorch reference written from the authors' code
(tests/official_reference.py) with random weights under the official key names."""

import json
import pathlib
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from ardiffusion_jax import cli, config as config_lib, diffusion, sampling  # noqa: E402
from ardiffusion_jax.convert import official, portable  # noqa: E402
from ardiffusion_jax.data.video import read_video  # noqa: E402
from ardiffusion_jax.errors import CheckpointError  # noqa: E402
from ardiffusion_jax.models import ar_vae, dit  # noqa: E402
from tests import official_reference as ref  # noqa: E402
from tests import support  # noqa: E402

FRAMES, TOKENS = 4, 32


def _config(*overrides):
  return config_lib.load_config("configs/synthetic.py:smoke", list(overrides))


def _rel_error(ours, theirs):
  theirs = np.asarray(theirs, np.float64)
  return float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)) / np.max(np.abs(theirs)))


_restore = support.restore_latest


def _official_dit(num_classes, seed=0):
  torch.manual_seed(seed)
  net = ref.DiTCrossattn(hidden=64, depth=2, heads=2, num_frames=FRAMES, tokens=TOKENS, channels=4)
  return ref.randomize(ref.BaseModel(net, num_classes=num_classes), seed=seed).eval()


def _dit_inputs(num_classes, batch=2):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, FRAMES, TOKENS, 4)).astype(np.float32)
  t = np.sort(rng.integers(0, 1000, (batch, FRAMES)), axis=1)
  label = rng.integers(0, num_classes + 1, batch) if num_classes else None
  return x, t, label


@pytest.mark.parametrize("num_classes,scan,fmt", [(0, True, "safetensors"), (3, False, "pt")])
def test_official_dit_matches_the_pytorch_reference(tmp_path, num_classes, scan, fmt):
  net = _official_dit(num_classes)
  state = ref.numpy_state(net)
  if fmt == "safetensors":
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
  else:  # a DDP-wrapped torch file: the `module.` prefix is stripped
    path = tmp_path / "model.pt"
    torch.save({f"module.{k}": torch.from_numpy(v) for k, v in state.items()}, path)
  config = _config(f"dit.scan_layers={scan}")
  config.dit.num_heads = 2
  official.convert_official_dit(path, tmp_path / "out", config)

  saved_config, saved = _restore(tmp_path / "out")
  assert saved_config.dit.variant == "official" and saved_config.dit.num_classes == num_classes
  model = dit.dit_from_config(saved_config.dit)
  x, t, label = _dit_inputs(num_classes)
  variables = {"params": saved["ema_params"], "constants": saved["constants"]}
  ours = model.apply(variables, jnp.asarray(x), jnp.asarray(t),
                     None if label is None else jnp.asarray(label))
  with torch.no_grad():
    theirs = net(torch.from_numpy(x), torch.from_numpy(t),
                 None if label is None else torch.from_numpy(label)).numpy()
  assert _rel_error(ours, theirs) <= 1e-5


@pytest.fixture(scope="module")
def converted_official_dits(tmp_path_factory):
  """{num_classes: (torch BaseModel, our model, its variables, its config)}, each converted
  from a safetensors file under the official key names."""
  out = {}
  for num_classes in (0, 3):
    folder = tmp_path_factory.mktemp(f"official_dit_{num_classes}")
    net = _official_dit(num_classes, seed=1)
    save_file(ref.numpy_state(net), str(folder / "model.safetensors"))
    config = _config()
    config.dit.num_heads = 2
    official.convert_official_dit(folder / "model.safetensors", folder / "out", config)
    saved_config, saved = _restore(folder / "out")
    variables = {"params": saved["ema_params"], "constants": saved["constants"]}
    out[num_classes] = net, dit.dit_from_config(saved_config.dit), variables, saved_config
  return out


# (classes, frames, s, w): 4 frames fill the model's window; 12 go through the authors'
# sliding window (s * 4 >= S); w = 1 is their unguided path, 2.0 their 16-frame setting.
AD_CASES = [(0, 4, 2, 2.0), (0, 4, 1, 4.5), (0, 12, 2, 2.0), (0, 12, 3, 4.5), (0, 12, 2, 1.0),
            (3, 12, 2, 2.0)]


@pytest.mark.parametrize("num_classes,num_frames,s,guidance", AD_CASES)
def test_ad_sampler_matches_the_authors_guided_sampler(converted_official_dits, num_classes,
                                                       num_frames, s, guidance):
  """Our AD sampler (full mode) on a converted official DiT equals the PyTorch reference of
  their fifoddim sampler from the same x_T: the step matrix, the sliding window, CFG in x0
  space against zero context tokens (unconditional) or class_emb[0], and the DDIM update."""
  net, model, variables, config = converted_official_dits[num_classes]
  num_steps, batch = 8, 2
  assert config.diffusion.ddim_grid == "official"
  grid = diffusion.ddim_grid("official", diffusion.alphas_from_config(config.diffusion), num_steps)
  _, sample = sampling.make_sampler(model, grid, num_frames=num_frames, s=s, mode="full",
                                    cfg_scale=guidance)
  key = jax.random.key(7)
  label = jnp.array([1, 3]) if num_classes else None
  ours = np.asarray(jax.jit(sample, static_argnums=2)(variables, key, batch, None, label))
  # The x_T `sample` draws: from the first half of its key, frame by frame.
  x_T = sampling.frame_noise(jax.random.split(key)[0], batch, 0, num_frames, (TOKENS, 4))
  x_T = torch.from_numpy(np.array(x_T))
  theirs = ref.ad_sample(net, x_T, num_steps, s, guidance,
                         None if label is None else torch.tensor(np.asarray(label)))
  assert _rel_error(ours, theirs.numpy()) <= 1e-4
  if num_frames == 12 and guidance == 2.0 and not num_classes:
    # Their code verbatim also rescales finished, idle frames by about 1 + 2e-5 a row; the
    # port leaves them (docs/porting.md). The difference is that small, but it is there.
    verbatim = ref.ad_sample(net, x_T, num_steps, s, guidance, keep_idle=False).numpy()
    assert 1e-6 < _rel_error(ours, verbatim) < 1e-3


def _official_vae(temporal_frames=0, token_dim=4, seed=0):
  torch.manual_seed(seed)
  net = ref.TiTokKL(width=64, depth=2, heads=2, image_size=32, patch=8, token_dim=token_dim,
                    temporal_frames=temporal_frames)
  return ref.randomize(net, seed=seed).eval()


def _vae_config():
  config = _config()
  config.vae.num_heads, config.vae.norm_groups = 2, 8
  return config


@pytest.mark.parametrize("temporal_frames", [0, 3])
def test_official_vae_matches_the_pytorch_reference(tmp_path, temporal_frames):
  net = _official_vae(temporal_frames)
  save_file(ref.numpy_state(net), str(tmp_path / "vae.safetensors"))
  official.convert_official_vae(tmp_path / "vae.safetensors", tmp_path / "out", _vae_config())

  saved_config, saved = _restore(tmp_path / "out")
  assert saved_config.vae.temporal_causal == bool(temporal_frames)
  model = ar_vae.vae_from_config(saved_config.vae)
  frames = max(temporal_frames, 2)
  video = np.random.default_rng(1).uniform(size=(1, frames, 32, 32, 3)).astype(np.float32)
  recon, mean, _ = model.apply({"params": saved["params"]}, jnp.asarray(video))
  with torch.no_grad():
    their_recon, their_mean = net(torch.from_numpy(video[0]).permute(0, 3, 1, 2))
  # Their mean is [N, C, 1, L]: the legacy head and the pixel decoder both line up.
  assert _rel_error(mean[0], their_mean[:, :, 0].permute(0, 2, 1).numpy()) <= 1e-5
  assert _rel_error(recon[0], their_recon.permute(0, 2, 3, 1).numpy()) <= 1e-5


def test_titok_init_maps_rows_and_copies_the_pixel_codebook(tmp_path):
  state = ref.numpy_state(_official_vae(token_dim=6))  # conv_out: 12 channels, as TiTok-L-32
  rng = np.random.default_rng(2)
  state["decoder.decoder_embed.weight"] = rng.standard_normal((64, 12)).astype(np.float32)
  state.pop("pixel_quantize_conv.weight"), state.pop("pixel_quantize_conv.bias")
  state["quantize.embedding.weight"] = rng.standard_normal((16, 12)).astype(np.float32)
  codebook = rng.standard_normal((64, 32)).astype(np.float32)  # [K, Z]
  state["pixel_quantize.embedding.weight"] = codebook
  save_file(state, str(tmp_path / "titok.safetensors"))
  official.convert_titok_init(tmp_path / "titok.safetensors", tmp_path / "init", _vae_config())

  params = _restore(tmp_path / "init")[1]["params"]
  rows = [0, 1, 2, 3, 6, 7, 8, 9]
  np.testing.assert_array_equal(params["encoder"]["conv_out"]["kernel"],
                                state["encoder.conv_out.weight"][rows, :, 0, 0].T)
  np.testing.assert_array_equal(params["encoder"]["conv_out"]["bias"], state["encoder.conv_out.bias"][rows])
  np.testing.assert_array_equal(params["decoder"]["decoder_embed"]["kernel"],
                                state["decoder.decoder_embed.weight"][:, :4].T)
  np.testing.assert_array_equal(params["pixel_quantize_conv"]["kernel"], codebook)
  np.testing.assert_array_equal(params["pixel_quantize_conv"]["bias"], np.zeros(32))


def test_conversion_names_every_bad_key_together(tmp_path):
  state = ref.numpy_state(_official_dit(0))
  renamed = "diffusion_model.model.blocks.1.mlp.fc1.weight"
  state["diffusion_model.model.blocks.1.mlp.fc_1.weight"] = state.pop(renamed)
  state["diffusion_model.model.final_layer.1.weight"] = np.zeros((4, 32), np.float32)
  save_file(state, str(tmp_path / "bad.safetensors"))
  config = _config()
  config.dit.num_heads = 2
  with pytest.raises(CheckpointError) as error:
    official.convert_official_dit(tmp_path / "bad.safetensors", tmp_path / "out", config)
  message = str(error.value)
  assert "missing: " + renamed in message
  assert "unexpected: diffusion_model.model.blocks.1.mlp.fc_1.weight" in message
  assert "final_layer.1.weight: shape (4, 32), expected (4, 64)" in message
  assert not (tmp_path / "out").exists()


def test_allow_missing_keeps_a_fresh_init_and_buffers_are_checked(tmp_path):
  state = ref.numpy_state(_official_dit(0))
  dropped = state.pop("diffusion_model.model.final_layer.1.bias")
  save_file(state, str(tmp_path / "partial.safetensors"))
  config = _config()
  config.dit.num_heads = 2
  _, missing = official.convert_official_dit(tmp_path / "partial.safetensors", tmp_path / "out",
                                             config, allow_missing=True)
  assert missing == ["diffusion_model.model.final_layer.1.bias"]
  params = _restore(tmp_path / "out")[1]["ema_params"]
  assert not np.array_equal(params["final_layer"]["bias"], dropped)

  state["diffusion_model.model.final_layer.1.bias"] = dropped
  state["diffusion_model.betas"] = state["diffusion_model.betas"] * 1.01
  save_file(state, str(tmp_path / "schedule.safetensors"))
  with pytest.raises(CheckpointError, match="diffusion_model.betas"):
    official.convert_official_dit(tmp_path / "schedule.safetensors", tmp_path / "out2", config)


def _leaves(tree, prefix=""):
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _leaves(sub, f"{prefix}{key}/").items()}
  return {prefix.rstrip("/"): np.asarray(tree)}


@pytest.mark.parametrize("fmt", ["safetensors", "orbax"])
def test_export_then_import_is_bit_identical(tmp_path, fmt):
  save_file(ref.numpy_state(_official_dit(3)), str(tmp_path / "model.safetensors"))
  config = _config("dit.scan_layers=True")  # the portable keys of stacked layers
  config.dit.num_heads = 2
  official.convert_official_dit(tmp_path / "model.safetensors", tmp_path / "converted", config)
  assert cli.main(["export", "--ckpt", str(tmp_path / "converted"), "--format", fmt,
                   "--out", str(tmp_path / "portable")]) == 0
  # Loadable without our code: plain '/'-joined keys and a JSON config.
  bundle = portable.read_portable(tmp_path / "portable")
  assert bundle.flat["params/blocks/attn/qkv/kernel"].shape == (2, 64, 3, 2, 32)
  assert bundle.config["dit"]["variant"] == "official"
  assert cli.main(["convert", "portable", "--input", str(tmp_path / "portable"),
                   "--output", str(tmp_path / "back")]) == 0
  before, after = _restore(tmp_path / "converted")[1], _restore(tmp_path / "back")[1]
  assert _leaves(before).keys() == _leaves(after).keys()
  for key, value in _leaves(before).items():
    np.testing.assert_array_equal(value, _leaves(after)[key], err_msg=key)


def test_sample_cli_runs_converted_official_checkpoints(tmp_path):
  save_file(ref.numpy_state(_official_dit(0)), str(tmp_path / "dit.safetensors"))
  save_file(ref.numpy_state(_official_vae()), str(tmp_path / "vae.safetensors"))
  assert cli.main(["convert", "official-dit", "--input", str(tmp_path / "dit.safetensors"),
                   "--output", str(tmp_path / "dit"), "--config", "configs/synthetic.py:smoke",
                   "--num-heads", "2"]) == 0
  assert cli.main(["convert", "official-vae", "--input", str(tmp_path / "vae.safetensors"),
                   "--output", str(tmp_path / "vae"), "--config", "configs/synthetic.py:smoke",
                   "--num-heads", "2", "--norm-groups", "8"]) == 0
  out = tmp_path / "samples"
  assert cli.main(["sample", "--ckpt", str(tmp_path / "dit"), "--vae-ckpt", str(tmp_path / "vae"),
                   "--frames", str(FRAMES), "--s", "1", "--steps", "4", "--num", "1",
                   "--out", str(out)]) == 0
  assert read_video(out / "sample_000.mp4").shape == (FRAMES, 32, 32, 3)
  unguided = np.load(out / "latents.npz")["latents"]
  assert unguided.shape == (1, FRAMES, TOKENS, 4)
  # The authors' setting for their unconditional models: guidance 2 against zero context.
  assert cli.main(["sample", "--ckpt", str(tmp_path / "dit"), "--vae-ckpt", str(tmp_path / "vae"),
                   "--frames", str(FRAMES), "--s", "1", "--steps", "4", "--num", "1",
                   "--cfg", "2", "--out", str(tmp_path / "guided")]) == 0
  guided = np.load(tmp_path / "guided" / "latents.npz")["latents"]
  assert np.all(np.isfinite(guided)) and np.abs(guided - unguided).max() > 1e-4


# ------------------------------------------------------------ unreadable weight files

from ardiffusion_jax import convert  # noqa: E402


def _raw_safetensors(path, header, data=b""):
  """A .safetensors file written by hand (length, JSON header, data), so it can be wrong."""
  text = header if isinstance(header, bytes) else json.dumps(header).encode()
  path.write_bytes(len(text).to_bytes(8, "little") + text + data)
  return path


def _open_and_read(path, **kwargs):
  state = convert.open_state_dict(path, **kwargs)
  return {key: state[key] for key in state.keys()}


def _good_safetensors(path):
  save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(path))
  return path


@pytest.mark.parametrize("damage,message", [
    ("cut_data", "truncated"), ("huge_header", "truncated"), ("tiny", "truncated"),
    ("lfs", "git lfs pull"), ("list_header", "not a safetensors file"),
    ("no_dtype", "dtype"), ("no_offsets", "data_offsets"),
    ("bad_shape", '"2x2", expected a sequence'), ("size_mismatch", "data_offsets"),
    ("offsets_past_end", "truncated"), ("bad_json", "not a safetensors file"),
    ("offsets_gap", "previous tensor ends"), ("trailing_bytes", "bytes after its last tensor")])
def test_damaged_safetensors_files_are_named(tmp_path, damage, message):
  path = tmp_path / "model.safetensors"
  entry = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
  if damage == "cut_data":
    path.write_bytes(_good_safetensors(path).read_bytes()[:-5])
  elif damage == "huge_header":
    path.write_bytes((2 ** 62).to_bytes(8, "little") + b"{}")
  elif damage == "tiny":
    path.write_bytes(b"\x07\x00")
  elif damage == "lfs":
    path.write_text("version https://git-lfs.github.com/spec/v1\n"
                    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
                    "size 2686362136\n")
  elif damage == "list_header":
    _raw_safetensors(path, [1, 2])
  elif damage == "no_dtype":
    _raw_safetensors(path, {"w": {"shape": [2, 2], "data_offsets": [0, 16]}}, bytes(16))
  elif damage == "no_offsets":
    _raw_safetensors(path, {"w": {"dtype": "F32", "shape": [2, 2]}}, bytes(16))
  elif damage == "bad_shape":
    _raw_safetensors(path, {"w": dict(entry, shape="2x2")}, bytes(16))
  elif damage == "size_mismatch":
    _raw_safetensors(path, {"w": dict(entry, data_offsets=[0, 8])}, bytes(16))
  elif damage == "offsets_past_end":
    _raw_safetensors(path, {"w": entry}, bytes(8))
  elif damage == "bad_json":
    _raw_safetensors(path, b'{"w": {"dtype": ', bytes(16))
  elif damage == "offsets_gap":
    _raw_safetensors(path, {"w": dict(entry, data_offsets=[4, 20])}, bytes(20))
  elif damage == "trailing_bytes":
    _raw_safetensors(path, {"w": entry}, bytes(24))
  with pytest.raises(CheckpointError, match=message) as error:
    _open_and_read(path)
  assert str(path) in str(error.value)
  assert "\n" not in str(error.value)


def test_a_hand_written_safetensors_file_still_reads(tmp_path):
  import ml_dtypes
  path = _raw_safetensors(tmp_path / "ok.safetensors",
                          {"__metadata__": {"format": "pt"},
                           "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                           "b": {"dtype": "F16", "shape": [], "data_offsets": [16, 18]},
                           "h": {"dtype": "BF16", "shape": [2], "data_offsets": [18, 22]}},
                          np.arange(4, dtype=np.float32).tobytes() + np.float16(2).tobytes()
                          + np.array([0.5, -3], ml_dtypes.bfloat16).tobytes())
  state = _open_and_read(path)
  np.testing.assert_array_equal(state["w"], [[0, 1], [2, 3]])
  assert state["b"] == 2 and state["b"].dtype == np.float32
  np.testing.assert_array_equal(state["h"], [0.5, -3])
  assert state["h"].dtype == np.float32


def test_safetensors_tensors_a_reader_cannot_return_are_named(tmp_path):
  path = _raw_safetensors(tmp_path / "f8.safetensors",
                          {"q": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]},
                           "w": {"dtype": "F32", "shape": [2], "data_offsets": [2, 10]}}, bytes(10))
  state = convert.open_state_dict(path)
  assert state.shape("q") == (2,)
  with pytest.raises(CheckpointError, match="q has unsupported dtype F8_E4M3") as error:
    state["q"]
  assert str(path) in str(error.value)
  path.write_bytes(path.read_bytes()[:-4])  # cut after opening: the read itself fails
  with pytest.raises(CheckpointError, match="tensor 'w' could not be read") as error:
    state["w"]
  assert str(path) in str(error.value)


@pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_safetensors_tensors_are_read_not_memory_mapped(tmp_path):
  # A map left open keeps every page read resident: `bench convert` peaked at 7.96 GB
  # instead of 5.33 GB for the paper DiT.
  path = _good_safetensors(tmp_path / "model.safetensors")
  state = convert.open_state_dict(path)
  np.testing.assert_array_equal(state["w"], np.arange(6).reshape(2, 3))
  assert str(path) not in pathlib.Path("/proc/self/maps").read_text()


def test_npz_with_object_arrays_or_a_broken_zip_is_refused(tmp_path):
  pickled = tmp_path / "pickled.npz"
  np.savez(pickled, w=np.array([{"a": 1}], dtype=object))
  with pytest.raises(CheckpointError, match="pickled object arrays, which are not loaded for safety") as error:
    _open_and_read(pickled)
  assert str(pickled) in str(error.value)
  with pytest.raises(CheckpointError, match="pickled object arrays") as error:
    convert.load_variables(pickled, "absent")
  assert str(pickled) in str(error.value)
  cut = tmp_path / "cut.npz"
  np.savez(cut, w=np.zeros((64, 64), np.float32))
  cut.write_bytes(cut.read_bytes()[:1000])
  text = tmp_path / "text.npz"
  text.write_text("not an archive\n")
  for path in (cut, text):
    for read in (_open_and_read, lambda p: convert.load_variables(p, "absent")):
      with pytest.raises(CheckpointError) as error:
        read(path)
      assert str(path) in str(error.value) and "npz" in str(error.value)


def _touch(path):  # what a malicious pickle would run
  pathlib.Path(path).write_text("pwned")


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (_touch, (self.marker,))


def test_unreadable_torch_files_are_named_and_run_no_code(tmp_path):
  truncated = tmp_path / "model.pt"
  torch.save({"w": torch.zeros(256, 256)}, truncated)
  truncated.write_bytes(truncated.read_bytes()[:4000])
  marker = tmp_path / "pwned"
  evil = tmp_path / "evil.bin"
  evil.write_bytes(pickle.dumps({"w": _Evil(str(marker))}, protocol=2))
  evil4 = tmp_path / "evil4.pth"
  evil4.write_bytes(pickle.dumps({"w": _Evil(str(marker))}, protocol=4))
  old = tmp_path / "old.pth"  # the legacy (non-zip) serialisation, cut short
  torch.save({"w": torch.zeros(256, 256)}, old, _use_new_zipfile_serialization=False)
  old.write_bytes(old.read_bytes()[:4000])
  for path in (truncated, evil, evil4, old):
    with pytest.raises(CheckpointError, match=r"torch\.load\(weights_only=True\) could not read") as error:
      convert.open_state_dict(path)
    assert str(path) in str(error.value)
  assert not marker.exists()
  not_a_dict = tmp_path / "tensor.pt"
  torch.save(torch.zeros(3), not_a_dict)
  with pytest.raises(CheckpointError, match="state dict"):
    convert.open_state_dict(not_a_dict)


def test_integer_and_non_finite_weights_are_refused_by_key(tmp_path):
  values = {"ints": np.arange(4, dtype=np.int32), "nans": np.array([1.0, np.nan, np.inf], np.float32),
            "fine": np.ones(2, np.float32)}
  files = {"safetensors": tmp_path / "w.safetensors", "npz": tmp_path / "w.npz", "pt": tmp_path / "w.pt"}
  save_file(values, str(files["safetensors"]))
  np.savez(files["npz"], **values)
  torch.save({k: torch.from_numpy(v) for k, v in values.items()}, files["pt"])
  for path in files.values():
    state = convert.open_state_dict(path)
    assert state.shape("ints") == (4,)  # shapes and keys need no loading
    with pytest.raises(CheckpointError, match="ints.*int32") as error:
      state["ints"]
    assert str(path) in str(error.value)
    with pytest.raises(CheckpointError, match="nans.* 2 non-finite.*--allow-nonfinite"):
      state["nans"]
    np.testing.assert_array_equal(state["fine"], [1, 1])
    lenient = convert.open_state_dict(path, allow_nonfinite=True)
    assert np.isnan(lenient["nans"][1]) and lenient["nans"].dtype == np.float32
    with pytest.raises(CheckpointError, match="int32"):
      lenient["ints"]
    with pytest.raises(CheckpointError, match="ints.*int32"):
      convert.read_state_dict(path, allow_nonfinite=True)
    # A renamed view reads through the same checks.
    view = lenient.without(["ints"]).mapped(lambda k: (k, lambda a: a[:1]), {})
    assert view.shape("nans") == (1,) and view["nans"][0] == 1
  bf16 = tmp_path / "bf16.pt"
  torch.save({"w": torch.ones(2, dtype=torch.bfloat16)}, bf16)
  assert convert.open_state_dict(bf16)["w"].dtype == np.float32


@pytest.mark.parametrize("kind,key", [("fid-inception", "Conv2d_1a_3x3.conv.weight"),
                                      ("fid-resnet3d", "conv1.weight"), ("lpips", "features.0.weight")])
def test_convert_cli_refuses_non_finite_weights_unless_allowed(tmp_path, capsys, kind, key):
  np.savez(tmp_path / "bad.npz", **{key: np.full((2, 2), np.nan, np.float32)})
  np.savez(tmp_path / "lin.npz", x=np.ones(1, np.float32))
  inputs = (["--vgg", str(tmp_path / "bad.npz"), "--lin", str(tmp_path / "lin.npz")]
            if kind == "lpips" else ["--input", str(tmp_path / "bad.npz")])
  args = ["convert", kind, *inputs, "--out", str(tmp_path / "out.npz")]
  assert cli.main(args) == 1
  err = capsys.readouterr().err
  assert err.startswith(f"ardiff convert: error: {tmp_path / 'bad.npz'}: {key} holds 4 non-finite")
  assert "--allow-nonfinite" in err and len(err.strip().splitlines()) == 1
  assert cli.main(args + ["--allow-nonfinite"]) == 1  # read; now it is the keys that do not fit
  assert "not match" in capsys.readouterr().err


def _titok_state():
  state = ref.numpy_state(_official_vae(token_dim=6))
  rng = np.random.default_rng(2)
  state["decoder.decoder_embed.weight"] = rng.standard_normal((64, 12)).astype(np.float32)
  state.pop("pixel_quantize_conv.weight"), state.pop("pixel_quantize_conv.bias")
  state["quantize.embedding.weight"] = rng.standard_normal((16, 12)).astype(np.float32)
  state["pixel_quantize.embedding.weight"] = rng.standard_normal((64, 32)).astype(np.float32)
  return state


@pytest.mark.parametrize("kind", ["official-dit", "official-vae", "titok-init"])
def test_official_convert_cli_threads_allow_nonfinite(tmp_path, capsys, kind):
  if kind == "official-dit":
    state, key, extra = ref.numpy_state(_official_dit(0)), "diffusion_model.model.final_layer.1.bias", []
  else:
    state = ref.numpy_state(_official_vae()) if kind == "official-vae" else _titok_state()
    key, extra = "encoder.conv_out.weight", ["--norm-groups", "8"]
  state[key] = state[key].copy()
  state[key].flat[0] = np.nan
  save_file(state, str(tmp_path / "in.safetensors"))
  args = ["convert", kind, "--input", str(tmp_path / "in.safetensors"), "--config",
          "configs/synthetic.py:smoke", "--num-heads", "2", *extra]
  assert cli.main(args + ["--output", str(tmp_path / "strict")]) == 1
  err = capsys.readouterr().err
  assert f"{key} holds 1 non-finite" in err and "--allow-nonfinite" in err
  assert cli.main(args + ["--output", str(tmp_path / "lenient"), "--allow-nonfinite"]) == 0
