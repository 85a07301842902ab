"""`ardiff demo`: the whole pipeline on the embedded bouncing-shapes dataset.

Stages, each resumable (re-running the command picks up where it stopped):
  1. a preview GIF of the dataset and pictures of the FoPP and AD schedules;
  2. train the tiny AR-VAE (`vae/`), and score its held-out reconstruction;
  3. extract latent shards with it (`latents/`);
  4. train the tiny causal DiT with FoPP on them (`dit/`);
  5. sample 16-frame videos at every configured s and one long video (`samples/`),
     decode them, and score their physics against real clips;
  6. write report.json and report.md.
"""

import json
import pathlib
import time

import jax
import numpy as np
import tqdm

from ardiffusion_jax import diffusion, generate, runs, timesteps, viz
from ardiffusion_jax import extract as extract_lib
from ardiffusion_jax.data.synthetic import BouncingShapes
from ardiffusion_jax.eval import novelty, physics, reconstruction
from ardiffusion_jax.train import dit as train_dit
from ardiffusion_jax.train import vae as train_vae
from ardiffusion_jax.train.logging import read_metrics


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
      "real_clips": config.demo.real_clips,
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

  grid = diffusion.ddim_grid(diff.ddim_grid, diffusion.alphas_from_config(diff), diff.sampling_steps)
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


# A tokenizer within this of the mean frame's PSNR has not left the mean image.
MEAN_IMAGE_MARGIN_DB = 2.0


