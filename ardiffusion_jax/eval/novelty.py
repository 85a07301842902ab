"""Are the samples new videos? Each clip's distance to its nearest training clip.

A DiT that memorised its training set samples clips that sit closer to some training clip
than new videos of the data do. The distance is the root-mean-square pixel difference
(0-255) between two whole clips, to the nearest of the training clips. It is measured for
the samples and for held-out real clips (other seeds of the same generator, never trained
on): the held-out distance is how far a new video of the data lies from the training set.
Samples should lie no nearer (`ratio` = samples / held-out ≥ 1). Blurred or washed-out
samples also land far from every training clip, so a high ratio alone is not quality; a
ratio under 1 is copying.
"""

import numpy as np


class TrainingClips:
  """The training clips [M, F, H, W, 3] flattened once, for nearest-clip searches."""

  def __init__(self, training):
    training = np.asarray(training)
    self.shape = training.shape[1:]
    # float32 halves the memory of the 1,024 demo clips (0.8 GB); the squared distances
    # of whole clips come out within ~1e-4 of float64, far below the distances compared.
    self._flat = training.reshape(len(training), -1).astype(np.float32)
    self._norms = np.einsum("ij,ij->i", self._flat, self._flat, dtype=np.float64)

  def nearest_distances(self, clips, chunk: int = 64) -> np.ndarray:
    """RMS pixel distance [N] from each uint8 clip [N, F, H, W, 3] to its nearest
    training clip."""
    clips = np.asarray(clips)
    if clips.shape[1:] != self.shape:
      raise ValueError(f"clips {clips.shape[1:]} and training clips {self.shape} differ in shape")
    out = []
    for start in range(0, len(clips), chunk):
      a = clips[start:start + chunk].reshape(-1, self._flat.shape[1]).astype(np.float32)
      squared = (np.einsum("ij,ij->i", a, a, dtype=np.float64)[:, None] + self._norms[None]
                 - 2 * (a @ self._flat.T).astype(np.float64))
      out.append(np.sqrt(np.maximum(squared.min(axis=1), 0) / a.shape[1]))
    return np.concatenate(out)


def novelty_scores(sample_sets: dict, held_out, training) -> dict:
  """For each named set of samples, the mean nearest-training-clip distance of the
  samples and of the held-out real clips, and their ratio (samples / held-out; under 1:
  the samples sit nearer the training set than new real videos do)."""
  training = training if isinstance(training, TrainingClips) else TrainingClips(training)
  held_out_nn = float(training.nearest_distances(held_out).mean())
  scores = {}
  for name, samples in sample_sets.items():
    sample_nn = float(training.nearest_distances(samples).mean())
    scores[name] = {"samples_nn": sample_nn, "held_out_nn": held_out_nn,
                    "ratio": sample_nn / held_out_nn if held_out_nn else float("nan")}
  return scores
