"""Real video datasets as random-access sources for grain (layouts: docs/datasets.md).

`video_source(data_config)` gives the source a config names: the synthetic bouncing
shapes, or a `VideoDataset` over the files of UCF-101, Sky-Timelapse, Taichi-HD,
FaceForensics or any folder of videos, or over a prepared TFDS dataset (`tfds_video.py`). Example i is a pure function of (seed, i): its clip
start is drawn from that pair, so grain can shuffle, shard and checkpoint it.

A corrupt or unreadable video is skipped, whatever its decoder raises (a truncated
frame, a decompression bomb, a broken container): the example is taken from the next
readable video instead, the file is counted (`VideoDataset.skipped`; the training loop
logs the count as `skipped_files`), logged once and not retried, and training goes on
with a full batch.
"""

import dataclasses
import logging
import pathlib
import threading

import numpy as np

from ardiffusion_jax.data import video as video_lib
from ardiffusion_jax.data.synthetic import BouncingShapes
from ardiffusion_jax.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Folder layouts (docs/datasets.md): the split folder under data.root, per dataset.
SPLIT_FOLDERS = {
    "sky": {"train": "sky_train", "test": "sky_test"},
    "taichi": {"train": "train", "test": "test"},
    "faceforensics": {"train": "train", "test": "test"},
    "folder": {"train": "train", "test": "test"},
}
DATASETS = ("synthetic", "ucf101", *SPLIT_FOLDERS, "tfds")


def _start(total: int, count: int, stride: int, rng, name) -> int:
  """A clip start in [0, total - span], drawn from `rng` (None: 0)."""
  span = (count - 1) * stride + 1
  if total < span:
    raise DataError(f"{name} has {total} frames, fewer than {count} at stride {stride}")
  return 0 if rng is None else int(rng.integers(0, total - span + 1))


@dataclasses.dataclass(frozen=True)
class VideoEntry:
  """A video file or a folder of frames."""
  path: str
  label: int = 0

  def clip(self, count: int, stride: int, rng):
    """(frames uint8 [count, H, W, 3], label); DataError when unreadable."""
    total = video_lib.count_frames(self.path) if rng is not None else count
    start = _start(total, count, stride, rng, self.path)
    return video_lib.read_clip(self.path, start, count, stride), self.label


@dataclasses.dataclass(frozen=True)
class TfdsEntry:
  """Example `index` of a TFDS data source with a uint8 'video' [T, H, W, 3] feature
  (and optionally 'label')."""
  source: object
  index: int

  @property
  def path(self) -> str:
    return f"tfds example {self.index}"

  def clip(self, count: int, stride: int, rng):
    try:
      example = self.source[self.index]
      frames = np.asarray(example["video"])
    except Exception as error:  # a corrupt record: skipped like a corrupt file
      raise DataError(f"{self.path}: {error}") from error
    start = _start(len(frames), count, stride, rng, self.path)
    return frames[start:start + (count - 1) * stride + 1:stride], int(example.get("label", 0))


class VideoDataset:
  """Clips of `num_frames` frames, `stride` apart, resized and centre-cropped to
  `resolution`, from a list of videos. Returns the same dict keys as the synthetic source:
  video uint8 [F, S, S, 3], label int32, index int64."""

  def __init__(self, entries, num_frames: int, resolution: int, stride: int = 1,
               seed: int = 0, random_start: bool = True, max_skips: int = 100):
    if not entries:
      raise DataError("the dataset has no videos")
    self.entries = list(entries)
    self.num_frames, self.resolution, self.stride = num_frames, resolution, stride
    self.seed, self.random_start, self.max_skips = seed, random_start, max_skips
    self.bad_files = set()  # unreadable videos found so far (not retried)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.entries)

  @property
  def skipped(self) -> int:
    """How many videos were skipped as unreadable."""
    return len(self.bad_files)

  def load(self, index: int):
    """(clip, label) of video `index`; raises DataError when it cannot give one."""
    rng = np.random.default_rng((self.seed, index)) if self.random_start else None
    clip, label = self.entries[index].clip(self.num_frames, self.stride, rng)
    return video_lib.resize_center_crop(clip, self.resolution), label

  def __getitem__(self, index):
    index = int(index)
    for attempt in range(min(self.max_skips, len(self)) + 1):
      candidate = (index + attempt) % len(self)
      if self.entries[candidate].path in self.bad_files:
        continue
      try:
        clip, label = self.load(candidate)
      except Exception as error:  # every file is untrusted: any decoder error skips it
        self._skip(self.entries[candidate].path, error)
        continue
      return {"video": clip, "label": np.int32(label), "index": np.int64(index)}
    raise DataError(f"{self.max_skips} videos in a row from #{index} could not be read; "
                    f"is data.root right? ({self.skipped} skipped so far)")

  def _skip(self, path, error):
    with self._lock:
      first = path not in self.bad_files
      self.bad_files.add(path)
    if first:
      log.warning("skipping unreadable video %s: %s", path, error)


