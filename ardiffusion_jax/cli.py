"""The `ardiff` command line: one entry point, one subcommand per stage of the pipeline."""

import argparse
import sys

from ardiffusion_jax.errors import (ArgumentError, CheckpointError, ConfigError, DataError,
                                   TrainingDiverged, WorkdirLocked)

DEFAULT_CONFIG = "configs/synthetic.py:default"
# The library's argument names (ArgumentError.argument) -> the flags that set them.
FLAGS = {"cfg_scale": "--cfg", "input": "--input", "label": "--label",
         "label_schedule": "--label-schedule",
         "metrics": "--metrics", "num": "--num", "overrides": "--set",
         "s_values": "--s", "sampling_steps": "--steps", "vae_ckpt": "--vae-ckpt"}


def _add_config(parser, default=DEFAULT_CONFIG):
  parser.add_argument("--config", default=default,
                      help="config file and variant, e.g. configs/synthetic.py:smoke")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="FIELD=VALUE", help="override a config field, e.g. data.num_frames=8")


def _add_checkpoints(parser):
  parser.add_argument("--ckpt", required=True, help="the DiT run folder (or its checkpoints)")
  parser.add_argument("--vae-ckpt", help="the AR-VAE run that decodes the latents (default: "
                                         "the one named by the DiT's latents_info.json)")


def _add_run_folders(parser):
  parser.add_argument("--workdir", required=True,
                      help="run folder for checkpoints (a local path or gs://...)")
  parser.add_argument("--logdir", help="local folder for metrics.jsonl and TensorBoard "
                                       "(default: the workdir)")


def _add_distributed(parser):
  group = parser.add_argument_group("multi-process (jax.distributed)")
  group.add_argument("--distributed", action="store_true",
                     help="call jax.distributed.initialize() with cluster auto-detection "
                          "(SLURM, TPU pods, ...)")
  group.add_argument("--coordinator", help="host:port of process 0, for manual launches")
  group.add_argument("--num-processes", type=int, help="with --coordinator")
  group.add_argument("--process-id", type=int, help="with --coordinator")
  group.add_argument("--local-devices", type=int,
                     help="fake CPU devices in this process (testing multi-host on one machine)")


