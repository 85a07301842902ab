"""The physics score on clips with known ground truth (the synthetic generator's)."""

import numpy as np

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
