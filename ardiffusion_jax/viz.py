"""Pictures for people: video grids as GIF, and plots of the timestep schedules."""

import pathlib

import matplotlib

matplotlib.use("Agg")  # No display on servers, CI or Colab kernels without one.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def video_grid(videos: np.ndarray, columns: int = 4, pad: int = 2) -> np.ndarray:
  """Tiles uint8 videos [N, F, H, W, 3] into one video [F, H', W', 3] with white gaps."""
  videos = np.asarray(videos)
  n, f, h, w, c = videos.shape
  columns = min(columns, n)
  rows = -(-n // columns)
  grid = np.full((f, rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
  for i in range(n):
    top, left = pad + (i // columns) * (h + pad), pad + (i % columns) * (w + pad)
    grid[:, top:top + h, left:left + w] = videos[i]
  return grid


def write_gif(path, frames: np.ndarray, fps: int = 8, scale: int = 1):
  """Writes uint8 frames [F, H, W, 3] as a looping GIF, optionally upscaled (nearest)."""
  frames = np.asarray(frames)
  if scale > 1:
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
  images = [Image.fromarray(frame) for frame in frames]
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps),
                 loop=0, optimize=False)
  return path


def plot_training_schedules(path, samples: dict, num_timesteps: int):
  """One panel per training scheme: P(t | frame) as a heat map, the mean t per frame
  as a line, and a few sampled compositions. `samples` maps scheme -> int [N, F]."""
  fig, axes = plt.subplots(1, len(samples), figsize=(3.2 * len(samples), 3.4), sharey=True)
  bins = np.linspace(0, num_timesteps, 41)
  for ax, (scheme, t) in zip(np.atleast_1d(axes), samples.items()):
    t = np.asarray(t)
    frames = np.arange(t.shape[1])
    density = np.stack([np.histogram(t[:, f], bins=bins, density=True)[0] for f in frames], axis=1)
    ax.imshow(density, origin="lower", aspect="auto", cmap="magma",
              extent=(-0.5, t.shape[1] - 0.5, 0, num_timesteps))
    for row in t[:3]:
      ax.plot(frames, row, color="cyan", lw=0.8, alpha=0.8)
    ax.plot(frames, t.mean(0), color="white", lw=2, label="mean t")
    ax.set_title(scheme, fontsize=10)
    ax.set_xlabel("frame")
  np.atleast_1d(axes)[0].set_ylabel("timestep t")
  np.atleast_1d(axes)[0].legend(loc="lower right", fontsize=7)
  fig.suptitle("Training timestep schedulers: P(t | frame), mean, 3 samples")
  return _save(fig, path)


def plot_ad_schedules(path, matrices: dict, num_timesteps: int):
  """One panel per s: the model timestep of each frame (x) at each AD row (y).
  `matrices` maps s -> timesteps int [R, F]."""
  fig, axes = plt.subplots(1, len(matrices), figsize=(2.8 * len(matrices), 4.2))
  for ax, (s, t) in zip(np.atleast_1d(axes), matrices.items()):
    image = ax.imshow(t, aspect="auto", cmap="viridis", vmin=0, vmax=num_timesteps - 1,
                      interpolation="nearest")
    ax.set_title(f"s = {s}: {t.shape[0]} rows", fontsize=10)
    ax.set_xlabel("frame")
  np.atleast_1d(axes)[0].set_ylabel("AD iteration (row)")
  fig.colorbar(image, ax=axes, label="timestep fed to the model", shrink=0.8)
  fig.suptitle("AD inference schedule: synchronous (s = 0) to autoregressive (s = S)")
  return _save(fig, path)


def plot_windows(path, series: dict, real: dict, window: int,
                 keys=(("balls", "balls per frame"), ("count_consistency", "count steady"))):
  """Statistics along long videos, one point per `window`-frame window: `series` maps a
  name to a list of per-window dicts (`eval.physics.per_window`); `real` gives the real
  clips' values as dashed reference lines."""
  fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2))
  for ax, (key, label) in zip(np.atleast_1d(axes), keys):
    for name, windows in series.items():
      starts = np.arange(len(windows)) * window
      ax.plot(starts, [w[key] for w in windows], marker="o", ms=3, label=name)
    ax.axhline(real[key], color="black", ls="--", lw=1, label="real clips")
    ax.set_xlabel(f"first frame of the {window}-frame window")
    ax.set_title(label, fontsize=10)
  np.atleast_1d(axes)[0].legend(fontsize=7)
  fig.suptitle("Long videos: physics statistics per window")
  return _save(fig, path)


def plot_ablations(path, s_values, series: dict, labels: dict):
  """One panel per statistic against s, one line per model with its seed spread as error
  bars: `series` maps a model to {statistic: [cell per s]}, a cell being None or a dict
  with "mean" and "std"; `labels` names the statistics. Statistics no model has are left
  out."""
  keys = [k for k in labels if any(c for cells in series.values() for c in cells[k])]
  columns = min(3, max(1, len(keys)))
  rows = max(1, -(-len(keys) // columns))
  fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False,
                           constrained_layout=True)
  for ax, key in zip(axes.ravel(), keys):
    for name, cells in series.items():
      points = [(s, c["mean"], c["std"]) for s, c in zip(s_values, cells[key]) if c]
      if points:
        xs, means, stds = zip(*points)
        ax.errorbar(xs, means, yerr=np.nan_to_num(stds), marker="o", ms=3, capsize=2, label=name)
    ax.set_xlabel("timestep difference s")
    ax.set_title(labels[key], fontsize=10)
  for ax in axes.ravel()[len(keys):]:
    ax.axis("off")
  axes[0, 0].legend(fontsize=6)
  fig.suptitle("Ablations by s: mean and standard deviation over seeds")
  return _save(fig, path)


def _save(fig, path):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path
