"""A physics score for bouncing-shapes videos: find the balls, track them, compare.

Balls are the connected regions that differ clearly from the dark background. They are
linked between consecutive frames (nearest neighbours, when the count agrees). Per clip
we measure how steady the ball count is, the speed (mean displacement of linked balls),
the acceleration (mean |second difference| along a track: near zero in free flight,
large at bounces or when balls jitter), and the bounces: a velocity component that
changes sign is a bounce; a correct one happens at a wall (within the ball's radius plus
one step of it) and keeps that component's speed (elastic walls). Ball-ball collisions
also reverse components away from walls, so real clips set the reference: the same
detector runs on real clips and samples, and its bias cancels in the ratios. This is
tracking statistics, not a learned metric.

Colour fidelity: each ball's colour (the median of its pixels, which the anti-aliased
rim barely moves) is compared with the dataset's palette. `palette_fraction` is the
share of balls within `COLOUR_TOLERANCE` of a palette colour, `colour_error` the mean
distance to the nearest one (RGB, 0-441). A tokenizer that loses hue turns every ball
into the same grey or pink, which keeps positions and motion but fails both.
"""

import numpy as np
from scipy import ndimage

from ardiffusion_jax.data.synthetic import BACKGROUND, PALETTE

MIN_AREA = 6  # pixels; smaller specks are noise
MIN_BOUNCE_SPEED = 0.3  # px/frame on the reversed axis, both before and after
# RGB distance within which a ball counts as a palette colour: under half the distance
# between the two closest palette colours (pink and white, 78), so no ball is near two.
COLOUR_TOLERANCE = 36.0


def ball_mask(frame: np.ndarray, threshold: float = 60.0) -> np.ndarray:
  """Pixels whose colour is far from the background (max channel distance)."""
  return np.abs(frame.astype(np.float32) - BACKGROUND).max(axis=-1) > threshold


def connected_regions(mask: np.ndarray, frame=None):
  """4-connected components of a boolean image, in raster order of their first pixel: a
  list of (centroid (x, y), area, median colour of `frame` over the region (None without
  a frame)) for the regions of at least MIN_AREA pixels."""
  labels, count = ndimage.label(mask)  # the default structure is 4-connectivity
  if not count:
    return []
  index = np.arange(1, count + 1)
  areas = ndimage.sum_labels(mask, labels, index).astype(int)
  centres = ndimage.center_of_mass(mask, labels, index)  # (y, x) per region
  regions = []
  for label, area, (y, x) in zip(index, areas, centres):
    if area >= MIN_AREA:
      colour = None if frame is None else np.median(frame[labels == label].astype(np.float32),
                                                    axis=0)
      regions.append(((float(x) + 0.5, float(y) + 0.5), int(area), colour))
  return regions


def palette_distance(colours) -> np.ndarray:
  """RGB distance of each colour [N, 3] to the nearest palette colour."""
  colours = np.asarray(colours, np.float32).reshape(-1, 3)
  return np.linalg.norm(colours[:, None] - PALETTE[None].astype(np.float32), axis=-1).min(axis=1)


