"""Real-video loading on files the tests write: mp4 and avi through PyAV, png folders,
a truncated mp4 and a file that is not a video; UCF-101's list files; the dataset configs."""

import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ardiffusion_jax import cli, config as config_lib
from ardiffusion_jax.data import datasets, pipeline, video
from ardiffusion_jax.errors import ConfigError, DataError
from ardiffusion_jax.train import vae as train_vae
from ardiffusion_jax.train.logging import read_metrics

SIZE, FRAMES = 32, 10


def _frames(seed, size=(SIZE, SIZE)):
  """Blocky frames (they survive lossy codecs well): a bright square moving right."""
  out = np.full((FRAMES,) + size + (3,), 30, np.uint8)
  colour = np.random.default_rng(seed).integers(80, 255, 3)
  for t in range(FRAMES):
    out[t, 8:20, 2 + t:14 + t] = colour
  return out


def _write_png_folder(folder, frames):
  folder.mkdir(parents=True)
  for t, frame in enumerate(frames):
    Image.fromarray(frame).save(folder / f"frame_{t:05d}.png")


@pytest.fixture
def video_folder(tmp_path):
  """train/: a good mp4, avi and png folder, a truncated mp4 and a text file named .mp4."""
  root = tmp_path / "train"
  root.mkdir()
  written = {"a.mp4": _frames(0), "b.avi": _frames(1), "c_frames": _frames(2)}
  video.write_video(root / "a.mp4", written["a.mp4"])
  video.write_video(root / "b.avi", written["b.avi"], codec="mpeg4", options={"qscale": "1"})
  _write_png_folder(root / "c_frames", written["c_frames"])
  video.write_video(root / "d_truncated.mp4", _frames(3))
  data = (root / "d_truncated.mp4").read_bytes()
  (root / "d_truncated.mp4").write_bytes(data[:len(data) // 2])
  (root / "e_not_a_video.mp4").write_text("these are not the frames you are looking for")
  return tmp_path, written


def test_files_load_with_their_frames_and_bad_ones_are_skipped_and_counted(video_folder, caplog):
  root, written = video_folder
  entries = datasets.folder_entries(root / "train")
  assert [e.path.split("/")[-1] for e in entries] == [
      "a.mp4", "b.avi", "c_frames", "d_truncated.mp4", "e_not_a_video.mp4"]
  source = datasets.VideoDataset(entries, num_frames=FRAMES, resolution=SIZE, random_start=False)
  with caplog.at_level(logging.WARNING, logger="ardiffusion_jax.data.datasets"):
    examples = [source[i] for i in range(len(source))]
  np.testing.assert_array_equal(examples[2]["video"], written["c_frames"])  # png: lossless
  for i, name in enumerate(["a.mp4", "b.avi"]):  # lossy codecs: close, and in order
    error = np.abs(examples[i]["video"].astype(int) - written[name]).mean(axis=(1, 2, 3))
    assert error.max() < 4, (name, error)
  # The two bad files are skipped: their examples come from the next readable video.
  assert source.skipped == 2 and len(source.bad_files) == 2
  np.testing.assert_array_equal(examples[3]["video"], examples[0]["video"])
  np.testing.assert_array_equal(examples[4]["video"], examples[0]["video"])
  assert sum("skipping unreadable video" in r.message for r in caplog.records) == 2


def _png_claiming(path, width, height):
  """A 4x4 PNG whose header claims width x height (a decompression bomb's few bytes)."""
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
  data = bytearray(path.read_bytes())
  data[16:24] = struct.pack(">II", width, height)  # IHDR: after the signature, length, type
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
  path.write_bytes(bytes(data))


def _hostile_frame_folders(root):
  """root/: one good png folder, then a decompression bomb, a truncated frame and a file
  of random bytes, each in a Taichi-style frame folder of its own."""
  _write_png_folder(root / "a_good", _frames(0))
  for name in ("b_bomb", "c_truncated", "d_garbage"):
    _write_png_folder(root / name, _frames(1))
  _png_claiming(root / "b_bomb" / "frame_00003.png", 20000, 20000)
  truncated = root / "c_truncated" / "frame_00002.png"
  truncated.write_bytes(truncated.read_bytes()[:60])
  (root / "d_garbage" / "frame_00005.png").write_bytes(np.random.default_rng(0).bytes(300))


def test_hostile_frames_of_any_kind_are_skipped_and_counted(tmp_path, caplog):
  _hostile_frame_folders(tmp_path)
  with pytest.raises(DataError, match="b_bomb/frame_00003.png: DecompressionBombError"):
    video.read_image(tmp_path / "b_bomb" / "frame_00003.png")  # PIL's own limit
  _png_claiming(tmp_path / "big.png", 10000, 10000)  # under PIL's limit, over ours
  with pytest.raises(DataError, match="claims 10000x10000 pixels.*decompression bomb"):
    video.read_image(tmp_path / "big.png")
  entries = datasets.folder_entries(tmp_path)
  source = datasets.VideoDataset(entries, num_frames=FRAMES, resolution=SIZE, random_start=False)
  with caplog.at_level(logging.WARNING, logger="ardiffusion_jax.data.datasets"):
    examples = [source[i] for i in range(len(source))]
  assert source.skipped == 3
  for example in examples:
    np.testing.assert_array_equal(example["video"], examples[0]["video"])  # the good folder
  messages = [r.message for r in caplog.records if "skipping unreadable video" in r.message]
  assert len(messages) == 3 and any("DecompressionBombError" in m for m in messages)


def test_train_vae_reports_the_skipped_files(tmp_path, capsys):
  _hostile_frame_folders(tmp_path / "train")  # Taichi-HD's layout: root/train/<clip>/*.png
  # 4 steps of 8 frames: one epoch of the 4 videos x 8 frames, so every video is read.
  overrides = [f"data.root='{tmp_path}'", "vae_train.steps=4", "vae_train.log_every=1"]
  workdir = tmp_path / "run"
  args = ["train-vae", "--config", "configs/taichi.py:vae_smoke", "--workdir", str(workdir)]
  assert cli.main(args + [a for o in overrides for a in ("--set", o)]) == 0
  out = capsys.readouterr().out
  assert "reached step 4" in out and "; 3 unreadable data files skipped;" in out
  assert read_metrics(workdir)[-1]["skipped_files"] == 3


def test_clips_take_a_stride_from_a_seeded_random_start(video_folder):
  root, written = video_folder
  entry = datasets.VideoEntry(str(root / "train" / "c_frames"))
  source = datasets.VideoDataset([entry], num_frames=3, resolution=SIZE, stride=2, seed=5)
  clip = source[0]["video"]
  starts = [t for t in range(FRAMES - 4) if np.array_equal(clip, written["c_frames"][t:t + 5:2])]
  assert len(starts) == 1
  np.testing.assert_array_equal(source[0]["video"], clip)  # a pure function of (seed, index)
  with pytest.raises(DataError, match="fewer than"):
    datasets.VideoDataset([entry], num_frames=6, resolution=SIZE, stride=2).load(0)


def test_a_full_batch_comes_out_despite_bad_files(video_folder):
  root, _ = video_folder
  source = datasets.VideoDataset(datasets.folder_entries(root / "train"), num_frames=4,
                                 resolution=16)
  batch = next(pipeline.global_batches(source, 5, seed=0, process_index=0, process_count=1))
  assert batch["video"].shape == (5, 4, 16, 16, 3) and batch["video"].dtype == np.uint8


def test_ucf101_labels_and_splits(tmp_path):
  lists = tmp_path / "ucfTrainTestlist"
  lists.mkdir()
  (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n3 YoYo\n")
  (lists / "trainlist01.txt").write_text(
      "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nYoYo/v_YoYo_g09_c02.avi 3\n")
  (lists / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\r\nYoYo/v_YoYo_g01_c03.avi\n")
  train = datasets.ucf101_entries(tmp_path, "train", fold=1)
  assert [(e.path, e.label) for e in train] == [
      (str(tmp_path / "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"), 0),
      (str(tmp_path / "YoYo/v_YoYo_g09_c02.avi"), 2)]
  assert [e.label for e in datasets.ucf101_entries(tmp_path, "test", fold=1)] == [1, 2]
  (lists / "trainlist02.txt").write_text("Archery/v_Archery_g08_c01.avi 3\n")
  with pytest.raises(DataError, match="disagrees with classInd"):
    datasets.ucf101_entries(tmp_path, "train", fold=2)
  with pytest.raises(ConfigError, match="testlist03.txt not found"):
    datasets.ucf101_entries(tmp_path, "test", fold=3)


def test_dataset_configs_need_a_root_and_feed_vae_training(video_folder):
  root, _ = video_folder
  with pytest.raises(ConfigError, match="data.root"):
    config_lib.load_config("configs/taichi.py:vae_smoke")
  for name in ("ucf101", "sky", "taichi", "faceforensics"):
    config = config_lib.load_config(f"configs/{name}.py", [f"data.root='{root}'"])
    assert config.data.name == name and config.vae.image_size == config.data.resolution == 256
  config = config_lib.load_config("configs/taichi.py:vae_smoke", [f"data.root='{root}'"])
  frames = train_vae.video_source(config)  # what `ardiff train-vae` reads: single frames
  assert len(frames) == 5 * config.data.num_frames  # every video, the bad ones stand-ins
  batch = next(pipeline.global_batches(frames, 8, seed=0, process_index=0, process_count=1))
  assert batch["video"].shape == (8, 1, 32, 32, 3)


def test_tfds_builder_round_trip_without_tensorflow(video_folder, tmp_path):
  import sys
  root, _ = video_folder
  assert cli.main(["build-tfds", "--config", "configs/taichi.py:smoke", "--set", f"data.root='{root}'",
                   "--set", "data.num_frames=6", "--data-dir", str(tmp_path / "tfds")]) == 0
  builder_dir = next((tmp_path / "tfds").glob("video_clips/taichi/*"))
  assert "tensorflow" not in sys.modules  # built and read with TFDS's numpy paths only
  config = config_lib.load_config("configs/taichi.py:smoke", [
      "data.name='tfds'", f"data.tfds_dir='{builder_dir}'", "data.num_frames=6"])
  source = datasets.video_source(config.data)
  entries = datasets.folder_entries(root / "train")
  folder = datasets.VideoDataset(entries, 6, 32, seed=0)
  assert len(source) == 3  # the truncated and the fake mp4 are left out
  paths = [e.path for e in entries]
  for entry in source.entries:  # the stored clips are the folder's (same seeded starts)
    stored = entry.source[entry.index]
    path = stored["path"]
    assert isinstance(path, bytes)
    np.testing.assert_array_equal(stored["video"], folder[paths.index(path.decode())]["video"])
  assert source[0]["video"].shape == (6, 32, 32, 3) and source[0]["label"] == 0
  # By name from a TFDS data dir, as for a prepared catalog dataset (tfds.data_source).
  by_name = config_lib.load_config("configs/taichi.py:smoke", [
      "data.name='tfds'", f"data.tfds_dir='{tmp_path / 'tfds'}'",
      "data.tfds_name='video_clips/taichi'", "data.num_frames=6"])
  np.testing.assert_array_equal(datasets.video_source(by_name.data)[1]["video"], source[1]["video"])
