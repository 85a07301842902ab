"""`ardiff eval`: sample at several s, score against real clips, write a Table-1/2-style
report (metric by s, plus inference time) as JSON and markdown.

Metrics: `fvd16` / `fvd128` (I3D, `eval/fvd.py`, on 16- and 128-frame clips), `fid_img`
(InceptionV3 on every frame of the 16-frame clips) and `fid_vid` (3D ResNet-50 on them,
`eval/fid.py`), `physics` (the synthetic dataset's ball tracking, `eval/physics.py`) and
`novelty` (the distance to the nearest training clip against that of held-out clips,
`eval/novelty.py`; synthetic data). Real clips come from the config's data section: the
synthetic held-out seed, or your dataset's files.
"""

import json
import pathlib

import numpy as np
import tqdm

from ardiffusion_jax import generate, sampling
from ardiffusion_jax.data import datasets
from ardiffusion_jax.data.synthetic import BouncingShapes
from ardiffusion_jax.errors import ArgumentError, ConfigError
from ardiffusion_jax.eval import fid as fid_lib
from ardiffusion_jax.eval import fvd as fvd_lib
from ardiffusion_jax.eval import novelty, physics

FVD_FRAMES = {"fvd16": 16, "fvd128": 128}
CLIP_METRICS = ("fid_img", "fid_vid", "physics", "novelty")  # scored on CLIP_FRAMES-frame clips
CLIP_FRAMES = 16
METRICS = (*FVD_FRAMES, *CLIP_METRICS)
# Below this many clips a set's physics statistics are too noisy to tell settings apart.
MIN_PHYSICS_CLIPS = 64


def check_metrics(metrics, data_name: str):
  if not metrics:
    raise ArgumentError("metrics", f"names no metric; expected some of {', '.join(METRICS)}")
  for metric in metrics:
    if metric not in METRICS:
      raise ArgumentError("metrics", f"unknown metric {metric!r}; expected some of {METRICS}")
  for metric in ("physics", "novelty"):
    if metric in metrics and data_name != "synthetic":
      raise ArgumentError("metrics", f"{metric} scores the synthetic bouncing balls only")


def check_s_values(s_values, num_steps=None):
  """Timestep differences s in [0, S]: negative ones before anything is loaded, the top
  once the DiT's sampling steps S (`num_steps`) are known."""
  if not s_values:
    raise ArgumentError("s_values", "names no timestep difference")
  negative = [s for s in s_values if s < 0]
  if negative:
    raise ArgumentError("s_values", "timestep differences must be >= 0 (and <= S, the DiT's "
                                    f"sampling steps), got {', '.join(map(str, negative))}")
  too_big = [s for s in s_values if num_steps is not None and s > num_steps]
  if too_big:
    raise ArgumentError("s_values", f"timestep differences must be in [0, S={num_steps}] (S: the "
                                    f"DiT run's diffusion.sampling_steps), got {', '.join(map(str, too_big))}")


def real_clips(data, num_frames: int, num: int) -> np.ndarray:
  """`num` real uint8 clips of `num_frames` frames: the synthetic generator's held-out
  split, or the configured dataset's files."""
  data = data.copy_and_resolve_references()
  data.num_frames = num_frames
  if data.name == "synthetic":
    source = BouncingShapes.held_out(data, num)
  else:
    source = datasets.video_source(data)
  if len(source) < num:
    raise ArgumentError("num", f"{num} clips asked for, but the real set has {len(source)}")
  return np.stack([source[i]["video"] for i in range(num)])


