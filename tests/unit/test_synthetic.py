"""The bouncing-shapes generator: determinism, physics, rendering and grain access."""

import grain
import numpy as np
import pytest

from ardiffusion_jax.data import synthetic
from ardiffusion_jax.data.pipeline import ClipSource
from ardiffusion_jax.data.synthetic import BouncingShapes
from ardiffusion_jax.errors import ConfigError


def _assert_examples_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_deterministic_for_seed_and_index():
  source = BouncingShapes(num_videos=8, num_frames=6)
  _assert_examples_equal(source[3], BouncingShapes(num_videos=8, num_frames=6)[3])
  assert not np.array_equal(source[3]["video"], source[4]["video"])
  assert not np.array_equal(source[3]["video"], BouncingShapes(num_videos=8, num_frames=6, seed=1)[3]["video"])


def test_a_clip_renders_exactly_those_frames_of_the_whole_video():
  source = BouncingShapes(num_videos=4, num_frames=6)
  clips = ClipSource(source, clip_frames=2, num_frames=6)
  assert len(clips) == 4 * 5
  for index in (0, 7, 19):
    video_index, start = divmod(index, 5)
    whole = source[video_index]
    np.testing.assert_array_equal(clips[index]["video"], whole["video"][start:start + 2])
    assert clips[index]["label"] == whole["label"]
  with pytest.raises(IndexError, match="not inside a 6-frame video"):
    source.clip(0, 5, 2)
  as_lists = BouncingShapes(num_videos=4, num_frames=6, radius_range=[0.08, 0.16])
  _assert_examples_equal(as_lists[2], source[2])
  edited = source[1]
  edited["positions"][:] = 0  # a caller's edits must not reach the cached physics
  cached = source[1]
  synthetic._simulate_video.cache_clear()
  _assert_examples_equal(cached, source[1])


@pytest.mark.parametrize("resolution", [32, 100, 256])
def test_any_resolution_keeps_balls_inside_the_frame(resolution):
  source = BouncingShapes(num_videos=6, num_frames=40 if resolution < 256 else 8,
                          resolution=resolution, speed_range=(0.05, 0.08))
  for i in range(len(source)):
    example = source[i]
    assert example["video"].shape == (source.num_frames, resolution, resolution, 3)
    assert example["video"].dtype == np.uint8
    mask = example["ball_mask"]
    centres, radii = example["positions"][:, mask], example["radii"][mask]
    assert np.all(centres - radii[:, None] >= -1e-4)
    assert np.all(centres + radii[:, None] <= resolution + 1e-4)


def test_speed_is_conserved_without_ball_collisions():
  source = BouncingShapes(num_videos=10, num_frames=60, collisions=False, speed_range=(0.04, 0.08))
  walls_hit = 0
  for i in range(len(source)):
    example = source[i]
    velocity = example["velocities"][:, example["ball_mask"]]
    speed = np.linalg.norm(velocity, axis=-1)
    np.testing.assert_allclose(speed, speed[:1].repeat(len(speed), 0), rtol=1e-5)
    walls_hit += int(np.sum(np.diff(np.sign(velocity), axis=0) != 0))
  assert walls_hit > 0, "no wall bounce happened: the test checked nothing"


def test_collisions_conserve_energy_and_speed_changes_only_at_contacts():
  source = BouncingShapes(num_videos=24, num_frames=48, min_balls=3, max_balls=3,
                          radius_range=(0.12, 0.16), speed_range=(0.05, 0.08))
  contacts = 0
  for i in range(len(source)):
    example = source[i]
    mass = example["radii"] ** 2
    speed = np.linalg.norm(example["velocities"], axis=-1)  # [F, N]
    energy = (mass * speed**2).sum(1)
    np.testing.assert_allclose(energy, energy[0], rtol=1e-5)
    hit = example["ball_collisions"][1:]
    unchanged = np.isclose(speed[1:], speed[:-1], rtol=1e-5)
    assert np.all(unchanged | hit), "a speed changed without a ball-ball contact"
    contacts += int(hit.sum())
  assert contacts > 0, "no ball-ball contact happened: the test checked nothing"


def test_rendering_puts_each_ball_where_the_ground_truth_says():
  source = BouncingShapes(num_videos=4, num_frames=5, resolution=64)
  for i in range(len(source)):
    example = source[i]
    top = int(example["ball_mask"].sum()) - 1  # drawn last, so never occluded
    for f in range(source.num_frames):
      x, y = example["positions"][f, top]
      np.testing.assert_array_equal(example["video"][f, int(y), int(x)], example["colors"][top])


def test_grain_gives_the_same_videos_as_direct_indexing():
  source = BouncingShapes(num_videos=12, num_frames=4, resolution=32)
  dataset = grain.MapDataset.source(source)
  assert len(dataset) == len(source)
  for i in (0, 5, 11):
    _assert_examples_equal(dataset[i], source[i])
  seen = []
  for batch in dataset.shuffle(seed=3).batch(4).to_iter_dataset():
    for j, index in enumerate(batch["index"]):
      np.testing.assert_array_equal(batch["video"][j], source[int(index)]["video"])
      seen.append(int(index))
  assert sorted(seen) == list(range(12))


@pytest.mark.parametrize("changes,field", [
    (dict(num_frames=0), "data.num_frames"),
    (dict(resolution=300), "data.resolution"),
    (dict(min_balls=3, max_balls=2), "data.max_balls"),
    (dict(max_balls=8, radius_range=(0.2, 0.3)), "data.radius_range"),
    (dict(speed_range=(0.1, 2.0)), "data.speed_range"),
])
def test_bad_settings_raise_config_errors(changes, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    BouncingShapes(**changes)


def test_index_out_of_range():
  with pytest.raises(IndexError):
    BouncingShapes(num_videos=2)[2]