def vae_stage(config, workdir: pathlib.Path) -> dict:
  """Trains (or resumes) the tiny AR-VAE and scores its reconstructions of held-out clips:
  the PSNR, and the physics of the reconstructions (the ceiling for the samples)."""
  result = train_vae.train(config, workdir / "vae")
  params = runs.load_run(workdir / "vae", "vae").variables["params"]
  clips = reconstruction.reconstruct_held_out(config, params, config.demo.real_clips,
                                              progress=True)
  viz.write_gif(workdir / "reconstructions.gif",
                viz.video_grid(np.concatenate([clips["real"][:4], clips["reconstructed"][:4]])),
                scale=max(1, 128 // config.data.resolution))
  summary = {"steps": result.step, "held_out_psnr_db": round(clips["psnr_db"], 2),
             "mean_image_psnr_db": round(clips["mean_image_psnr_db"], 2),
             "reconstructions_gif": "reconstructions.gif",
             "physics": physics.physics_score(clips["reconstructed"], clips["real"])}
  if clips["psnr_db"] < clips["mean_image_psnr_db"] + MEAN_IMAGE_MARGIN_DB:
    summary["warning"] = (
        f"the AR-VAE scores {clips['psnr_db']:.2f} dB, within {MEAN_IMAGE_MARGIN_DB} dB of the "
        f"held-out clips' mean frame ({clips['mean_image_psnr_db']:.2f} dB): it has not left the "
        "mean image, so its latents carry almost nothing for the DiT to learn. Trained from "
        "scratch, the tiny tokenizer stays there for a number of steps that depends on the "
        "seed; train it longer (vae_train.steps) or with another seed (seed)")
    print(f"warning: {summary['warning']}", flush=True)
  return summary


def dit_stage(config, workdir: pathlib.Path) -> dict:
  """Extracts latents (skipping finished shards) and trains (or resumes) the DiT."""
  counts = extract_lib.extract(config, workdir / "vae", workdir / "latents")
  dit_config = config.copy_and_resolve_references()
  dit_config.train.latents_dir = str(workdir / "latents")
  result = train_dit.train(dit_config, workdir / "dit")
  records = read_metrics(workdir / "dit")
  return {"latent_shards": counts["shards"], "steps": result.step,
          "first_loss": records[0]["loss"] if records else None,
          "last_loss": records[-1]["loss"] if records else None}


def _clips(source) -> np.ndarray:
  return np.stack([source[i]["video"] for i in tqdm.trange(len(source), desc="real clips",
                                                            unit="clip", leave=False)])


def sampling_stage(config, workdir: pathlib.Path) -> dict:
  """Samples at every s and the long videos (labels cycled through the classes when
  demo.class_conditional); decodes; scores physics against held-out
  real clips, novelty against the training clips, and the long videos window by window.
  A setting whose sample.json exists is not redone. The sampler's steps and η are this
  config's, so a finished DiT samples again with others (`--set diffusion.eta=…` after
  removing samples/), not with those saved when it trained."""
  generator = generate.Generator.from_checkpoint(
      workdir / "dit", vae_ckpt=workdir / "vae", sampling_steps=config.diffusion.sampling_steps)
  demo, window = config.demo, config.data.num_frames
  real = _clips(BouncingShapes.held_out(config.data, demo.real_clips))
  settings = [(f"s{s}", config.sample.num_frames, s, demo.sample_videos)
              for s in config.sample.s_values]
  settings += [(f"long_{demo.long_frames}f_s{s}", demo.long_frames, s, demo.long_videos)
               for s in demo.long_s]
  classes = generator.model.num_classes if demo.class_conditional else 0
  labels = lambda num: np.arange(num) % classes if classes else None
  training = None  # rendered once, when a clip-length setting is first scored
  results = {}
  for name, frames, s, num in settings:
    out = workdir / "samples" / name
    summary_file = out / "sample.json"
    if summary_file.exists():
      results[name] = json.loads(summary_file.read_text())
      continue
    latents, timing = generator.sample_latents(num, frames, s, batch_size=num, seed=config.seed,
                                               label=labels(num), eta=config.diffusion.eta)
    videos = generator.decode(latents, batch_size=demo.decode_batch)
    # Physics over windows as long as the real clips it is compared with.
    usable = frames - frames % window
    windows = videos[:, :usable].reshape((-1, window) + videos.shape[2:])
    extra = {"physics": physics.physics_score(windows, real)}
    if frames == window:
      if training is None:
        training = novelty.TrainingClips(_clips(BouncingShapes.from_config(config.data)))
      extra["novelty"] = novelty.novelty_scores({name: videos}, real, training)[name]
    else:
      extra["windows"] = physics.per_window(videos[:, :usable], window)
    results[name] = generate.write_outputs(out, videos, latents,
                                           dict(frames=frames, s=s, num=num,
                                                eta=config.diffusion.eta,
                                                labels="cycled" if classes else "null",
                                                **extra, **timing),
                                           grid_videos=demo.grid_videos)
  long_runs = {name: r["windows"] for name, r in results.items() if "windows" in r}
  if long_runs:
    viz.plot_windows(workdir / "long_windows.png", long_runs, physics.summarize(real), window)
  return results


def run(config, workdir) -> dict:
  """Runs (or resumes) the demo into `workdir`; returns the report it also writes there."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  report = {"config": config.variant, "stage_seconds": {}}
  stages = (("dataset", dataset_preview), ("schedules", schedule_pictures), ("vae", vae_stage),
            ("dit", dit_stage), ("samples", sampling_stage))
  for name, stage in stages:  # a stage resumed from its files takes only its scoring time
    started = time.time()
    report[name] = stage(config, workdir)
    report["stage_seconds"][name] = round(time.time() - started, 1)
  report["real_physics"] = report["vae"]["physics"]["real"]  # the held-out clips
  report["seconds"] = round(time.time() - start, 1)
  (workdir / "report.json").write_text(json.dumps(report, indent=2))
  (workdir / "report.md").write_text(_markdown(report))
  return report


def _late_windows(windows: list) -> dict:
  """Mean balls and count steadiness over the windows of a long video's last quarter."""
  late = windows[len(windows) - max(1, len(windows) // 4):]
  return {key: float(np.nanmean([w[key] for w in late])) for key in ("balls", "count_consistency")}


def _physics_cells(phys: dict) -> str:
  stats = phys["samples"]
  return (f"{stats['balls']:.2f} | {stats['count_consistency']:.2f} | {phys['speed_ratio']:.2f} | "
          f"{phys['acceleration_ratio']:.2f} | {phys['wall_bounce_ratio']:.2f} | "
          f"{stats['palette_fraction']:.2f}")


def _markdown(report: dict) -> str:
  data, sched = report["dataset"], report["schedules"]
  vae, dit, real = report["vae"], report["dit"], report["real_physics"]
  samples = report["samples"]
  clip_settings = {n: r for n, r in samples.items() if "novelty" in r}
  long_settings = {n: r for n, r in samples.items() if "windows" in r}
  lines = [
      "# ardiff demo report", "",
      f"Config variant `{report['config']}`, {report['seconds']} s for this invocation "
      "(stages already done are skipped): " + ", ".join(
          f"{name} {seconds:.0f} s" for name, seconds in report["stage_seconds"].items()) + ".", "",
      "## Synthetic dataset", "",
      f"![preview]({data['preview_gif']})", "",
      f"{data['clips']} clips, {data['frames']} frames at {data['resolution']}², balls per clip "
      f"{data['balls_per_clip']}, mean speed {data['mean_speed_px_per_frame']:.2f} px/frame, "
      f"{data['ball_ball_contacts']} ball-ball contacts.", "",
      "## Schedules", "",
      f"![training]({sched['training_schedules_png']})", "",
      f"![ad]({sched['ad_schedules_png']})", "",
      "## Models", "",
      f"- AR-VAE: {vae['steps']} steps, held-out reconstruction PSNR "
      f"{vae['held_out_psnr_db']} dB (real clips above, reconstructions below:",
      f"  [reconstructions.gif]({vae['reconstructions_gif']})).",
      f"- DiT: {dit['steps']} steps on {dit['latent_shards']} latent shards, loss "
      f"{dit['first_loss']:.4f} -> {dit['last_loss']:.4f}.", "",
      *([f"**Warning: {vae['warning']}**", ""] if "warning" in vae else []),
      f"![reconstructions]({vae['reconstructions_gif']})", "",
      "## Samples", "",
      "| setting | videos | s | AD rows | s/video | balls | count steady | speed ratio | "
      "accel ratio | wall-bounce ratio | palette colours | novelty (NN ratio) |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
      f"| real clips | {data['real_clips']} | | | | {real['balls']:.2f} | "
      f"{real['count_consistency']:.2f} | 1 | 1 | 1 | {real['palette_fraction']:.2f} | 1 |",
      f"| AR-VAE reconstructions (ceiling) | {data['real_clips']} | | | | "
      f"{_physics_cells(vae['physics'])} | |",
  ]
  for name, result in clip_settings.items():
    lines.append(
        f"| [{name}](samples/{name}/grid.gif) | {result['num']} | {result['s']} | {result['rows']} | "
        f"{result['seconds_per_video']:.2f} | {_physics_cells(result['physics'])} | "
        f"{result['novelty']['ratio']:.2f} |")
  lines += [
      "", f"Real clips: speed {real['speed']:.2f} px/frame, acceleration "
      f"{real['acceleration']:.2f} px/frame², {real['wall_bounce_fraction']:.2f} of bounces at a "
      f"wall; palette colours is the share of balls within {physics.COLOUR_TOLERANCE:.0f} RGB of a "
      "palette colour. Ratios are sample / real (1.00 matches); see "
      "`ardiffusion_jax/eval/physics.py`. Novelty: the mean RMS distance from each sample to its "
      "nearest training clip over the same distance for held-out real clips (under 1: nearer "
      "the training set than new real videos; `ardiffusion_jax/eval/novelty.py`).", "",
  ]
  if long_settings:
    lines += ["## Long videos", "", "![windows](long_windows.png)", "",
              "| setting | videos | frames | s/video | balls, first window | balls, last quarter | "
              "count steady, first window | count steady, last quarter |",
              "|---|---|---|---|---|---|---|---|"]
    for name, result in long_settings.items():
      first, late = result["windows"][0], _late_windows(result["windows"])
      lines.append(f"| [{name}](samples/{name}/grid.gif) | {result['num']} | {result['frames']} | "
                   f"{result['seconds_per_video']:.2f} | {first['balls']:.2f} | {late['balls']:.2f} | "
                   f"{first['count_consistency']:.2f} | {late['count_consistency']:.2f} |")
    lines.append("")
  for name in samples:
    lines += [f"### {name}", "", f"![{name}](samples/{name}/grid.gif)", ""]
  return "\n".join(lines)