def evaluate(config, ckpt, out, metrics, s_values, num: int, vae_ckpt=None, batch_size: int = 8,
             seed: int = 0, fid_weights=None, fid_vid_weights=None, cfg_scale: float = 1.0,
             references: bool = False) -> dict:
  """Scores the DiT run `ckpt` at each s (with guidance scale `cfg_scale`); writes
  `eval.json` and `eval.md` into `out`.

  With `references`, two more rows bound what samples can reach, scored against the same
  `num` real clips: `real` (another `num` real clips: the floor, the metric's own
  sampling noise) and `reconstructed` (those clips through the AR-VAE: the tokenizer's
  ceiling). They need 2 `num` real clips."""
  check_metrics(metrics, config.data.name)
  check_s_values(s_values)
  generator = generate.Generator.from_checkpoint(ckpt, vae_ckpt=vae_ckpt)
  check_s_values(s_values, generator.grid.num_steps)  # before any clip is made or sampled
  try:
    sampling.check_guidance(generator.model, cfg_scale)
  except ValueError as error:
    raise ArgumentError("cfg_scale", str(error)) from error
  if generator.vae is None:
    raise ArgumentError("vae_ckpt", "evaluation decodes the samples: name the AR-VAE run")
  resolution = generator.resolution
  if config.data.resolution != resolution:
    raise ConfigError("data.resolution", f"{config.data.resolution} differs from the AR-VAE's "
                                          f"{resolution}")
  lengths = sorted({FVD_FRAMES[m] for m in metrics if m in FVD_FRAMES}
                   | ({CLIP_FRAMES} if set(CLIP_METRICS) & set(metrics) else set()))
  features = fvd_lib.I3DFeatures(batch_size=batch_size) if any(m in FVD_FRAMES for m in metrics) else None
  # FID networks: a function of 16-frame clips [N, 16, H, W, 3] to features.
  fid_nets = {}
  if "fid_img" in metrics:
    frames_net = fid_lib.InceptionFeatures(fid_weights)
    fid_nets["fid_img"] = lambda clips: frames_net(clips.reshape((-1,) + clips.shape[2:]))
  if "fid_vid" in metrics:
    fid_nets["fid_vid"] = fid_lib.ResNet3DFeatures(fid_vid_weights, batch_size=batch_size)
  clips = {frames: real_clips(config.data, frames, 2 * num if references else num)
           for frames in lengths}
  real = {frames: videos[:num] for frames, videos in clips.items()}
  real_features = {frames: features(videos) for frames, videos in real.items()} if features else {}
  real_fid = {metric: net(real[CLIP_FRAMES]) for metric, net in fid_nets.items()}
  training = None
  if "novelty" in metrics:
    data = config.data.copy_and_resolve_references()
    data.num_frames = CLIP_FRAMES
    source = BouncingShapes.from_config(data)
    training = novelty.TrainingClips(np.stack([source[i]["video"] for i in range(len(source))]))

  def score(row, frames, videos):
    """Every asked-for metric of `videos` (`frames` long) against the real clips."""
    for metric, metric_frames in FVD_FRAMES.items():
      if metric in metrics and metric_frames == frames:
        row[metric] = fvd_lib.fvd(real_features[frames], features(videos))
    if frames == CLIP_FRAMES:
      if "physics" in metrics:
        row["physics"] = physics.physics_score(videos, real[CLIP_FRAMES])
      for metric, net in fid_nets.items():
        row[metric] = fvd_lib.fvd(real_fid[metric], net(videos))
      if training is not None:
        row["novelty"] = novelty.novelty_scores({"set": videos}, real[CLIP_FRAMES], training)["set"]
    return row

  results = {}
  for s in s_values:
    row = {}
    for frames in lengths:
      latents, timing = generator.sample_latents(num, frames, s, batch_size=batch_size,
                                                 seed=seed, cfg_scale=cfg_scale)
      videos = np.concatenate([generator.decode(latents[i:i + batch_size])
                               for i in tqdm.trange(0, num, batch_size, desc=f"decode s={s}")])
      row[f"seconds_per_video_{frames}f"] = timing["seconds_per_video"]
      score(row, frames, videos)
    results[s] = row
  if references:
    results["real"], results["reconstructed"] = {}, {}
    for frames in lengths:
      others = clips[frames][num:]
      score(results["real"], frames, others)
      latents = np.stack([generator.encode(video) for video in
                          tqdm.tqdm(others, desc=f"encode {frames}f")])
      score(results["reconstructed"], frames, generator.decode(latents, batch_size))
  report = {"ckpt": str(ckpt), "metrics": list(metrics), "num_clips": num, "seed": seed,
            "cfg_scale": cfg_scale, "references": references,
            "sampling_mode": generator.default_mode,
            "dataset": config.data.name, "resolution": resolution, "results": results}
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "eval.json").write_text(json.dumps(report, indent=2, default=float))
  (out / "eval.md").write_text(markdown(report))
  return report


def markdown(report: dict) -> str:
  """Metric by s, as the paper's Tables 1 and 2, plus inference time per video."""
  metrics = report["metrics"]
  rows = report["results"]
  times = sorted({k for row in rows.values() for k in row if k.startswith("seconds_per_video")})
  names = {"fvd16": "FVD16", "fvd128": "FVD128", "fid_img": "FID-img", "fid_vid": "FID-vid",
           "physics": "physics (speed / accel ratio)", "novelty": "novelty (NN ratio)"}
  header = ["s"] + [names[m] for m in metrics]
  header += [f"s/video ({k.rsplit('_', 1)[1]})" for k in times]
  lines = [f"# ardiff eval: {report['dataset']}, {report['num_clips']} clips per set", "",
           f"Sampler: {report['sampling_mode']} mode"
           + (" (the DiT is not strictly causal, so no KV cache)."
              if report["sampling_mode"] == "full" else " (KV cache)."), "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for s, row in rows.items():
    cells = [{"real": "real clips (floor)", "reconstructed": "AR-VAE reconstructions (ceiling)"}
             .get(s, str(s))]
    for metric in metrics:
      value = row[metric]
      cells.append(f"{value['speed_ratio']:.2f} / {value['acceleration_ratio']:.2f}"
                   if metric == "physics" else f"{value['ratio']:.2f}" if metric == "novelty"
                   else f"{value:.1f}")
    cells += [f"{row[k]:.2f}" if k in row else "" for k in times]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Fréchet distances in float64 (FVD: I3D Kinetics-400 logits; FID-img: "
            "InceptionV3 pool3 of every frame; FID-vid: 3D ResNet-50); only comparable at the "
            "same number of clips."]
  if "physics" in metrics and report["num_clips"] < MIN_PHYSICS_CLIPS:
    lines += ["", f"Physics from {report['num_clips']} clips per set: below {MIN_PHYSICS_CLIPS} "
              "the statistics are too noisy to tell settings apart."]
  if "novelty" in metrics:
    lines += ["", "Novelty: the samples' mean RMS distance to their nearest training clip over "
              "that of held-out real clips (under 1: nearer the training set than new videos)."]
  if report.get("references"):
    lines += ["", "Reference rows, against the same real clips: another set of real clips "
              "(the floor: what sampling noise alone gives) and those clips encoded and decoded "
              "by the AR-VAE (the ceiling the DiT's samples can reach through this tokenizer)."]
  return "\n".join(lines) + "\n"
