"""A physics score for bouncing-shapes videos: find the balls, track them, compare.

Balls are the connected regions that differ clearly from the dark background. Per clip
we measure how steady the ball count is, the speed (mean displacement of matched balls
between frames) and the acceleration (mean |second difference|: near zero in free
flight, large at bounces or when balls jitter). The same detector runs on real clips
and on samples, so its own bias cancels in the comparison. This is tracking statistics,
not a learned metric; the evaluation issue refines it.
"""

import numpy as np

from ardiffusion_jax.data.synthetic import BACKGROUND

MIN_AREA = 6  # pixels; smaller specks are noise


def ball_mask(frame: np.ndarray, threshold: float = 60.0) -> np.ndarray:
  """Pixels whose colour is far from the background (max channel distance)."""
  return np.abs(frame.astype(np.float32) - BACKGROUND).max(axis=-1) > threshold


def connected_regions(mask: np.ndarray):
  """4-connected components of a boolean image: a list of (centroid (x, y), area)."""
  height, width = mask.shape
  labels = np.where(mask, np.arange(mask.size).reshape(mask.shape), mask.size)
  while True:  # propagate the smallest index through each region until stable
    padded = np.pad(labels, 1, constant_values=mask.size)
    neighbours = np.minimum.reduce([padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1],
                                    padded[1:-1, :-2], padded[1:-1, 2:]])
    updated = np.where(mask, neighbours, mask.size)
    if np.array_equal(updated, labels):
      break
    labels = updated
  regions = []
  ys, xs = np.mgrid[:height, :width]
  for label in np.unique(labels[mask]):
    inside = labels == label
    area = int(inside.sum())
    if area >= MIN_AREA:
      regions.append(((float(xs[inside].mean()) + 0.5, float(ys[inside].mean()) + 0.5), area))
  return regions


def clip_statistics(video: np.ndarray) -> dict:
  """Tracking statistics of one uint8 clip [F, H, W, 3]."""
  centroids = [np.array([c for c, _ in connected_regions(ball_mask(f))]).reshape(-1, 2)
               for f in video]
  counts = np.array([len(c) for c in centroids])
  mode = np.bincount(counts).argmax()
  # Greedy nearest matching between consecutive frames with the same count.
  velocities = []  # per frame pair: [n, 2] matched displacements, or None
  for a, b in zip(centroids[:-1], centroids[1:]):
    if len(a) != len(b) or not len(a):
      velocities.append(None)
      continue
    distance = np.linalg.norm(a[:, None] - b[None], axis=-1)
    matched, taken = np.empty_like(a), set()
    for i in np.argsort(distance.min(axis=1)):  # surest pairs first
      j = next(j for j in np.argsort(distance[i]) if j not in taken)
      taken.add(j)
      matched[i] = b[j] - a[i]
    velocities.append(matched)
  speeds = [np.linalg.norm(v, axis=-1).mean() for v in velocities if v is not None]
  accels = [np.linalg.norm(v2 - v1, axis=-1).mean()
            for v1, v2 in zip(velocities[:-1], velocities[1:])
            if v1 is not None and v2 is not None and len(v1) == len(v2)]
  return {
      "balls": float(mode),
      "count_consistency": float(np.mean(counts == mode)),
      "tracked_fraction": float(np.mean([v is not None for v in velocities])) if velocities else 0.0,
      "speed": float(np.mean(speeds)) if speeds else float("nan"),
      "acceleration": float(np.mean(accels)) if accels else float("nan"),
  }


def summarize(videos) -> dict:
  """Mean of each statistic over clips (NaN-free clips only for speed/acceleration)."""
  stats = [clip_statistics(v) for v in videos]
  return {key: float(np.nanmean([s[key] for s in stats])) if any(
      np.isfinite(s[key]) for s in stats) else float("nan") for key in stats[0]}


def physics_score(samples, real) -> dict:
  """Statistics of samples and real clips side by side, and the sample/real ratios of
  speed and acceleration (1.0 is a perfect match)."""
  sample_stats, real_stats = summarize(samples), summarize(real)
  ratio = lambda key: sample_stats[key] / real_stats[key] if real_stats[key] else float("nan")
  return {"samples": sample_stats, "real": real_stats,
          "speed_ratio": ratio("speed"), "acceleration_ratio": ratio("acceleration")}