def _init_jax(args):
  """Starts JAX as the arguments ask, before anything touches a device."""
  import jax
  if getattr(args, "local_devices", None):
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", args.local_devices)
  if getattr(args, "coordinator", None):
    if args.num_processes is None or args.process_id is None:
      raise ArgumentError("--coordinator", "needs --num-processes and --process-id")
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
  elif getattr(args, "distributed", False):
    jax.distributed.initialize()
  return jax


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="ardiff", description="AR-Diffusion in JAX: tokenizer, causal DiT, FoPP/AD schedulers.")
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  demo = commands.add_parser(
      "demo", help="run the main job on the synthetic bouncing-shapes dataset",
      description="Generate the synthetic dataset and write a preview GIF, pictures of the "
                  "FoPP and AD schedules and a report (JSON and markdown) into --workdir.")
  _add_config(demo)
  demo.add_argument("--workdir", default="runs/demo", help="output folder (default runs/demo)")

  ablate = commands.add_parser(
      "ablate", help="train and score the paper's ablations (Table 3) over seeds",
      description="Train the tokenizers and, for each row of the config's ablate section "
                  "(Table 3's rows, each dropping one more part of AR-Diffusion, and the "
                  "official variant), a DiT per seed; score each with `ardiff eval` at every "
                  "s; write ablations.json, ablations.md (Table 3 with mean ± std and Welch's "
                  "t-test against the full model, Table 2 by s) and ablations.png into "
                  "--workdir. Re-running resumes.")
  _add_config(ablate, default="configs/synthetic.py:ablate")
  ablate.add_argument("--workdir", default="runs/ablate", help="output folder (default runs/ablate)")

  train = commands.add_parser(
      "train", help="train the causal DiT on latent shards (resumes from --workdir)",
      description="Train the causal DiT with the config's timestep scheme (FoPP by default) "
                  "on ArrayRecord latent shards (train.latents_dir), sharded over the "
                  "config's mesh. Checkpoints go to WORKDIR/checkpoints and a run restarted "
                  "with the same WORKDIR resumes from the last one; SIGTERM saves and stops.")
  _add_config(train)
  _add_run_folders(train)
  _add_distributed(train)

  train_vae = commands.add_parser(
      "train-vae", help="train the AR-VAE tokenizer (resumes from --workdir)",
      description="Train the AR-VAE stage the config describes: :vae is frame "
                  "reconstruction (L1 + LPIPS when its weights are configured) with the "
                  "PatchGAN from vae_train.disc_start; :vae_causal finetunes the temporally "
                  "causal decoder on clips from vae_train.init_from. Same checkpointing, "
                  "resume and logging as `ardiff train`.")
  _add_config(train_vae, default="configs/synthetic.py:vae")
  _add_run_folders(train_vae)
  _add_distributed(train_vae)

  build_tfds = commands.add_parser(
      "build-tfds", help="write a folder dataset as a TFDS ArrayRecord dataset (no TensorFlow)",
      description="Decode one clip per video (data.num_frames at data.resolution, seeded "
                  "start) of the config's dataset, train and test splits, into a TFDS "
                  "dataset video_clips/<data.name> under --data-dir. Read it back with "
                  "--set data.name=\"'tfds'\" --set data.tfds_dir=<the printed folder>.")
  _add_config(build_tfds)
  build_tfds.add_argument("--data-dir", required=True, help="TFDS data dir to write into")

  extract = commands.add_parser(
      "extract", help="encode the dataset into ArrayRecord latent shards",
      description="Encode every clip of the config's dataset with a trained AR-VAE into "
                  "ArrayRecord latent shards (the DiT's training data). Deterministic, "
                  "resumable (finished shards are skipped) and split across processes.")
  _add_config(extract, default="configs/synthetic.py:vae")
  extract.add_argument("--vae-ckpt", required=True,
                       help="the AR-VAE run folder (or its checkpoints folder)")
  extract.add_argument("--out", required=True, help="folder for latents-*.array_record")
  extract.add_argument("--shard-size", type=int, default=256, help="clips per shard")
  extract.add_argument("--batch-size", type=int, default=8, help="clips per encoder call")
  _add_distributed(extract)

  convert = commands.add_parser(
      "convert", help="convert weights between PyTorch files and ours",
      description="Convert weights. `official-dit` / `official-vae` read the authors' "
                  "AR-Diffusion and AR-VAE (TiTok_KL, TiTok_KL_wT) checkpoints, `titok-init` "
                  "maps TiTok-L-32 to an AR-VAE initialisation, `portable` reads what "
                  "`ardiff export` wrote, `lpips` writes the perceptual loss's .npz. Inputs: "
                  ".safetensors, .npz, or .bin/.pt/.pth with torch installed.")
  kinds = convert.add_subparsers(dest="kind", required=True, metavar="KIND")
  nonfinite = dict(action="store_true", help="convert tensors holding NaN or inf anyway "
                                             "(refused by default)")
  lpips_parser = kinds.add_parser("lpips", help="VGG-16 + LPIPS heads -> .npz",
                                  description="Reads .pth (needs torch), .safetensors or .npz.")
  lpips_parser.add_argument("--vgg", required=True, help="torchvision vgg16-397923af.pth")
  lpips_parser.add_argument("--lin", required=True, help="LPIPS v0.1 vgg.pth (lin0..lin4)")
  lpips_parser.add_argument("--out", required=True, help="output .npz")
  lpips_parser.add_argument("--allow-nonfinite", **nonfinite)
  official_help = {
      "official-dit": "the authors' AR-Diffusion model.safetensors -> an `official` DiT run",
      "official-vae": "the authors' AR-VAE (optionally temporal-causal) -> an `official` AR-VAE run",
      "titok-init": "TiTok-L-32 weights -> an AR-VAE init for vae_train.init_from",
  }
  for kind, text in official_help.items():
    sub = kinds.add_parser(kind, help=text, description=text + ". Sizes come from the tensor "
                           "shapes; heads (and GroupNorm groups) from --set when not the "
                           "official ones. Every missing, unexpected or mis-shaped key is "
                           "reported together.")
    sub.add_argument("--input", required=True,
                     help="state dict file, or a file on the Hugging Face Hub: "
                          "hf://OWNER/REPO[@REVISION]/PATH (downloaded into the hub cache, "
                          "HF_HOME; a cached copy is not downloaded again)")
    sub.add_argument("--output", required=True, help="new run folder (checkpoints/0 + config)")
    _add_config(sub, default="configs/synthetic.py:paper")
    sub.add_argument("--num-heads", type=int, help="attention heads (default: width / "
                     "the official head size, 72 for the DiT, 64 for the AR-VAE)")
    if kind != "official-dit":
      sub.add_argument("--norm-groups", type=int, help="pixel decoder GroupNorm groups (default 32)")
    sub.add_argument("--allow-missing", action="store_true",
                     help="load a partial state dict on purpose (missing leaves keep a fresh init)")
    sub.add_argument("--allow-nonfinite", **nonfinite)
  fid_parser = kinds.add_parser("fid-inception", help="pytorch-fid InceptionV3 -> .npz (FID-img)",
                                description="Reads pt_inception-2015-12-05-6726825d.pth (needs "
                                            "torch), .safetensors or .npz.")
  fid_parser.add_argument("--input", required=True, help="pytorch-fid's InceptionV3 weights")
  fid_parser.add_argument("--out", required=True, help="output .npz")
  fid_parser.add_argument("--allow-nonfinite", **nonfinite)
  r3d_parser = kinds.add_parser("fid-resnet3d", help="Hara's 3D ResNet-50 -> .npz (FID-vid)",
                                description="Reads resnet-50-kinetics.pth (needs torch), "
                                            ".safetensors or .npz.")
  r3d_parser.add_argument("--input", required=True, help="resnet-50-kinetics.pth")
  r3d_parser.add_argument("--out", required=True, help="output .npz")
  r3d_parser.add_argument("--allow-nonfinite", **nonfinite)
  portable_parser = kinds.add_parser("portable", help="a portable export -> our run layout")
  portable_parser.add_argument("--input", required=True, help="folder written by ardiff export")
  portable_parser.add_argument("--output", required=True, help="new run folder")

  export = commands.add_parser(
      "export", help="write a checkpoint as plain '/'-keyed weights + JSON config",
      description="Write the newest checkpoint of a DiT (EMA weights by default) or AR-VAE "
                  "run as a folder other JAX pipelines load without this package: "
                  "config.json plus model.safetensors or an orbax params/ tree.")
  export.add_argument("--ckpt", required=True, help="run folder or its checkpoints folder")
  export.add_argument("--format", choices=("safetensors", "orbax"), default="safetensors")
  export.add_argument("--out", required=True, help="output folder (new or empty)")
  export.add_argument("--no-ema", action="store_true", help="DiT: the raw weights, not the EMA")

  plan = commands.add_parser(
      "plan", help="AOT-compile the train step on N devices and print per-device memory",
      description="Compile the real DiT train step from abstract inputs (nothing is "
                  "allocated) on N fake CPU devices, with the config's mesh, and print the "
                  "per-device memory: arguments, outputs, temporaries, peak.")
  _add_config(plan, default="configs/synthetic.py:paper")
  plan.add_argument("--devices", type=int, default=8, help="number of fake CPU devices")
  plan.add_argument("--json", help="also write the figures to this JSON file")

  bench = commands.add_parser(
      "bench", help="run a benchmark (same as python -m ardiffusion_jax.bench)",
      description="Run a named benchmark; it prints a table and writes JSON.")
  bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="benchmark name and options")

  sample = commands.add_parser(
      "sample", help="generate videos with the AD scheduler",
      description="Sample videos from a trained DiT with the AD scheduler: any length, "
                  "timestep difference s from 0 (synchronous) to S (autoregressive), video "
                  "continuation and classifier-free guidance. Writes one mp4 per sample, a "
                  "GIF grid, latents.npz and sample.json into --out.")
  _add_checkpoints(sample)
  sample.add_argument("--frames", type=int, default=16, help="frames per video (default 16)")
  sample.add_argument("--s", type=int, default=0, help="timestep difference, 0..S (default 0)")
  sample.add_argument("--num", type=int, default=4, help="number of videos (default 4)")
  sample.add_argument("--label", type=int, help="class label (class-conditional models)")
  sample.add_argument("--cfg", type=float, default=1.0,
                      help="guidance scale (default 1: off); official unconditional models "
                           "guide against zero context tokens, as the authors do (w = 2)")
  sample.add_argument("--context", help="continue this video (mp4/avi, encoded by the VAE) "
                                        "or latents.npz")
  sample.add_argument("--context-frames", type=int,
                      help="frames of --context to keep (default: all, up to --frames - 1)")
  sample.add_argument("--mode", choices=("cached", "full"),
                      help="cached: KV cache (default for strictly causal models); full: the "
                           "authors' way (default for the official variant)")
  sample.add_argument("--steps", type=int, help="DDIM steps S, 1..num_timesteps (dividing it "
                      "on the official grid; default: the checkpoint config's)")
  sample.add_argument("--eta", type=float, help="DDIM eta (default: the config's)")
  sample.add_argument("--seed", type=int, default=0)
  sample.add_argument("--batch-size", type=int, default=8, help="videos per sampler call")
  sample.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
  sample.add_argument("--latents-only", action="store_true", help="skip decoding")
  sample.add_argument("--fps", type=int, default=8)
  sample.add_argument("--out", required=True, help="output folder")

  stream = commands.add_parser(
      "stream", help="generate one video frame by frame, as each frame is final",
      description="Stream one video from a trained DiT with the cached AD sampler: each frame "
                  "is decoded and appended to --out (a fragmented mp4 a player can show while "
                  "it grows) as soon as it is final. Without --frames or --seconds it runs "
                  "until Ctrl-C, in constant memory; Ctrl-C leaves a valid mp4 of the frames "
                  "so far. A progress line shows frames/s and the time to the first frame.")
  _add_checkpoints(stream)
  stream.add_argument("--s", type=int, required=True,
                      help="timestep difference, 1..S (0 yields the whole video at once)")
  length = stream.add_mutually_exclusive_group()
  length.add_argument("--frames", type=int, help="stop after this many frames (context included)")
  length.add_argument("--seconds", type=float, help="stop after this many seconds of video")
  labels = stream.add_mutually_exclusive_group()
  labels.add_argument("--label", type=int, help="class label (class-conditional models)")
  labels.add_argument("--label-schedule", help="classes by frame, e.g. '0:1,64:3': class 1 "
                                               "from frame 0, class 3 from frame 64")
  stream.add_argument("--cfg", type=float, default=1.0, help="guidance scale (default 1: off)")
  stream.add_argument("--context", help="continue this video (mp4/avi, encoded by the VAE) "
                                        "or latents.npz")
  stream.add_argument("--context-frames", type=int,
                      help="frames of --context to keep (default: as many as the model's window "
                           "allows)")
  stream.add_argument("--steps", type=int, help="DDIM steps S (default: the checkpoint config's)")
  stream.add_argument("--eta", type=float, help="DDIM eta (default: the config's)")
  stream.add_argument("--seed", type=int, default=0)
  stream.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
  stream.add_argument("--fps", type=int, default=8)
  stream.add_argument("--out", required=True, help="the mp4 to write")

  evaluate = commands.add_parser(
      "eval", help="score samples at several s: FVD16, FVD128, physics",
      description="Sample --num videos at each s, decode them and score them against as many "
                  "real clips from the config's data section: FVD16 / FVD128 (I3D, "
                  "StyleGAN-V protocol) and, on the synthetic dataset, the physics score. "
                  "FID-img scores single frames with the InceptionV3 from --fid-weights, "
                  "FID-vid 16-frame clips with the 3D ResNet-50 from --fid-vid-weights. "
                  "Writes eval.json and eval.md (metric by s, plus seconds per video).")
  _add_config(evaluate)
  evaluate.add_argument("--ckpt", required=True, help="the DiT run folder")
  evaluate.add_argument("--vae-ckpt", help="the AR-VAE run (default: from latents_info.json)")
  evaluate.add_argument("--metrics", default="fvd16,physics",
                        help="comma-separated: fvd16, fvd128, fid_img, fid_vid, physics, "
                             "novelty (default fvd16,physics)")
  evaluate.add_argument("--fid-weights", default="fid_inception.npz",
                        help="FID-img's InceptionV3 (.npz from ardiff convert fid-inception)")
  evaluate.add_argument("--fid-vid-weights", default="fid_resnet3d.npz",
                        help="FID-vid's 3D ResNet-50 (.npz from ardiff convert fid-resnet3d)")
  evaluate.add_argument("--s", default="0,5,10", help="comma-separated timestep differences, "
                        "each 0..S (the DiT's sampling steps)")
  evaluate.add_argument("--num", type=int, default=2048, help="clips per set (default 2048)")
  evaluate.add_argument("--cfg", type=float, default=1.0,
                        help="guidance scale (default 1: off; the authors use 2 for their "
                             "unconditional models)")
  evaluate.add_argument("--references", action="store_true",
                        help="also score another set of real clips (the floor) and the AR-VAE's "
                             "reconstructions of them (the tokenizer's ceiling); needs 2 --num "
                             "real clips")
  evaluate.add_argument("--batch-size", type=int, default=8)
  evaluate.add_argument("--seed", type=int, default=0)
  evaluate.add_argument("--out", required=True, help="output folder")
  return parser


