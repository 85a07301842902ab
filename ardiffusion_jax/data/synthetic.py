"""Bouncing shapes: the embedded default dataset, with ground-truth physics.

Each video shows a few coloured balls of different sizes moving at constant speed,
bouncing elastically off the walls and, optionally, off each other (masses ∝ radius²).
Video i of a source is a pure function of (seed, i), so the source is random-access and
grain can index, shuffle and shard it. Every example carries its ground truth, padded to
`max_balls`, so generated videos can later be scored against the physics.
"""

import dataclasses
import functools

import numpy as np

from ardiffusion_jax.errors import ConfigError

# Saturated, well separated colours; each video draws its balls' colours without repeats.
PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (255, 255, 255), (250, 190, 212),
], dtype=np.uint8)
BACKGROUND = np.array((16, 16, 24), dtype=np.uint8)
# Held-out videos come from another seed of the same generator; 1000 apart keeps the
# held-out seed clear of the few training seeds a config sweeps (seed, seed + 1, ...).
HELD_OUT_SEED_OFFSET = 1000


@dataclasses.dataclass(frozen=True)
class BouncingShapes:
  """A random-access source of bouncing-ball videos.

  Sizes are fractions of the frame side: radii in `radius_range`, speeds in
  `speed_range` per frame. The label is the number of balls minus `min_balls`, so class
  conditioning has `max_balls - min_balls + 1` classes.

  `source[i]` returns a dict:
    video            uint8 [F, H, W, 3]
    label            int32, index int64
    positions        float32 [F, max_balls, 2]  ball centres (x, y) in pixels
    velocities       float32 [F, max_balls, 2]  pixels per frame, after frame f's motion
    radii            float32 [max_balls]        pixels
    colors           uint8 [max_balls, 3]
    ball_mask        bool [max_balls]           False for padding slots
    ball_collisions  bool [F, max_balls]        hit another ball on the way into frame f
  """
  num_videos: int = 1000
  num_frames: int = 16
  resolution: int = 64
  min_balls: int = 1
  max_balls: int = 3
  radius_range: tuple = (0.08, 0.16)
  speed_range: tuple = (0.02, 0.06)
  collisions: bool = True
  substeps: int = 8
  seed: int = 0

  def __post_init__(self):
    for name in ("radius_range", "speed_range"):  # hashable: the physics cache keys on self
      object.__setattr__(self, name, tuple(getattr(self, name)))
    check_synthetic_fields(self)

  @classmethod
  def from_config(cls, data_config, **changes):
    """Builds the source from a config's `data` section (fields as in this class)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data_config.items() if k in fields}
    return cls(**{**kwargs, **changes})

  @classmethod
  def held_out(cls, data_config, num_videos: int, **changes):
    """The held-out split: videos drawn from seed `data.seed + HELD_OUT_SEED_OFFSET`,
    which training (seed `data.seed`) never sees. Reconstruction PSNR, the demo's real
    clips and `ardiff eval` on synthetic data all score against it."""
    return cls.from_config(data_config, seed=data_config.seed + HELD_OUT_SEED_OFFSET,
                           num_videos=num_videos, **changes)

  @property
  def num_classes(self) -> int:
    return self.max_balls - self.min_balls + 1

  def __len__(self) -> int:
    return self.num_videos

  def __getitem__(self, index):
    physics = self._physics(index)
    pad = self.max_balls - len(physics["radii"])
    return {
        "video": render(physics["track"], physics["radii"], physics["colors"], self.resolution),
        "label": physics["label"],
        "index": np.int64(index),
        "positions": np.pad(physics["track"], ((0, 0), (0, pad), (0, 0))).astype(np.float32),
        "velocities": np.pad(physics["track_v"], ((0, 0), (0, pad), (0, 0))).astype(np.float32),
        "radii": np.pad(physics["radii"], (0, pad)).astype(np.float32),
        "colors": np.pad(physics["colors"], ((0, pad), (0, 0))),
        "ball_mask": np.arange(self.max_balls) < len(physics["radii"]),
        "ball_collisions": np.pad(physics["hits"], ((0, 0), (0, pad))),
    }

  def clip(self, index, start: int, num_frames: int):
    """Frames [start, start + num_frames) of video `index` and its label, rendering only
    those frames: the VAE's frame stage reads one frame of each video at a time."""
    if not (0 <= start and num_frames >= 1 and start + num_frames <= self.num_frames):
      raise IndexError(f"frames [{start}, {start + num_frames}) are not inside a "
                       f"{self.num_frames}-frame video")
    physics = self._physics(index)
    track = physics["track"][start:start + num_frames]
    return {"video": render(track, physics["radii"], physics["colors"], self.resolution),
            "label": physics["label"]}

  def _physics(self, index):
    index = int(index)
    if not 0 <= index < self.num_videos:
      raise IndexError(f"video index {index} out of range [0, {self.num_videos})")
    return _simulate_video(self, index)


# The simulation costs as much as rendering a whole video, and training reads each video
# many times, one frame at a time; the cached result is a few KB.
@functools.lru_cache(maxsize=1 << 14)
def _simulate_video(source: BouncingShapes, index: int):
  """The balls of video `index` of `source` and their trajectories (read-only arrays)."""
  rng = np.random.default_rng([source.seed, index])
  num_balls = int(rng.integers(source.min_balls, source.max_balls + 1))
  side = float(source.resolution)
  radii = rng.uniform(*source.radius_range, size=num_balls) * side
  colors = PALETTE[rng.choice(len(PALETTE), size=num_balls, replace=False)]
  positions = _place_balls(rng, radii, side, source.collisions)
  angles = rng.uniform(0, 2 * np.pi, size=num_balls)
  speeds = rng.uniform(*source.speed_range, size=num_balls) * side
  velocities = np.stack([np.cos(angles), np.sin(angles)], axis=1) * speeds[:, None]
  track, track_v, hits = simulate(positions, velocities, radii, side, source.num_frames,
                                  source.substeps, source.collisions)
  physics = {"track": track, "track_v": track_v, "hits": hits, "radii": radii, "colors": colors}
  for array in physics.values():
    array.flags.writeable = False
  return {**physics, "label": np.int32(num_balls - source.min_balls)}


