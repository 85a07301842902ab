"""`ardiff demo`: the main job on the embedded bouncing-shapes dataset.

What it runs today: it generates clips from the synthetic dataset, writes a preview GIF
with their ground-truth statistics, and draws the FoPP training schedulers and the AD
inference schedule. The model stages (AR-VAE, latent extraction, DiT training and AD
sampling) join this job as they land; the README tracks which have.
"""

import json
import pathlib
import time

import jax
import numpy as np
import tqdm

from ardiffusion_jax import diffusion, timesteps, viz
from ardiffusion_jax.data.synthetic import BouncingShapes


def dataset_preview(config, workdir: pathlib.Path) -> dict:
  """Renders the first clips of the dataset to a GIF grid and summarises their physics."""
  source = BouncingShapes.from_config(config.data)
  count = min(config.demo.preview_videos, len(source))
  examples = [source[i] for i in tqdm.trange(count, desc="synthetic clips", unit="clip")]
  videos = np.stack([example["video"] for example in examples])
  scale = max(1, 128 // config.data.resolution)
  gif = viz.write_gif(workdir / "preview.gif", viz.video_grid(videos), scale=scale)

  speeds, ball_hits = [], 0
  for example in examples:
    mask = example["ball_mask"]
    speeds.append(np.linalg.norm(example["velocities"][:, mask], axis=-1).ravel())
    ball_hits += int(example["ball_collisions"][:, mask].sum())
  return {
      "preview_gif": gif.name,
      "clips": count,
      "frames": config.data.num_frames,
      "resolution": config.data.resolution,
      "balls_per_clip": [int(e["ball_mask"].sum()) for e in examples],
      "mean_speed_px_per_frame": float(np.concatenate(speeds).mean()),
      "ball_ball_contacts": ball_hits,
  }


def schedule_pictures(config, workdir: pathlib.Path) -> dict:
  """Draws every training scheme and the AD schedule for each configured s."""
  diff = config.diffusion
  num_frames, num_timesteps = config.data.num_frames, diff.num_timesteps
  keys = jax.random.split(jax.random.key(config.seed), len(timesteps.SCHEMES))
  samples = {
      scheme: np.asarray(timesteps.sample_timesteps(
          key, scheme, config.demo.schedule_samples, num_frames, num_timesteps))
      for scheme, key in zip(tqdm.tqdm(timesteps.SCHEMES, desc="training schedules"), keys)
  }
  training_png = viz.plot_training_schedules(workdir / "training_schedules.png", samples,
                                             num_timesteps)

  betas = diffusion.beta_schedule(diff.beta_schedule, num_timesteps, diff.beta_start, diff.beta_end)
  grid = diffusion.ddim_grid(diff.ddim_grid, diffusion.alphas_cumprod(betas), diff.sampling_steps)
  matrices = {}
  for s in config.sample.s_values:
    step_index, update_mask = timesteps.ad_step_matrix(config.sample.num_frames,
                                                       diff.sampling_steps, s)
    matrices[s] = grid.timesteps_for(step_index, update_mask)
  ad_png = viz.plot_ad_schedules(workdir / "ad_schedules.png", matrices, num_timesteps)
  return {
      "training_schedules_png": training_png.name,
      "ad_schedules_png": ad_png.name,
      "mean_t_per_frame": {scheme: np.round(t.mean(0)).astype(int).tolist()
                           for scheme, t in samples.items()},
      "ad_rows_per_s": {str(s): int(m.shape[0]) for s, m in matrices.items()},
  }


def run(config, workdir) -> dict:
  """Runs the demo into `workdir` and returns the report it also writes there."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  report = {"config": config.variant, "dataset": dataset_preview(config, workdir)}
  report["schedules"] = schedule_pictures(config, workdir)
  report["seconds"] = round(time.time() - start, 1)
  (workdir / "report.json").write_text(json.dumps(report, indent=2))
  (workdir / "report.md").write_text(_markdown(report))
  return report


def _markdown(report: dict) -> str:
  data, sched = report["dataset"], report["schedules"]
  lines = [
      "# ardiff demo report", "",
      f"Config variant `{report['config']}`, {report['seconds']} s.", "",
      "## Synthetic dataset", "",
      f"![preview]({data['preview_gif']})", "",
      f"{data['clips']} clips, {data['frames']} frames at {data['resolution']}², balls per clip "
      f"{data['balls_per_clip']}, mean speed {data['mean_speed_px_per_frame']:.2f} px/frame, "
      f"{data['ball_ball_contacts']} ball-ball contacts.", "",
      "## Schedules", "",
      f"![training]({sched['training_schedules_png']})", "",
      f"![ad]({sched['ad_schedules_png']})", "",
      "| s | AD rows |", "|---|---|",
      *(f"| {s} | {rows} |" for s, rows in sched["ad_rows_per_s"].items()), "",
  ]
  return "\n".join(lines)