def _eval(args) -> int:
  from ardiffusion_jax import config as config_lib
  from ardiffusion_jax.eval import evaluate
  config = config_lib.load_config(args.config, args.overrides)
  try:
    s_values = [int(x) for x in args.s.split(",")]
  except ValueError as error:
    raise ArgumentError("--s", f"expected comma-separated integers, got {args.s!r}") from error
  if args.num < 2:
    raise ArgumentError("--num", f"the Fréchet distance needs at least 2 clips, got {args.num}")
  metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
  report = evaluate.evaluate(config, args.ckpt, args.out, metrics, s_values, args.num,
                             vae_ckpt=args.vae_ckpt, batch_size=args.batch_size, seed=args.seed,
                             fid_weights=args.fid_weights, fid_vid_weights=args.fid_vid_weights,
                             cfg_scale=args.cfg, references=args.references)
  print(evaluate.markdown(report))
  return 0


def _convert(args) -> int:
  if args.kind == "lpips":
    from ardiffusion_jax.convert.lpips import convert_lpips
    convert_lpips(args.vgg, args.lin, args.out, allow_nonfinite=args.allow_nonfinite)
    print(f"ardiff convert lpips: wrote {args.out}")
    return 0
  if args.kind in ("fid-inception", "fid-resnet3d"):
    from ardiffusion_jax.convert.metric_nets import convert_metric_net
    convert_metric_net(args.kind, args.input, args.out, allow_nonfinite=args.allow_nonfinite)
    print(f"ardiff convert {args.kind}: wrote {args.out}")
    return 0
  if args.kind == "portable":
    from ardiffusion_jax.convert import portable
    bundle = portable.convert_portable(args.input, args.output)
    print(f"ardiff convert portable: {len(bundle.flat)} tensors -> {args.output}/checkpoints")
    return 0
  from ardiffusion_jax import config as config_lib
  from ardiffusion_jax.convert import hub, official
  convert = {"official-dit": official.convert_official_dit,
             "official-vae": official.convert_official_vae,
             "titok-init": official.convert_titok_init}[args.kind]
  config = config_lib.load_config(args.config, args.overrides)
  section = config.dit if args.kind == "official-dit" else config.vae
  if args.num_heads:
    section.num_heads = args.num_heads
  if getattr(args, "norm_groups", None):
    section.norm_groups = args.norm_groups
  input_path = hub.resolve_input(args.input)
  config, missing = convert(input_path, args.output, config, allow_missing=args.allow_missing,
                            allow_nonfinite=args.allow_nonfinite)
  if hub.is_hub_uri(args.input):
    hub.record_source(args.output, args.input, input_path)
  if missing:
    print(f"ardiff convert {args.kind}: {len(missing)} keys missing, left at a fresh init: "
          + ", ".join(missing), file=sys.stderr)
  print(f"ardiff convert {args.kind}: wrote {args.output}/checkpoints/0")
  return 0


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.command == "demo":
      from ardiffusion_jax import config as config_lib, demo
      config = config_lib.load_config(args.config, args.overrides)
      report = demo.run(config, args.workdir)
      print(f"demo finished in {report['seconds']} s; see {args.workdir}/report.md")
      return 0
    if args.command == "ablate":
      from ardiffusion_jax import ablate, config as config_lib
      config = config_lib.load_config(args.config, args.overrides)
      report = ablate.run(config, args.workdir)
      print(f"ardiff ablate: {len(report['rows'])} rows scored; see {args.workdir}/ablations.md")
      return 0
    if args.command in ("train", "train-vae"):
      jax = _init_jax(args)
      from ardiffusion_jax import config as config_lib
      if args.command == "train":
        from ardiffusion_jax.train.dit import train
      else:
        from ardiffusion_jax.train.vae import train
      config = config_lib.load_config(args.config, args.overrides, num_devices=jax.device_count())
      result = train(config, args.workdir, logdir=args.logdir)
      state = "stopped by SIGTERM at" if result.stopped_early else "reached"
      print(f"ardiff {args.command}: {state} step {result.step}; "
            f"checkpoints in {args.workdir}/checkpoints; {result.skipped_files} unreadable "
            f"data files skipped; {result.nonfinite_steps} non-finite steps dropped")
      return 0
    if args.command == "extract":
      jax = _init_jax(args)
      from ardiffusion_jax import config as config_lib
      from ardiffusion_jax.extract import extract as run_extract
      config = config_lib.load_config(args.config, args.overrides)
      if args.shard_size < 1 or args.batch_size < 1:
        raise ArgumentError("--shard-size", "shard and batch sizes must be >= 1")
      result = run_extract(config, args.vae_ckpt, args.out, args.shard_size, args.batch_size)
      print(f"ardiff extract: {result['clips_written']} clips written, "
            f"{result['skipped']} of {result['shards']} shards already done, "
            f"{result['skipped_files']} unreadable data files skipped; see {args.out}")
      return 0
    if args.command == "convert":
      return _convert(args)
    if args.command == "export":
      from ardiffusion_jax.convert import portable
      bundle = portable.export(args.ckpt, args.format, args.out, use_ema=not args.no_ema)
      print(f"ardiff export: {len(bundle.flat)} {bundle.weights} {bundle.kind} tensors -> {args.out}")
      return 0
    if args.command == "plan":
      return _plan(args)
    if args.command == "sample":
      return _sample(args)
    if args.command == "eval":
      return _eval(args)
    if args.command == "stream":
      return _stream(args)
    if args.command == "build-tfds":
      from ardiffusion_jax import config as config_lib
      from ardiffusion_jax.data import tfds_video
      config = config_lib.load_config(args.config, args.overrides)
      print(f"ardiff build-tfds: wrote {tfds_video.build_tfds(config.data, args.data_dir)}")
      return 0
    from ardiffusion_jax import bench  # the one command left: argparse allows no other
    return bench.main(args.bench_args)
  except ArgumentError as error:  # a library argument: say which flag sets it
    print(f"ardiff {args.command}: error: {FLAGS.get(error.argument, error.argument)}: "
          f"{error.reason}", file=sys.stderr)
    return 1
  except (ConfigError, DataError, CheckpointError, TrainingDiverged, WorkdirLocked) as error:
    print(f"ardiff {args.command}: error: {error}", file=sys.stderr)
    return 1


