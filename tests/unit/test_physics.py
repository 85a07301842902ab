"""The physics score on clips with known ground truth (the synthetic generator's)."""

import numpy as np
import pytest

from ardiffusion_jax.data.synthetic import BACKGROUND, BouncingShapes
from ardiffusion_jax.eval import physics


def _source(**changes):
  fields = dict(num_videos=12, num_frames=24, resolution=64, min_balls=1, max_balls=1,
                collisions=False, seed=3)
  fields.update(changes)
  return BouncingShapes(**fields)


def test_tracking_recovers_ground_truth_speed_and_elastic_wall_bounces():
  source = _source()
  stats = [physics.clip_statistics(source[i]["video"]) for i in range(len(source))]
  true_speed = np.mean([np.linalg.norm(source[i]["velocities"][:, 0], axis=-1).mean()
                        for i in range(len(source))])
  assert all(s["balls"] == 1 and s["count_consistency"] == 1 for s in stats)
  assert abs(np.mean([s["speed"] for s in stats]) / true_speed - 1) < 0.1
  bounced = [s for s in stats if s["bounces"]]
  assert len(bounced) >= 3  # 24 frames at these speeds: several clips hit a wall
  assert all(s["wall_bounce_fraction"] == 1 for s in bounced)  # no balls to collide with
  assert abs(np.nanmean([s["bounce_elasticity"] for s in bounced]) - 1) < 0.25


def test_a_reversal_in_mid_air_is_not_a_correct_bounce():
  video = np.broadcast_to(BACKGROUND, (12, 64, 64, 3)).copy()
  xs = [20 + 2 * t for t in range(6)] + [28 - 2 * t for t in range(6)]  # turns at x = 30
  for t, x in enumerate(xs):
    video[t, 28:36, x - 4:x + 4] = (230, 25, 75)
  stats = physics.clip_statistics(video)
  assert stats["bounces"] == 1 and stats["wall_bounce_fraction"] == 0
  assert np.isnan(stats["bounce_elasticity"])


def test_real_against_real_scores_near_one():
  a = [_source(seed=1)[i]["video"] for i in range(12)]
  b = [_source(seed=2)[i]["video"] for i in range(12)]
  score = physics.physics_score(a, b)
  assert 0.7 < score["speed_ratio"] < 1.4
  assert score["wall_bounce_ratio"] == 1.0
  assert 0.7 < score["elasticity_ratio"] < 1.4


def test_colour_fidelity_sees_lost_hue_but_not_motion():
  """Real balls wear palette colours; desaturated or hue-shifted copies of the same clips
  (positions and motion untouched) do not, and the statistic says so."""
  import matplotlib.colors
  real = [_source(seed=5, max_balls=3, num_frames=12)[i]["video"] for i in range(12)]

  def hue_shifted(video, turn):
    hsv = matplotlib.colors.rgb_to_hsv(video / 255.0)
    hsv[..., 0] = (hsv[..., 0] + turn) % 1.0
    return np.round(matplotlib.colors.hsv_to_rgb(hsv) * 255).astype(np.uint8)

  grey = [(0.3 * v + 0.7 * v.mean(-1, keepdims=True)).astype(np.uint8) for v in real]
  shifted = [hue_shifted(v, 30 / 360) for v in real]
  stats = {name: physics.summarize(videos)
           for name, videos in (("real", real), ("grey", grey), ("shifted", shifted))}
  assert stats["real"]["palette_fraction"] > 0.9 and stats["real"]["colour_error"] < 5
  for name in ("grey", "shifted"):
    assert stats[name]["balls"] == stats["real"]["balls"]  # the same balls are found
    assert stats[name]["palette_fraction"] < 0.5 and stats[name]["colour_error"] > 30, name
  assert 0.95 < physics.physics_score(real[6:], real[:6])["palette_ratio"] < 1.05
  assert physics.physics_score(grey, real)["palette_ratio"] < 0.5


def test_per_window_statistics_follow_a_video_that_loses_its_ball():
  source = _source(num_videos=3, num_frames=16)
  videos = np.stack([source[i]["video"] for i in range(3)])
  videos[:, 8:] = BACKGROUND  # the ball vanishes halfway: the second window is empty
  first, second = physics.per_window(videos, 8)
  assert first["balls"] == 1 and first["count_consistency"] == 1
  assert second["balls"] == 0 and second["count_consistency"] == 1
  assert first == physics.summarize(videos[:, :8])
  with pytest.raises(ValueError, match="do not split into 5-frame windows"):
    physics.per_window(videos, 5)


def test_connected_regions_are_4_connected_in_raster_order():
  mask = np.zeros((12, 12), bool)
  mask[1:4, 1:4] = True  # 9 pixels
  mask[4:7, 4:7] = True  # touches the first only at a corner: a region of its own
  mask[9:11, 2:9] = True  # 14 pixels
  mask[0, 10] = True  # a speck under MIN_AREA
  frame = np.zeros((12, 12, 3), np.uint8)
  frame[mask] = (200, 10, 10)
  frame[9:11, 2:9] = (10, 200, 10)
  regions = physics.connected_regions(mask, frame)
  assert [area for _, area, _ in regions] == [9, 9, 14]
  centroids = [centroid for centroid, _, _ in regions]
  np.testing.assert_allclose(centroids, [(2.5, 2.5), (5.5, 5.5), (5.5, 10.0)])
  np.testing.assert_array_equal(regions[2][2], [10, 200, 10])
  assert physics.connected_regions(np.zeros((5, 5), bool)) == []
