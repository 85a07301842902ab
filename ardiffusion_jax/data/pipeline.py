"""The grain pipeline from a random-access source to per-process parts of global batches.

Every process walks the same shuffled stream of global batches of indices; process p
loads only its contiguous slice of each. So the global batch is the same for any number
of processes or devices, and the iterator state (an index) checkpoints exactly.
"""

import grain
import jax
import numpy as np

from ardiffusion_jax.errors import ConfigError


class _LoadProcessSlice:
  """Maps a global batch of indices to this process's stacked examples."""

  def __init__(self, source, process_index: int, process_count: int, fields):
    self.source, self.process_index, self.process_count = source, process_index, process_count
    self.fields = fields

  def __call__(self, indices):
    part = len(indices) // self.process_count
    mine = indices[self.process_index * part:(self.process_index + 1) * part]
    examples = [self.source[int(i)] for i in mine]
    keys = self.fields or examples[0].keys()
    return {key: np.stack([example[key] for example in examples]) for key in keys}


def global_batches(source, global_batch_size: int, seed: int, fields=None, process_index=None,
                   process_count=None, num_threads: int = 2):
  """An endless, checkpointable iterator of this process's part of each global batch.

  `fields` limits the returned keys (default: all the source returns). Epochs are
  reshuffled; batches may span an epoch boundary.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ConfigError("train.batch_size", f"{global_batch_size} does not split over "
                      f"{process_count} processes")
  if len(source) < 1:
    raise ConfigError("data", "the dataset is empty")
  dataset = (grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat(None)
             .batch(global_batch_size, drop_remainder=True)
             .map(_LoadProcessSlice(source, process_index, process_count, fields)))
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
  return iter(dataset.to_iter_dataset(read))


class ClipSource:
  """Every run of `clip_frames` consecutive frames of every video in `videos`.

  `videos[i]` must return a dict with a uint8 'video' [F, H, W, 3] (and optionally a
  'label'). With clip_frames = 1 this is every frame of the dataset, the VAE's frame
  stage; with clip_frames = F, one clip per video. A source with a
  `clip(index, start, num_frames)` method (the synthetic one) is asked for just the clip.
  """

  def __init__(self, videos, clip_frames: int, num_frames: int):
    if not 1 <= clip_frames <= num_frames:
      raise ConfigError("vae_train.clip_frames", f"must be in [1, {num_frames}], got {clip_frames}")
    self.videos, self.clip_frames = videos, clip_frames
    self.starts = num_frames - clip_frames + 1

  def __len__(self) -> int:
    return len(self.videos) * self.starts

  @property
  def skipped(self) -> int:
    """Unreadable videos skipped so far (0 for sources that never skip)."""
    return int(getattr(self.videos, "skipped", 0))

  def __getitem__(self, index):
    video_index, start = divmod(int(index), self.starts)
    if hasattr(self.videos, "clip"):
      return self.videos.clip(video_index, start, self.clip_frames)
    example = self.videos[video_index]
    return {"video": example["video"][start:start + self.clip_frames],
            "label": np.int32(example.get("label", 0))}
