"""TFDS: build ArrayRecord datasets of fixed-size clips from video folders (no TensorFlow
needed), and read prepared TFDS datasets (ours, or the catalog's, e.g. `ucf101`, when
prepared with `file_format='array_record'`) through `tfds.data_source` into grain.
"""

import logging
import pathlib

import numpy as np

from ardiffusion_jax.data import datasets
from ardiffusion_jax.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _builder_class():
  import tensorflow_datasets as tfds

  class VideoClips(tfds.core.GeneratorBasedBuilder):
    """Fixed-size uint8 clips of a folder dataset: video [F, S, S, 3], label, path."""
    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, videos: dict, num_frames: int, resolution: int, stride: int,
                 seed: int, **kwargs):
      self._videos, self._seed = videos, seed
      self._shape = (num_frames, resolution, resolution, 3)
      self._stride = stride
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "video": tfds.features.Tensor(shape=self._shape, dtype=np.uint8),
          "label": tfds.features.Scalar(dtype=np.int64),
          "path": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples(entries) for split, entries in self._videos.items()}

    def _generate_examples(self, entries):
      # One clip per video from a seeded start; unreadable videos are left out (and logged).
      source = datasets.VideoDataset(entries, self._shape[0], self._shape[1], self._stride,
                                     seed=self._seed)
      for index, entry in enumerate(entries):
        try:
          clip, _ = source.load(index)
        except DataError as error:
          log.warning("leaving out unreadable video %s: %s", entry.path, error)
          continue
        yield index, {"video": clip, "label": entry.label, "path": entry.path}

  return VideoClips


def build_tfds(data, data_dir, splits=("train", "test")) -> pathlib.Path:
  """Writes the dataset `data` (a config's data section) as a TFDS ArrayRecord dataset
  named `video_clips/<data.name>` under `data_dir`; returns its directory. Splits whose
  folder or list file is missing are left out."""
  import tensorflow_datasets as tfds
  videos = {}
  for split in splits:
    section = data.copy_and_resolve_references()
    section.split = split
    try:
      videos[split] = datasets.entries_from_config(section)
    except ConfigError:
      continue
  if not videos:
    raise ConfigError("data.root", f"no split of {data.name} found under {data.root}")
  config = tfds.core.BuilderConfig(name=data.name, description=f"{data.name} from {data.root}")
  builder = _builder_class()(videos=videos, num_frames=data.num_frames,
                             resolution=data.resolution, stride=data.get("frame_stride", 1),
                             seed=data.get("seed", 0), config=config, data_dir=str(data_dir),
                             file_format="array_record")
  builder.download_and_prepare()
  return pathlib.Path(builder.data_dir)


def tfds_entries(data) -> list:
  """The examples of a prepared TFDS dataset as `TfdsEntry`s: `data.tfds_dir` is a
  builder directory (with dataset_info.json), or `data.tfds_name` is read from
  `data.tfds_dir` as a data dir (e.g. the catalog's `ucf101`)."""
  import tensorflow_datasets as tfds
  location = pathlib.Path(data.tfds_dir)
  try:
    if (location / "dataset_info.json").is_file():
      source = tfds.builder_from_directory(location).as_data_source(split=data.split)
    else:
      source = tfds.data_source(data.tfds_name, split=data.split, data_dir=str(location),
                                download=False)
  except Exception as error:  # TFDS raises many kinds; all mean "not prepared as asked"
    raise ConfigError("data.tfds_dir", f"cannot open TFDS {data.get('tfds_name') or location} "
                                       f"split {data.split!r} as an ArrayRecord data source "
                                       f"(prepare it with file_format='array_record'): {error}")
  return [datasets.TfdsEntry(source, i) for i in range(len(source))]