def _read_list(path) -> list:
  return [line.split() for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def _find(root: pathlib.Path, name: str) -> pathlib.Path:
  for candidate in (root / name, root / "ucfTrainTestlist" / name):
    if candidate.is_file():
      return candidate
  raise ConfigError("data.root", f"{name} not found in {root} or {root}/ucfTrainTestlist; "
                                 "unpack UCF101TrainTestSplits-RecognitionTask.zip there")


def ucf101_entries(root, split: str = "train", fold: int = 1) -> list:
  """UCF-101 with the official split lists: `classInd.txt` ("1 ApplyEyeMakeup"), and
  `trainlist0{fold}.txt` ("Class/v_….avi 1") or `testlist0{fold}.txt` ("Class/v_….avi").
  Labels are classInd − 1 (0..100). Videos live in root/ or root/UCF-101/."""
  root = pathlib.Path(root)
  if split not in ("train", "test"):
    raise ConfigError("data.split", f"UCF-101 has 'train' and 'test', got {split!r}")
  if fold not in (1, 2, 3):
    raise ConfigError("data.fold", f"UCF-101 has folds 1, 2, 3, got {fold}")
  classes = {name: int(number) - 1 for number, name in _read_list(_find(root, "classInd.txt"))}
  videos = root / "UCF-101" if (root / "UCF-101").is_dir() else root
  entries = []
  for fields in _read_list(_find(root, f"{split}list0{fold}.txt")):
    relative = fields[0]
    label = int(fields[1]) - 1 if len(fields) > 1 else classes[relative.split("/")[0]]
    if label != classes[relative.split("/")[0]]:
      raise DataError(f"{relative}: label {label + 1} disagrees with classInd.txt")
    entries.append(VideoEntry(str(videos / relative), label))
  return entries


def folder_entries(root) -> list:
  """Every video under `root`: video files, and folders that hold frames directly (a
  Sky-Timelapse clip folder, a Taichi-HD png folder), in path order, label 0."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise ConfigError("data.root", f"{root} is not a folder")
  found = []
  for path in sorted(root.rglob("*")):
    if path.is_file() and path.suffix.lower() in video_lib.VIDEO_SUFFIXES:
      found.append(VideoEntry(str(path)))
    elif path.is_dir() and video_lib.is_video(path):
      found.append(VideoEntry(str(path)))
  return found


def entries_from_config(data) -> list:
  if data.name == "tfds":
    from ardiffusion_jax.data import tfds_video
    return tfds_video.tfds_entries(data)
  if data.name == "ucf101":
    return ucf101_entries(data.root, data.split, data.get("fold", 1))
  split_folder = pathlib.Path(data.root) / SPLIT_FOLDERS[data.name][data.split]
  if not split_folder.is_dir():
    raise ConfigError("data.root", f"{split_folder} does not exist (layout: README, Datasets)")
  return folder_entries(split_folder)


def video_source(data, **changes):
  """The random-access source `data` (a config's data section) names. `changes` override
  the synthetic generator's fields (e.g. a held-out seed)."""
  if data.name == "synthetic":
    return BouncingShapes.from_config(data, **changes)
  entries = entries_from_config(data)
  if not entries:
    raise DataError(f"no videos found for data.name={data.name!r} under {data.root}")
  return VideoDataset(entries, data.num_frames, data.resolution, data.get("frame_stride", 1),
                      seed=data.get("seed", 0), random_start=data.get("random_start", True))