def _stream(args) -> int:
  import time
  from ardiffusion_jax import generate
  from ardiffusion_jax.data import video as video_lib
  if args.frames is not None and args.frames < 1:
    raise ArgumentError("--frames", f"must be >= 1, got {args.frames}")
  if args.seconds is not None and not args.seconds > 0:
    raise ArgumentError("--seconds", f"must be > 0, got {args.seconds}")
  if args.fps < 1:
    raise ArgumentError("--fps", f"must be >= 1, got {args.fps}")
  frames = args.frames if args.seconds is None else max(1, round(args.seconds * args.fps))
  label = args.label
  if args.label_schedule is not None:
    label = generate.parse_label_schedule(args.label_schedule)
  generator = generate.Generator.from_checkpoint(
      args.ckpt, vae_ckpt=args.vae_ckpt, use_ema=not args.no_ema, sampling_steps=args.steps)
  if generator.vae is None:
    raise CheckpointError("no AR-VAE is known for this DiT, so the frames cannot be decoded: "
                          "pass --vae-ckpt RUN")
  context = None
  if args.context:
    if frames is not None and frames < 2:
      raise ArgumentError("--frames", "must leave at least one frame after the context")
    keep = args.context_frames or generator.model.num_frames - 1
    if frames is not None:
      keep = min(keep, frames - 1)
    context = generator.context_from_file(args.context, keep)
    if args.context_frames and len(context) < args.context_frames:
      raise ArgumentError("--context-frames", f"{args.context} has only {len(context)} frames")
  frames_of = "" if frames is None else f"/{frames}"
  started = time.perf_counter()
  first = None
  with video_lib.VideoWriter(args.out, args.fps, progressive=True) as writer:
    try:
      for frame in generator.stream(args.s, label=label, cfg=args.cfg, context=context,
                                    max_frames=frames, seed=args.seed, eta=args.eta):
        writer.write(frame.pixels)
        now = time.perf_counter()
        if first is None:
          first = now - started
        rate = (writer.frames - 1) / (now - started - first) if writer.frames > 1 else 0.0
        print(f"\rardiff stream: frame {writer.frames}{frames_of}  {rate:.1f} frames/s  "
              f"first frame after {first:.1f} s", end="", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
      print(f"\nardiff stream: stopped; {args.out} holds the {writer.frames} frames so far",
            file=sys.stderr)
      return 130
  print(f"\nardiff stream: wrote {writer.frames} frames to {args.out}", file=sys.stderr)
  return 0


def _sample(args) -> int:
  from ardiffusion_jax import generate
  for flag, value, low in (("--frames", args.frames, 1), ("--num", args.num, 1),
                           ("--batch-size", args.batch_size, 1), ("--s", args.s, 0)):
    if value < low:
      raise ArgumentError(flag, f"must be >= {low}, got {value}")
  generator = generate.Generator.from_checkpoint(
      args.ckpt, vae_ckpt=args.vae_ckpt, use_ema=not args.no_ema, sampling_steps=args.steps)
  if generator.vae is None and not args.latents_only:
    raise CheckpointError("no AR-VAE is known for this DiT, so the samples cannot be decoded: "
                          "pass --vae-ckpt RUN, or --latents-only")
  if args.s > generator.grid.num_steps:
    raise ArgumentError("--s", f"must be in [0, S={generator.grid.num_steps}], got {args.s}")
  mode = args.mode or generator.default_mode
  context = None
  if args.context_frames is not None and not 1 <= args.context_frames < args.frames:
    raise ArgumentError("--context-frames", f"must be in [1, --frames - 1 = {args.frames - 1}], "
                                          f"got {args.context_frames}")
  if args.context:
    keep = min(args.context_frames or args.frames - 1, args.frames - 1)
    context = generator.context_from_file(args.context, keep)
    if args.context_frames and len(context) < args.context_frames:
      raise ArgumentError("--context-frames", f"{args.context} has only {len(context)} frames")
  try:
    latents, timing = generator.sample_latents(
        args.num, args.frames, args.s, batch_size=args.batch_size, seed=args.seed,
        label=args.label, cfg_scale=args.cfg, context=context, mode=mode, eta=args.eta)
  except ValueError as error:  # a setting the sampler cannot run, with the constraint named
    raise ArgumentError("sample", str(error)) from error
  videos = None if args.latents_only else generator.decode(latents)
  settings = dict(ckpt=str(args.ckpt), frames=args.frames, s=args.s, num=args.num,
                  steps=generator.grid.num_steps, mode=mode, cfg=args.cfg,
                  label=args.label, seed=args.seed,
                  context_frames=0 if context is None else len(context), **timing)
  summary = generate.write_outputs(args.out, videos, latents, settings, fps=args.fps)
  print(f"ardiff sample: {args.num} videos of {args.frames} frames at s={args.s} in "
        f"{timing['sample_seconds']:.1f} s (+{timing['compile_seconds']:.1f} s compile); "
        f"see {args.out}/{summary['grid'] or 'latents.npz'}")
  return 0


def _plan(args) -> int:
  import os
  if args.devices < 1:
    raise ArgumentError("--devices", f"must be >= 1, got {args.devices}")
  # Fake CPU devices must be requested before JAX starts its backend.
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={args.devices}")
  import json

  import jax

  from ardiffusion_jax import config as config_lib
  from ardiffusion_jax.train import plan
  if jax.device_count() < args.devices:
    raise ArgumentError("--devices", f"JAX already started with {jax.device_count()} devices")
  config = config_lib.load_config(args.config, args.overrides, num_devices=args.devices)
  result = plan.plan_train_step(config, jax.devices()[:args.devices])
  print(plan.format_plan(result))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