def check_synthetic_fields(cfg, prefix: str = "data"):
  """Raises ConfigError for settings the generator cannot honour (works on a dataclass
  or a ConfigDict with the same field names)."""
  if cfg.num_videos < 1:
    raise ConfigError(f"{prefix}.num_videos", f"must be >= 1, got {cfg.num_videos}")
  if cfg.num_frames < 1:
    raise ConfigError(f"{prefix}.num_frames", f"must be >= 1, got {cfg.num_frames}")
  if not 32 <= cfg.resolution <= 256:
    raise ConfigError(f"{prefix}.resolution", f"must be in [32, 256], got {cfg.resolution}")
  if not 1 <= cfg.min_balls <= cfg.max_balls <= len(PALETTE):
    raise ConfigError(f"{prefix}.max_balls",
                      f"need 1 <= min_balls <= max_balls <= {len(PALETTE)}, got "
                      f"min_balls={cfg.min_balls}, max_balls={cfg.max_balls}")
  r_lo, r_hi = cfg.radius_range
  if not 0 < r_lo <= r_hi < 0.5:
    raise ConfigError(f"{prefix}.radius_range", f"need 0 < low <= high < 0.5, got {tuple(cfg.radius_range)}")
  if cfg.max_balls * np.pi * r_hi**2 > 0.5:
    raise ConfigError(f"{prefix}.radius_range",
                      f"{cfg.max_balls} balls of radius {r_hi} cover more than half the frame; "
                      "lower max_balls or the radius")
  if cfg.substeps < 1:
    raise ConfigError(f"{prefix}.substeps", f"must be >= 1, got {cfg.substeps}")
  v_lo, v_hi = cfg.speed_range
  if not 0 <= v_lo <= v_hi <= cfg.substeps * r_lo:
    raise ConfigError(f"{prefix}.speed_range",
                      f"need 0 <= low <= high <= substeps·min radius ({cfg.substeps}·{r_lo}) "
                      f"so no ball skips past a wall or another ball, got {tuple(cfg.speed_range)}")


def _place_balls(rng, radii, side, avoid_overlap, attempts: int = 1000):
  """Uniform positions inside the frame, rejection-sampled to avoid overlaps."""
  positions = np.zeros((len(radii), 2))
  for i, r in enumerate(radii):
    for _ in range(attempts):
      candidate = rng.uniform(r, side - r, size=2)
      gaps = np.linalg.norm(positions[:i] - candidate, axis=1) - radii[:i] - r
      if not avoid_overlap or np.all(gaps > 0):
        break
    else:  # Unreachable under the coverage limit in check_synthetic_fields.
      raise RuntimeError("could not place non-overlapping balls")
    positions[i] = candidate
  return positions


def simulate(positions, velocities, radii, side, num_frames, substeps, collisions):
  """Integrates the balls; returns positions, velocities [F, N, 2] and hits [F, N].

  Frame 0 is the initial state. Between frames the motion is split into `substeps`
  steps; walls reflect the normal velocity, and touching balls that approach each other
  exchange momentum along the line of centres (elastic, masses ∝ r²).
  """
  p = np.array(positions, np.float64)
  v = np.array(velocities, np.float64)
  num_balls = len(radii)
  mass = radii**2
  track = np.zeros((num_frames, num_balls, 2))
  track_v = np.zeros((num_frames, num_balls, 2))
  hits = np.zeros((num_frames, num_balls), bool)
  track[0], track_v[0] = p, v
  for f in range(1, num_frames):
    for _ in range(substeps):
      p += v / substeps
      if collisions:
        for i in range(num_balls):
          for j in range(i + 1, num_balls):
            delta = p[j] - p[i]
            dist = np.linalg.norm(delta)
            normal = delta / max(dist, 1e-9)
            approach = np.dot(v[i] - v[j], normal)
            if dist < radii[i] + radii[j] and approach > 0:
              impulse = 2 * approach / (mass[i] + mass[j])
              v[i] -= impulse * mass[j] * normal
              v[j] += impulse * mass[i] * normal
              hits[f, [i, j]] = True
      low, high = radii[:, None], side - radii[:, None]
      v = np.where(p < low, np.abs(v), np.where(p > high, -np.abs(v), v))
      p = np.where(p < low, 2 * low - p, np.where(p > high, 2 * high - p, p))
      p = np.clip(p, low, high)
    track[f], track_v[f] = p, v
  return track, track_v, hits


def render(positions, radii, colors, resolution):
  """Anti-aliased discs over a dark background, uint8 [F, H, W, 3]; later balls on top."""
  centres = np.arange(resolution) + 0.5
  frames = np.broadcast_to(BACKGROUND.astype(np.float32),
                           (positions.shape[0], resolution, resolution, 3)).copy()
  for ball in range(len(radii)):
    dx = centres[None, None, :] - positions[:, ball, 0, None, None]
    dy = centres[None, :, None] - positions[:, ball, 1, None, None]
    coverage = np.clip(radii[ball] + 0.5 - np.sqrt(dx**2 + dy**2), 0.0, 1.0)[..., None]
    frames += coverage * (colors[ball].astype(np.float32) - frames)
  return np.round(frames).astype(np.uint8)
