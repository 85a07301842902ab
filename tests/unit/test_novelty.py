"""The novelty score: nearest-training-clip distances, against brute force and on copies."""

import ml_collections
import numpy as np
import pytest

from ardiffusion_jax.data.synthetic import BouncingShapes
from ardiffusion_jax.eval import novelty


def test_nearest_distances_match_brute_force_across_chunks():
  rng = np.random.default_rng(0)
  clips = rng.integers(0, 256, (5, 3, 4, 4, 3), dtype=np.uint8)
  training = rng.integers(0, 256, (11, 3, 4, 4, 3), dtype=np.uint8)
  brute = np.array([min(np.sqrt(np.mean((c.astype(float) - t.astype(float)) ** 2)) for t in training)
                    for c in clips])
  index = novelty.TrainingClips(training)
  for chunk in (1, 2, 64):  # chunks that split the clips unevenly, and one chunk
    np.testing.assert_allclose(index.nearest_distances(clips, chunk=chunk), brute, rtol=1e-5)
  np.testing.assert_allclose(index.nearest_distances(training[3:6]), 0, atol=1e-2)
  with pytest.raises(ValueError, match="differ in shape"):
    index.nearest_distances(clips[:, :2])


def test_copies_of_training_clips_score_below_held_out_clips():
  data = ml_collections.ConfigDict(dict(num_videos=24, num_frames=8, resolution=32, seed=0))
  train_source, held_source = BouncingShapes.from_config(data), BouncingShapes.held_out(data, 8)
  training = np.stack([train_source[i]["video"] for i in range(len(train_source))])
  held_out = np.stack([held_source[i]["video"] for i in range(len(held_source))])
  # Memorised samples: training clips with a little noise sit far nearer than new clips.
  noise = np.random.default_rng(1).integers(-3, 4, training[:8].shape)
  copies = np.clip(training[:8].astype(int) + noise, 0, 255).astype(np.uint8)
  scores = novelty.novelty_scores({"new": held_out[:4], "copies": copies}, held_out[4:], training)
  assert scores["new"]["held_out_nn"] > 5 and 0.5 < scores["new"]["ratio"] < 2  # new clips: alike
  assert scores["copies"]["ratio"] < 0.3
  assert scores["copies"]["held_out_nn"] == pytest.approx(
      novelty.TrainingClips(training).nearest_distances(held_out[4:]).mean())