def clip_statistics(video: np.ndarray) -> dict:
  """Tracking statistics of one uint8 clip [F, H, W, 3]."""
  height, width = video.shape[1:3]
  regions = [connected_regions(ball_mask(f), f) for f in video]
  centroids = [np.array([c for c, _, _ in r]).reshape(-1, 2) for r in regions]
  radii = [np.sqrt(np.array([a for _, a, _ in r], np.float64) / np.pi) for r in regions]
  distances = palette_distance([colour for r in regions for _, _, colour in r])
  counts = np.array([len(c) for c in centroids])
  mode = np.bincount(counts).argmax()
  # Greedy nearest matching between consecutive frames with the same count: ball i of
  # frame k is ball links[k][i] of frame k + 1, having moved by velocities[k][i].
  velocities, links = [], []
  for a, b in zip(centroids[:-1], centroids[1:]):
    if len(a) != len(b) or not len(a):
      velocities.append(None)
      links.append(None)
      continue
    distance = np.linalg.norm(a[:, None] - b[None], axis=-1)
    matched, link, taken = np.empty_like(a), np.empty(len(a), int), set()
    for i in np.argsort(distance.min(axis=1)):  # surest pairs first
      j = next(j for j in np.argsort(distance[i]) if j not in taken)
      taken.add(j)
      matched[i], link[i] = b[j] - a[i], j
    velocities.append(matched)
    links.append(link)
  speeds = [np.linalg.norm(v, axis=-1).mean() for v in velocities if v is not None]
  def step(k, ball):  # ball's displacement from frame k to k + 1, if tracked
    return None if not 0 <= k < len(velocities) or velocities[k] is None else velocities[k][ball]

  def previous(k, ball):  # the same ball's index in frame k - 1, if tracked
    if k < 1 or links[k - 1] is None:
      return None
    found = np.flatnonzero(links[k - 1] == ball)
    return int(found[0]) if len(found) else None

  accels, at_wall, elasticity = [], [], []
  for k in range(len(velocities) - 1):
    v1, v2 = velocities[k], velocities[k + 1]
    if v1 is None or v2 is None:
      continue
    after = v2[links[k]]  # each ball's next displacement, in frame k's ball order
    accels.append(np.linalg.norm(after - v1, axis=-1).mean())
    for i, j in enumerate(links[k]):
      for axis, size in ((0, width), (1, height)):
        before_c, after_c = v1[i, axis], after[i, axis]
        if before_c * after_c >= 0 or min(abs(before_c), abs(after_c)) < MIN_BOUNCE_SPEED:
          continue
        position = centroids[k + 1][j, axis]
        reach = radii[k + 1][j] + max(abs(before_c), abs(after_c)) + 1.0
        at_wall.append(min(position, size - position) <= reach)
        # Elasticity from the whole steps around the bounce (the steps touching it are
        # cut short by the wall): one step earlier against one step later.
        earlier_ball = previous(k, i)
        earlier = None if earlier_ball is None else step(k - 1, earlier_ball)
        later = step(k + 2, links[k + 1][j]) if links[k + 1] is not None else None
        if at_wall[-1] and earlier is not None and later is not None and earlier[axis]:
          elasticity.append(abs(later[axis]) / abs(earlier[axis]))
  nan = float("nan")
  return {
      "balls": float(mode),
      "count_consistency": float(np.mean(counts == mode)),
      "tracked_fraction": float(np.mean([v is not None for v in velocities])) if velocities else 0.0,
      "speed": float(np.mean(speeds)) if speeds else nan,
      "acceleration": float(np.mean(accels)) if accels else nan,
      "bounces": float(len(at_wall)),
      "wall_bounce_fraction": float(np.mean(at_wall)) if at_wall else nan,
      "bounce_elasticity": float(np.mean(elasticity)) if elasticity else nan,
      "palette_fraction": float(np.mean(distances <= COLOUR_TOLERANCE)) if len(distances) else nan,
      "colour_error": float(distances.mean()) if len(distances) else nan,
  }


def summarize(videos) -> dict:
  """Mean of each statistic over clips (NaN-free clips only for speed/acceleration)."""
  stats = [clip_statistics(v) for v in videos]
  return {key: float(np.nanmean([s[key] for s in stats])) if any(
      np.isfinite(s[key]) for s in stats) else float("nan") for key in stats[0]}


def per_window(videos, window: int) -> list:
  """`summarize` of each `window`-frame stretch of videos [N, F, H, W, 3], in order: how
  the statistics drift along a long video. F must be a multiple of `window`."""
  videos = np.asarray(videos)
  if videos.shape[1] % window:
    raise ValueError(f"{videos.shape[1]} frames do not split into {window}-frame windows")
  return [summarize(videos[:, start:start + window])
          for start in range(0, videos.shape[1], window)]


def physics_score(samples, real) -> dict:
  """Statistics of samples and real clips side by side, and the sample/real ratios of
  speed, acceleration, bounce correctness and palette colours (1.0 is a perfect match)."""
  sample_stats, real_stats = summarize(samples), summarize(real)
  ratio = lambda key: sample_stats[key] / real_stats[key] if real_stats[key] else float("nan")
  return {"samples": sample_stats, "real": real_stats,
          "speed_ratio": ratio("speed"), "acceleration_ratio": ratio("acceleration"),
          "wall_bounce_ratio": ratio("wall_bounce_fraction"),
          "elasticity_ratio": ratio("bounce_elasticity"),
          "palette_ratio": ratio("palette_fraction")}
