"""Latent shards: ArrayRecord files of per-clip AR-VAE latents [F, 32, 4] and a label.

Each record is one clip stored as an uncompressed .npz (numpy only, no TensorFlow), so
any tool can read a record. `LatentShards` is a random-access source over many shard
files, ready for `grain.MapDataset.source`.
"""

import io
import pathlib

import grain
import numpy as np
from array_record.python import array_record_module

from ardiffusion_jax.errors import DataError

SHARD_PATTERN = "latents-{index:05d}.array_record"


def encode_example(example: dict) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **{key: np.asarray(value) for key, value in example.items()})
  return buffer.getvalue()


def decode_example(record: bytes) -> dict:
  with np.load(io.BytesIO(record), allow_pickle=False) as data:
    return {key: data[key] for key in data.files}


def write_latent_shard(path, examples) -> int:
  """Writes examples (dicts with 'latents' [F, L, D] float32, 'label' int and any other
  array fields, e.g. the source 'index') to one ArrayRecord file; returns how many. Written to a temporary name, then renamed, so a
  killed writer never leaves a truncated shard under the final name."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(path.name + ".partial")
  writer = array_record_module.ArrayRecordWriter(str(partial), "group_size:1")
  count = 0
  try:
    for example in examples:
      latents = np.asarray(example["latents"], np.float32)
      if latents.ndim != 3:
        raise DataError(f"latents must be [F, L, D], got shape {latents.shape}")
      record = {key: np.asarray(value) for key, value in example.items()}
      record.update(latents=latents, label=np.int32(example.get("label", 0)))
      writer.write(encode_example(record))
      count += 1
  finally:
    writer.close()
  partial.rename(path)
  return count


def shard_paths(directory) -> list:
  """The latent shard files in `directory`, sorted; raises DataError when there are none."""
  directory = pathlib.Path(directory)
  paths = sorted(directory.glob("*.array_record"))
  if not paths:
    raise DataError(f"no *.array_record latent shards in {directory}; write them with "
                    "`ardiff extract` (or data.latents.write_latent_shard)")
  return paths


class LatentShards:
  """Random access over latent shard files: `source[i]` -> {'latents', 'label'}."""

  def __init__(self, paths):
    self.paths = [str(p) for p in paths]
    self._records = grain.sources.ArrayRecordDataSource(self.paths)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index):
    return decode_example(self._records[index])

  def __repr__(self) -> str:
    return f"LatentShards({len(self.paths)} files, {len(self)} clips)"
