"""Benchmarks: `python -m ardiffusion_jax.bench <name> [options]`.

Each benchmark prints a table and writes JSON (default `bench_results/<name>.json`).
Timings are wall-clock on whatever machine runs them; tests never assert on them.
"""

import argparse
import itertools
import json
import pathlib
import platform
import sys
import time

import jax
import numpy as np


def _numpy_fopp_tables(num_frames: int, num_timesteps: int):
  """The authors' float64 count tables (their `Incremental_Timesteps`): mat_s[t, f] and
  mat_e[t, f]."""
  mat_s = np.zeros((num_timesteps, num_frames))
  mat_s[:, -1] = 1
  mat_s[-1, :] = 1
  for f in range(num_frames - 2, -1, -1):
    for t in range(num_timesteps - 2, -1, -1):
      mat_s[t, f] = mat_s[t + 1, f] + mat_s[t, f + 1]
  mat_e = np.zeros((num_timesteps, num_frames))
  mat_e[:, 0] = 1
  mat_e[0, :] = 1
  for f in range(1, num_frames):
    for t in range(1, num_timesteps):
      mat_e[t, f] = mat_e[t - 1, f] + mat_e[t, f - 1]
  return mat_s, mat_e


def _numpy_fopp_sample(rng, mat_s, mat_e):
  """FoPP for one video, one frame at a time, as the authors run it in the data loop."""
  num_timesteps, num_frames = mat_s.shape
  t = np.zeros(num_frames, np.int64)
  anchor = rng.integers(num_frames)
  t[anchor] = rng.integers(num_timesteps)
  for f in range(anchor - 1, -1, -1):
    weights = mat_e[:t[f + 1] + 1, f]
    t[f] = rng.choice(len(weights), p=weights / weights.sum())
  for f in range(anchor + 1, num_frames):
    weights = mat_s[t[f - 1]:, f]
    t[f] = t[f - 1] + rng.choice(len(weights), p=weights / weights.sum())
  return t


def _time_calls(fn, min_seconds: float, min_calls: int = 3):
  """Calls fn until both limits pass; returns (calls, seconds)."""
  calls, start = 0, time.perf_counter()
  while calls < min_calls or time.perf_counter() - start < min_seconds:
    fn(calls)
    calls += 1
  return calls, time.perf_counter() - start


def bench_timesteps(argv):
  """FoPP samples per second: jitted `sample_timesteps` against a per-sample numpy loop."""
  from ardiffusion_jax import timesteps

  parser = argparse.ArgumentParser(prog="bench timesteps")
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--timesteps", type=int, default=1000)
  parser.add_argument("--seconds", type=float, default=3.0, help="minimum time per method")
  parser.add_argument("--out", default="bench_results/timesteps.json")
  args = parser.parse_args(argv)
  batch, frames, steps = args.batch, args.frames, args.timesteps

  sample = jax.jit(lambda key: timesteps.sample_timesteps(key, "fopp", batch, frames, steps))
  base_key = jax.random.key(0)
  compile_start = time.perf_counter()
  sample(base_key).block_until_ready()
  compile_seconds = time.perf_counter() - compile_start
  jax_calls, jax_seconds = _time_calls(
      lambda i: sample(jax.random.fold_in(base_key, i)).block_until_ready(), args.seconds)

  mat_s, mat_e = _numpy_fopp_tables(frames, steps)
  rng = np.random.default_rng(0)
  numpy_calls, numpy_seconds = _time_calls(
      lambda i: _numpy_fopp_sample(rng, mat_s, mat_e), args.seconds)

  jax_rate = jax_calls * batch / jax_seconds
  numpy_rate = numpy_calls / numpy_seconds
  result = {
      "benchmark": "timesteps", "scheme": "fopp", "batch": batch, "frames": frames,
      "timesteps": steps, "jax_samples_per_s": jax_rate, "numpy_samples_per_s": numpy_rate,
      "speedup": jax_rate / numpy_rate, "jax_ms_per_batch": 1e3 * jax_seconds / jax_calls,
      "jax_compile_s": compile_seconds, "backend": jax.default_backend(),
      "machine": platform.processor() or platform.machine(), "jax": jax.__version__,
  }
  _print_table(["method", "samples/s", "note"], [
      ["jax.jit sample_timesteps", f"{jax_rate:,.0f}",
       f"{result['jax_ms_per_batch']:.3f} ms per batch of {batch}"],
      ["numpy loop per sample", f"{numpy_rate:,.0f}", "authors' algorithm, np.random.choice"],
      ["speedup", f"{result['speedup']:,.0f}x", f"F={frames}, T={steps}"],
  ])
  return _write(args.out, result)


def _time_train_step(config, batch: int, steps: int) -> dict:
  """Compiles `config`'s DiT training step on one device for `batch` normalised random
  latents, runs one warm-up and `steps` timed steps: s/step, tokens/s, FLOPs from
  `cost_analysis`, compile time, the last loss, parameters and XLA's memory plan."""
  from ardiffusion_jax.models import dit
  from ardiffusion_jax.train import dit as train_dit
  from ardiffusion_jax.train import sharding
  from ardiffusion_jax.train import state as state_lib
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  model = dit.dit_from_config(config.dit)
  tx = state_lib.make_optimizer(config.train)
  state, shardings = state_lib.create_train_state(model, tx, mesh, jax.random.key(0),
                                                  model.example_inputs())
  latents = np.random.default_rng(0).normal(size=model.example_inputs(batch)[0].shape)
  data = sharding.global_batch(
      {"latents": (latents / np.linalg.norm(latents, axis=-1, keepdims=True)).astype(np.float32)},
      mesh)
  with sharding.mesh_context(mesh):
    step = train_dit.jit_train_step(model, tx, config, shardings, mesh)
    started = time.perf_counter()
    compiled = step.lower(state, data).compile()
    compile_s = time.perf_counter() - started
    state, metrics = compiled(state, data)  # warm-up
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - started) / steps
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  memory = compiled.memory_analysis()
  return {"s_per_step": seconds,
          "tokens_per_s": batch * model.num_frames * model.tokens_per_frame / seconds,
          "flops_per_step": float(cost.get("flops", float("nan"))), "compile_s": compile_s,
          "loss": float(metrics["loss"]),
          "params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params)),
          "xla_temp_bytes": int(memory.temp_size_in_bytes),
          "xla_argument_bytes": int(memory.argument_size_in_bytes)}


def _add_token_patch(parser):
  parser.add_argument("--token-patch", type=int, default=1,
                      help="dit.token_patch: latent tokens per transformer token (default 1, "
                           "the authors' DiT; the demo's is 32)")


def bench_train_step(argv):
  """One optimizer step of a small DiT (384 wide, 6 deep, 6 heads) on 16x32x4 latents."""
  from ardiffusion_jax import config as config_lib
  from ardiffusion_jax.models import dit

  parser = argparse.ArgumentParser(prog="bench train_step")
  parser.add_argument("--variant", default="official", choices=tuple(dit.VARIANTS))
  parser.add_argument("--size", default="small", choices=tuple(dit.PRESETS))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--steps", type=int, default=10, help="timed steps after one warm-up")
  parser.add_argument("--attention-chunks", type=int, default=4,
                      help="dit.attention_chunks: skip the masked attention blocks")
  _add_token_patch(parser)
  parser.add_argument("--out", default="bench_results/train_step.json")
  args = parser.parse_args(argv)

  config = config_lib.load_config("configs/synthetic.py:default", [
      f"dit.variant={args.variant!r}", f"dit.size={args.size!r}", f"dit.dtype={args.dtype!r}",
      f"dit.num_frames={args.frames}", f"train.batch_size={args.batch}", "dit.num_classes=0",
      f"dit.attention_chunks={args.attention_chunks}", f"dit.token_patch={args.token_patch}",
      "dit.scan_layers=False"])  # unrolled: cost_analysis counts a scanned body once
  figures = _time_train_step(config, args.batch, args.steps)
  seconds, params, compile_seconds = (figures["s_per_step"], figures["params"],
                                      figures["compile_s"])
  result = {
      "benchmark": "train_step", "variant": args.variant, "size": args.size,
      "batch": args.batch, "frames": args.frames, "dtype": args.dtype, "params": params,
      "attention_chunks": args.attention_chunks, "token_patch": args.token_patch,
      "s_per_step": seconds, "tokens_per_s": figures["tokens_per_s"],
      "flops_per_step": figures["flops_per_step"], "compile_s": compile_seconds,
      "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
      "jax": jax.__version__,
  }
  _print_table(["metric", "value"], [
      ["model", f"{args.variant} DiT {args.size}, {params / 1e6:.1f}M params, {args.dtype}"],
      ["batch", f"{args.batch} x {args.frames} frames x 32 tokens x 4"],
      ["s/step", f"{seconds:.3f}"], ["tokens/s", f"{result['tokens_per_s']:,.0f}"],
      ["GFLOPs/step (cost_analysis)", f"{result['flops_per_step'] / 1e9:,.1f}"],
      ["compile s", f"{compile_seconds:.1f}"],
  ])
  return _write(args.out, result)


def bench_vae(argv):
  """Trains the tiny demo AR-VAE's frame stage for a time budget, then scores held-out
  clips (PSNR)."""
  import os
  import signal
  import tempfile

  from ardiffusion_jax import config as config_lib, runs
  from ardiffusion_jax.eval import reconstruction
  from ardiffusion_jax.train import vae as train_vae
  from ardiffusion_jax.train.logging import read_metrics

  parser = argparse.ArgumentParser(prog="bench vae")
  parser.add_argument("--config", default="configs/synthetic.py:default")  # the demo's
  parser.add_argument("--minutes", type=float, default=10.0, help="training budget")
  parser.add_argument("--held-out", type=int, default=32, help="held-out clips to score")
  parser.add_argument("--set", dest="overrides", action="append", default=[])
  parser.add_argument("--workdir", help="keep the run here (default: a temporary folder)")
  parser.add_argument("--out", default="bench_results/vae.json")
  args = parser.parse_args(argv)
  # The frame stage only: no discriminator, whatever the step count reaches.
  config = config_lib.load_config(args.config, ["vae_train.steps=1000000",
                                                "vae_train.checkpoint_every=1000000",
                                                "vae_train.disc_start=-1", *args.overrides])
  workdir = args.workdir or tempfile.mkdtemp(prefix="bench_vae_")
  start = time.perf_counter()

  def stop_at_budget(step, state, metrics, checkpointer):
    if time.perf_counter() - start > 60 * args.minutes:
      os.kill(os.getpid(), signal.SIGTERM)  # the loop saves and stops

  result = train_vae.train(config, workdir, hooks=[stop_at_budget])
  train_seconds = time.perf_counter() - start
  score = lambda params: reconstruction.held_out_psnr(config, params, args.held_out)
  psnr = score(runs.variables_of(result.state, "vae")[0]["params"])  # the EMA, if kept
  raw_psnr = score(result.state.params) if config.vae_train.ema_decay > 0 else psnr
  records = read_metrics(workdir)
  output = {
      "benchmark": "vae", "config": args.config, "overrides": args.overrides,
      "steps": result.step,
      "train_minutes": train_seconds / 60, "s_per_step": train_seconds / max(result.step, 1),
      "held_out_clips": args.held_out, "held_out_psnr_db": psnr, "held_out_psnr_raw_db": raw_psnr,
      "ema_decay": config.vae_train.ema_decay,
      "train_psnr_db_last": records[-1]["psnr"] if records else None,
      "batch": config.vae_train.batch_size, "resolution": config.data.resolution,
      "backend": jax.default_backend(), "jax": jax.__version__,
  }
  _print_table(["metric", "value"], [
      ["training", f"{result.step} steps in {train_seconds / 60:.1f} min, batch "
                   f"{config.vae_train.batch_size} frames at {config.data.resolution}px"],
      ["held-out PSNR", f"{psnr:.2f} dB over {args.held_out} clips x {config.data.num_frames} frames"],
      ["  raw weights (no EMA)", f"{raw_psnr:.2f} dB"],
      ["target", ">= 25 dB"],
  ])
  return _write(args.out, output)


def _matmul_floor_seconds(params, rows: int) -> float:
  """Seconds one frame's pass through the DiT spends at least in matmuls on this machine.

  Every dense kernel of `params` (its fan-out is its bias's size) is read once, as in a
  cached-mode row at s = S: the per-token ones in one dependent chain at `rows` rows, the
  per-frame conditioning ones (timestep MLP, adaLN) at one row each, free to overlap it.
  """
  per_token, per_frame = [], []

  def visit(tree, path):
    if "kernel" in tree and "bias" in tree:
      kernel = tree["kernel"].reshape(-1, tree["bias"].size)
      (per_frame if "adaLN" in path or "t_embedder" in path else per_token).append(kernel)
    for name, child in tree.items():
      if isinstance(child, dict):
        visit(child, f"{path}/{name}")

  visit(params, "")

  @jax.jit
  def run(per_token, per_frame, x):
    for kernel in per_token:  # each product waits for the one before
      x = jax.numpy.tile(x, (1, -(-kernel.shape[0] // x.shape[1])))[:, :kernel.shape[0]] @ kernel
    return x.sum() + sum((jax.numpy.ones((1, k.shape[0])) @ k).sum() for k in per_frame)

  args = (per_token, per_frame, jax.numpy.ones((rows, 1)))
  jax.block_until_ready(run(*args))
  calls, seconds = _time_calls(lambda _: jax.block_until_ready(run(*args)), 1.0, 20)
  return seconds / calls


def bench_sampling(argv):
  """Wall time per video of the AD sampler, full and cached modes side by side."""
  import flax.linen as nn
  import jax.numpy as jnp

  from ardiffusion_jax import config as config_lib
  from ardiffusion_jax import diffusion, sampling
  from ardiffusion_jax.models import dit

  parser = argparse.ArgumentParser(prog="bench sampling")
  parser.add_argument("--size", default="small", choices=tuple(dit.PRESETS))
  parser.add_argument("--steps", type=int, default=50, help="DDIM steps S")
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--s", default="0,5,10,25,50", help="comma-separated s values")
  parser.add_argument("--long-frames", type=int, default=128)
  parser.add_argument("--long-s", type=int, default=5)
  parser.add_argument("--modes", default="full,cached")
  parser.add_argument("--long-modes", default="full,cached",
                      help="modes for the long video (full evaluates every frame at every row)")
  parser.add_argument("--batch", type=int, default=1, help="videos per sampler call")
  parser.add_argument("--repeats", type=int, default=2, help="timed runs (the minimum counts)")
  _add_token_patch(parser)
  parser.add_argument("--out", default="bench_results/sampling.json")
  args = parser.parse_args(argv)

  config = config_lib.load_config("configs/synthetic.py:default", [
      f"dit.size={args.size!r}", f"dit.num_frames={args.frames}", "dit.num_classes=0",
      f"dit.token_patch={args.token_patch}"])
  model = dit.dit_from_config(config.dit)
  example = [jnp.zeros(x.shape, x.dtype) for x in model.example_inputs()]
  variables = nn.meta.unbox(model.init(jax.random.key(0), *example))
  grid = diffusion.ddim_grid("clean", diffusion.alphas_from_config(config.diffusion), args.steps)
  settings = [(args.frames, int(s), args.modes.split(",")) for s in args.s.split(",")]
  settings.append((args.long_frames, args.long_s, args.long_modes.split(",")))
  all_modes = args.modes.split(",")
  rows, results = [], []
  for frames, s, modes in settings:
    entry = {"frames": frames, "s": s}
    for mode in modes:
      plan, sample = sampling.make_sampler(model, grid, num_frames=frames, s=s, mode=mode)
      compiled = jax.jit(sample, static_argnums=2).lower(
          variables, jax.random.key(0), args.batch).compile()
      times = []
      for repeat in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(variables, jax.random.key(repeat)))
        times.append((time.perf_counter() - start) / args.batch)
      entry.update({f"{mode}_s": min(times), f"{mode}_window": plan.window, "rows": plan.rows})
    results.append(entry)
    rows.append([frames, s, entry["rows"]] + [
        f"{entry[f'{m}_s']:.2f} (window {entry[f'{m}_window']})" if m in modes else "not run"
        for m in all_modes])
    print(f"  F={frames} s={s}: " + ", ".join(f"{m} {entry[f'{m}_s']:.2f} s" for m in modes),
          flush=True)
  by_setting = {(r["frames"], r["s"]): r for r in results}
  ratios = {}
  # At s = S each row denoises one frame and reads every weight once for it.
  floor = _matmul_floor_seconds(dit.unrolled(model, variables)[1]["params"], 32 * args.batch)
  if "cached" in args.modes:
    base, last = by_setting.get((args.frames, 0)), by_setting.get((args.frames, args.steps))
    if base and last:
      ratios["cached_sS_over_s0"] = last["cached_s"] / base["cached_s"]
      ratios["matmul_floor_sS_over_s0"] = last["rows"] * floor / args.batch / base["cached_s"]
    short = by_setting.get((args.frames, args.long_s))
    long = by_setting[(args.long_frames, args.long_s)]
    if short and "cached_s" in long:
      ratios["cached_long_over_short"] = long["cached_s"] / short["cached_s"]
    if "cached_s" in long and "full_s" in long:
      ratios["cached_long_over_full_long"] = long["cached_s"] / long["full_s"]
  _print_table(["F", "s", "AD rows"] + [f"{m} s/video" for m in all_modes], rows)
  print(f"matmul floor of a one-frame row: {1e3 * floor:.2f} ms for {args.batch} video(s)")
  for name, value in ratios.items():
    print(f"{name}: {value:.2f}")
  return _write(args.out, {
      "benchmark": "sampling", "size": args.size, "steps": args.steps, "batch": args.batch,
      "matmul_floor_row_s": floor, "results": results, "ratios": ratios,
      "backend": jax.default_backend(),
      "jax": jax.__version__})


def _write_safetensors_streaming(path, shapes: dict, make) -> int:
  """Writes a safetensors file one tensor at a time (header, then raw float32 data), so
  a multi-GB state dict never sits in memory. Returns the file size."""
  header, offset = {}, 0
  for name, shape in shapes.items():
    size = 4 * int(np.prod(shape))
    header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
    offset += size
  encoded = json.dumps(header).encode()
  encoded += b" " * (-len(encoded) % 8)
  with open(path, "wb") as f:
    f.write(len(encoded).to_bytes(8, "little"))
    f.write(encoded)
    for name, shape in shapes.items():
      f.write(np.ascontiguousarray(make(name, shape), np.float32).tobytes())
  return 8 + len(encoded) + offset


def bench_convert(argv):
  """Converts a random paper-size official DiT state dict (671.9M trainable parameters,
  written under the official keys) and reports the converter's peak memory."""
  import resource
  import shutil
  import subprocess
  import tempfile

  from ardiffusion_jax import config as config_lib
  from ardiffusion_jax.convert import official
  from ardiffusion_jax.models import dit

  parser = argparse.ArgumentParser(prog="bench convert")
  parser.add_argument("--config", default="configs/synthetic.py:paper")
  parser.add_argument("--workdir", help="where the 2.7 GB input and output go (default: a temporary folder)")
  parser.add_argument("--out", default="bench_results/convert.json")
  args = parser.parse_args(argv)
  config = config_lib.load_config(args.config)
  model = dit.dit_from_config(config.dit)
  p = official.DIT_PREFIX
  width = model.hidden_size
  shapes = {"context_emb": (model.context_tokens, model.context_dim)}
  shapes.update({key: value.shape for key, value in official.expected_buffers(config, model).items()})
  linears = {"x_embedder": (width, model.in_channels), "t_embedder.mlp.0": (width, 256),
             "t_embedder.mlp.2": (width, width), "c_embedder": (width, model.context_dim)}
  hidden = int(width * model.mlp_ratio)
  for i in range(model.depth):
    linears.update({f"blocks.{i}.attn.qkv": (3 * width, width), f"blocks.{i}.attn.proj": (width, width),
                    f"blocks.{i}.mlp.fc1": (hidden, width), f"blocks.{i}.mlp.fc2": (width, hidden),
                    f"blocks.{i}.adaLN_modulation.1": (6 * width, width)})
  linears["final_layer.1"] = (model.in_channels, width)
  for name, shape in linears.items():
    shapes[f"{p}{name}.weight"], shapes[f"{p}{name}.bias"] = shape, shape[:1]
  trainable = sum(int(np.prod(s)) for k, s in shapes.items()
                  if k.startswith(p) and not k.endswith("pos_embed"))
  buffers = official.expected_buffers(config, model)
  rng = np.random.default_rng(0)

  def make(name, shape):
    if name in buffers:
      return buffers[name]
    return rng.standard_normal(shape, dtype=np.float32) * 0.02

  workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench_convert_"))
  workdir.mkdir(parents=True, exist_ok=True)
  source = workdir / "model.safetensors"
  try:
    size = _write_safetensors_streaming(source, shapes, make)
    start = time.perf_counter()
    # A child process, so its peak resident memory is the converter's alone.
    subprocess.run([sys.executable, "-m", "ardiffusion_jax.cli", "convert", "official-dit",
                    "--input", str(source), "--output", str(workdir / "converted"),
                    "--config", args.config], check=True)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    written = sum(f.stat().st_size for f in (workdir / "converted").rglob("*") if f.is_file())
  finally:
    if not args.workdir:
      shutil.rmtree(workdir, ignore_errors=True)
  output = {"benchmark": "convert", "trainable_parameters": trainable,
            "input_gb": size / 1e9, "output_gb": written / 1e9, "seconds": seconds,
            "peak_rss_gb": peak_kb / 1e6, "jax": jax.__version__}
  _print_table(["metric", "value"], [
      ["state dict", f"{trainable:,} trainable parameters, {size / 1e9:.2f} GB safetensors"],
      ["conversion", f"{seconds:.1f} s, peak RSS {peak_kb / 1e6:.2f} GB (converter process)"],
      ["orbax output", f"{written / 1e9:.2f} GB"],
  ])
  return _write(args.out, output)


class _PeakMemory:
  """The peak, over the `with` block, of the process's resident memory (polled every
  2 ms from /proc/self/statm; None where that file is missing) and of the first device's
  bytes in use (where the backend reports them, as GPUs do; None on CPU)."""

  def __init__(self):
    import threading
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._poll, daemon=True)
    self.rss_mb = self.device_mb = None
    self.start_rss_mb = self._rss_mb()

  @staticmethod
  def _rss_mb():
    try:
      with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
    except OSError:
      return None

  @staticmethod
  def _device_mb():
    stats = jax.devices()[0].memory_stats() or {}
    used = stats.get("bytes_in_use")
    return None if used is None else used / 2**20

  def _poll(self):
    while not self._stop.is_set():
      for name, now in (("rss_mb", self._rss_mb()), ("device_mb", self._device_mb())):
        if now is not None and (getattr(self, name) is None or now > getattr(self, name)):
          setattr(self, name, now)
      self._stop.wait(0.002)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()


def _bench_generator(size: str, steps: int, token_patch: int, ckpt=None):
  """The demo's models (`configs/synthetic.py:default`: the tiny AR-VAE and a DiT of
  `size` and `token_patch`) with random weights, which time as trained ones do; or a
  trained DiT run and its AR-VAE."""
  import flax.linen as nn
  import jax.numpy as jnp

  from ardiffusion_jax import config as config_lib
  from ardiffusion_jax import diffusion, generate
  from ardiffusion_jax.models import ar_vae, dit
  if ckpt:
    return generate.Generator.from_checkpoint(ckpt, sampling_steps=steps)
  config = config_lib.load_config("configs/synthetic.py:default", [
      f"dit.size={size!r}", f"dit.token_patch={token_patch}"])
  init = lambda model, seed: nn.meta.unbox(model.init(
      jax.random.key(seed), *[jnp.zeros(x.shape, x.dtype) for x in model.example_inputs()]))
  model, vae = dit.dit_from_config(config.dit), ar_vae.vae_from_config(config.vae)
  grid = diffusion.ddim_grid(config.diffusion.ddim_grid,
                             diffusion.alphas_from_config(config.diffusion), steps)
  return generate.Generator(config, model, init(model, 0), grid, vae, init(vae, 1)["params"],
                            config.vae.image_size)


def bench_streaming(argv):
  """`Generator.stream` against `sample` making the same video in one call: time to the
  first frame, steady frames/s and peak memory, by length, s and decoding."""
  parser = argparse.ArgumentParser(prog="bench streaming")
  parser.add_argument("--sizes", default="tiny,small",
                      help="DiT presets, each with the demo's tiny AR-VAE (default tiny,small)")
  parser.add_argument("--ckpt", help="a trained DiT run to stream instead of the tiny preset "
                                     "(its AR-VAE from latents_info.json)")
  parser.add_argument("--frames", default="64,256,1024", help="comma-separated lengths")
  parser.add_argument("--s", default="1,5,S", help="comma-separated s values (S: the steps)")
  parser.add_argument("--steps", type=int, default=50, help="DDIM steps S")
  parser.add_argument("--decode", default="no,yes", help="no, yes or both (no,yes)")
  parser.add_argument("--sample-frames", type=int, default=None,
                      help="longest video `sample` makes for the comparison (default: all)")
  _add_token_patch(parser)
  parser.add_argument("--out", default="bench_results/streaming.json")
  args = parser.parse_args(argv)
  lengths = sorted(int(f) for f in args.frames.split(","))
  results, rows = [], []
  for size in args.sizes.split(","):
    generator = _bench_generator(size, args.steps, args.token_patch,
                                 args.ckpt if size == "tiny" else None)
    steps = generator.grid.num_steps
    s_values = [steps if s == "S" else int(s) for s in args.s.split(",")]
    # The per-frame decode on its own: the latency streaming adds to every frame.
    decode_frame = generator._frame_decoder()
    latent = np.zeros((generator.model.tokens_per_frame, generator.model.in_channels),
                      np.float32) + 0.5
    decode_frame(latent)
    calls, seconds = _time_calls(lambda _: decode_frame(latent), 1.0, 10)
    decode_ms = 1e3 * seconds / calls
    print(f"{size}: decoding one frame takes {decode_ms:.1f} ms", flush=True)
    for s in s_values:
      for decode in [d == "yes" for d in args.decode.split(",")]:
        # Every stream first, then every `sample`: a longer `sample` leaves the process
        # holding more memory, which would show up in the streams' peaks after it.
        entries = []
        for frames in lengths:
          # Compiles (where a shorter stream has not already): the timed runs are warm.
          list(itertools.islice(generator.stream(s, max_frames=frames, decode=decode), 2))
          entry = {"size": size, "s": s, "decode": decode, "frames": frames}
          with _PeakMemory() as memory:
            started = time.perf_counter()
            first = None
            for i, _ in enumerate(generator.stream(s, max_frames=frames, decode=decode)):
              if first is None:
                first = time.perf_counter() - started
            total = time.perf_counter() - started
          entry.update(stream_first_frame_s=first, stream_fps=(frames - 1) / (total - first),
                       stream_total_s=total, stream_rss_mb=memory.rss_mb,
                       stream_rss_start_mb=memory.start_rss_mb,
                       stream_device_mb=memory.device_mb)
          entries.append(entry)
        for entry in entries:
          frames = entry["frames"]
          if args.sample_frames is None or frames <= args.sample_frames:
            if decode:
              generator.decode(np.zeros((1, frames) + latent.shape, np.float32))  # compiles
            with _PeakMemory() as memory:
              latents, timing = generator.sample_latents(1, frames, s, batch_size=1,
                                                         show_progress=False)
              started = time.perf_counter()
              if decode:
                generator.decode(latents)
              # Sampling without its compilation, which `sample_latents` times apart.
              total = timing["sample_seconds"] + time.perf_counter() - started
            entry.update(sample_total_s=total, sample_fps=frames / total,
                         sample_rss_mb=memory.rss_mb, sample_device_mb=memory.device_mb)
          results.append(entry)
          fmt = lambda v, f: "-" if v is None else format(v, f)
          rows.append([size, s, "yes" if decode else "no", frames,
                       fmt(entry["stream_first_frame_s"], ".2f"), fmt(entry["stream_fps"], ".1f"),
                       fmt(entry["stream_rss_mb"], ".0f"), fmt(entry.get("sample_total_s"), ".2f"),
                       fmt(entry.get("sample_fps"), ".1f"), fmt(entry.get("sample_rss_mb"), ".0f")])
          print("  " + "  ".join(map(str, rows[-1])), flush=True)
    results.append({"size": size, "decode_frame_ms": decode_ms})
  growth = {}
  for entry in results:
    if entry.get("frames") == lengths[-1] and entry.get("stream_rss_mb"):
      small = next(e for e in results if e.get("frames") == lengths[0] and all(
          e.get(k) == entry[k] for k in ("size", "s", "decode")))
      growth[f"{entry['size']} s={entry['s']} decode={entry['decode']}"] = (
          entry["stream_rss_mb"] / small["stream_rss_mb"])
  _print_table(["DiT", "s", "decode", "frames", "stream: first frame s", "frames/s", "peak RSS MB",
                "sample: s", "frames/s", "peak RSS MB"], rows)
  for name, ratio in growth.items():
    print(f"peak RSS at {lengths[-1]} / at {lengths[0]} frames, {name}: {ratio:.3f}")
  return _write(args.out, {
      "benchmark": "streaming", "steps": args.steps, "results": results,
      "rss_growth": growth, "backend": jax.default_backend(), "jax": jax.__version__,
      "machine": platform.processor() or platform.machine()})


# Dense bf16 peak of one chip, by `device_kind` substring (first match): the MFU's
# denominator. Sparse figures (twice these) do not count.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("A800", 312.0), ("A100", 312.0),
                    ("TPU v5p", 459.0), ("TPU v5 lite", 197.0), ("TPU v5e", 197.0),
                    ("TPU v4", 275.0), ("TPU v6", 918.0))

# `bench accelerator --size`: paper (one H100/H200-class GPU) or tiny (CPU, seconds).
ACCELERATOR_SIZES = {
    "paper": dict(dit="paper", batch=16, frames=16, steps=50, sample_batches=(1, 8),
                  long_frames=128, vae_batch=8, train_steps=5),
    "tiny": dict(dit="tiny", batch=2, frames=4, steps=10, sample_batches=(1, 2),
                 long_frames=8, vae_batch=2, train_steps=2),
}


def _peak_tflops(device_kind: str):
  return next((peak for name, peak in PEAK_BF16_TFLOPS if name.lower() in device_kind.lower()),
              None)


def _device_memory():
  """(bytes the device holds, peak bytes in use so far), each None where not reported."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("bytes_limit"), stats.get("peak_bytes_in_use")


def _out_of_memory(error) -> bool:
  return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def _paper_config(size: str, variant: str, batch: int):
  """`configs/synthetic.py:paper` (bf16, remat) in `variant` on one device, with unrolled
  layers: `cost_analysis` counts a scanned stack's body once, so the FLOPs (and the step
  time beside them) are those of the unrolled step."""
  from ardiffusion_jax import config as config_lib
  spec = ACCELERATOR_SIZES[size]
  return config_lib.load_config("configs/synthetic.py:paper", [
      f"dit.variant={variant!r}", f"dit.size={spec['dit']!r}", f"dit.num_frames={spec['frames']}",
      f"train.batch_size={batch}", "mesh.fsdp=1", "mesh.data=1", "dit.scan_layers=False"])


def _largest_batch(size: str, variant: str, planned: dict, capacity):
  """The largest batch whose training step ran: `ardiff plan`'s peaks at `planned`'s
  batch and twice it give bytes per sample and a first guess at 95% of the capacity; a
  guess that runs out of memory moves down by an eighth (up to 4 tries). (None, why)
  without a known capacity."""
  from ardiffusion_jax.train import plan as plan_lib
  if capacity is None:
    return None, "the device reports no memory capacity (CPU)"
  start = planned["global_batch"]
  doubled = plan_lib.plan_train_step(_paper_config(size, variant, 2 * start), jax.devices()[:1])
  per_sample = (doubled["peak_bytes"] - planned["peak_bytes"]) / start
  fixed = planned["peak_bytes"] - per_sample * start
  guess = int((0.95 * capacity - fixed) // max(per_sample, 1))
  for _ in range(4):
    try:
      _time_train_step(_paper_config(size, variant, guess), guess, 1)
      return guess, (f"planned {per_sample / 2**20:.0f} MiB a sample and "
                     f"{fixed / 2**30:.1f} GiB fixed; ran")
    except Exception as error:  # noqa: BLE001  (only out-of-memory moves the guess)
      if not _out_of_memory(error):
        raise
      guess = int(guess * 7 / 8)
  return None, "every guess ran out of memory"


def _attention_check(size: str) -> dict:
  """Which attention kernel serves the DiT's block-causal boolean mask: cuDNN's fused one
  where it accepts it, else XLA's. Both run on the paper's attention shapes in bf16 and
  are compared within bf16 tolerance, with their times."""
  import jax.numpy as jnp
  from ardiffusion_jax.models import dit, layers
  spec = ACCELERATOR_SIZES[size]
  preset = dit.PRESETS[spec["dit"]]
  heads, head_dim = preset["num_heads"], preset["hidden_size"] // preset["num_heads"]
  frames, tokens = spec["frames"], 32
  shape = (spec["batch"], frames * tokens, heads, head_dim)
  q, k, v = (jax.random.normal(key, shape, jnp.bfloat16)
             for key in jax.random.split(jax.random.key(0), 3))
  frame = jnp.repeat(jnp.arange(frames), tokens)
  mask = layers.frame_mask(frame[None], frame[None])
  result = {"shape": list(shape), "mask": "block-causal (frame <= frame), boolean"}
  outputs = {}
  for name in ("xla", "cudnn"):
    try:
      run = jax.jit(lambda q, k, v, name=name: jax.nn.dot_product_attention(
          q, k, v, mask=mask, implementation=name))
      outputs[name] = jax.block_until_ready(run(q, k, v))
      calls, seconds = _time_calls(lambda _: jax.block_until_ready(run(q, k, v)), 0.5, 5)
      result[f"{name}_ms"] = 1e3 * seconds / calls
    except Exception as error:  # noqa: BLE001  (a kernel that refuses: say why)
      result[f"{name}_ms"] = None
      result[f"{name}_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
  if "cudnn" in outputs:
    diff = jnp.abs(outputs["cudnn"].astype(jnp.float32) - outputs["xla"].astype(jnp.float32))
    result["max_abs_difference"] = float(diff.max())
    result["cudnn_matches_xla"] = bool(diff.max() <= 2e-2)
  result["implementation"] = "cudnn" if result.get("cudnn_matches_xla") else "xla"
  # The DiT calls dot_product_attention without naming an implementation: XLA's.
  result["dit_uses"] = "xla"
  return result


def _sampling_figures(size: str, over_budget) -> list:
  """Seconds per video of the AD sampler with paper-size DiTs: the official one in full
  mode (the authors' way) and the clean one cached, at the paper's settings, batch 1
  before batch 8 and the long video last; what is left once `over_budget()` is recorded
  as skipped."""
  import flax.linen as nn
  import jax.numpy as jnp
  from ardiffusion_jax import diffusion, sampling
  from ardiffusion_jax.models import dit
  spec = ACCELERATOR_SIZES[size]
  steps = spec["steps"]
  config = _paper_config(size, "official", 1)
  grid = diffusion.ddim_grid("clean", diffusion.alphas_from_config(config.diffusion), steps)
  s_values = (0, steps // 10, steps)
  figures = []
  for variant, mode in (("official", "full"), ("clean", "cached")):
    config = _paper_config(size, variant, 1)
    config.dit.update(num_frames=16 if size == "paper" else spec["frames"], scan_layers=False,
                      remat=False)
    model = dit.dit_from_config(config.dit)
    example = [jnp.zeros(x.shape, x.dtype) for x in model.example_inputs()]
    variables = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), *example))
    settings = [(model.num_frames, s, b) for b in spec["sample_batches"] for s in s_values]
    if mode == "cached":  # past the window: the clean model's rolling cache
      settings.append((spec["long_frames"], steps // 10, 1))
    for frames, s, batch in settings:
      entry = {"variant": variant, "mode": mode, "frames": frames, "s": s, "batch": batch}
      if over_budget():
        figures.append(dict(entry, skipped="over the time budget (--budget-s)"))
        continue
      plan, sample = sampling.make_sampler(model, grid, num_frames=frames, s=s, mode=mode)
      started = time.perf_counter()
      compiled = jax.jit(sample, static_argnums=2).lower(
          variables, jax.random.key(0), batch).compile()
      compile_s = time.perf_counter() - started
      jax.block_until_ready(compiled(variables, jax.random.key(1)))
      started = time.perf_counter()
      jax.block_until_ready(compiled(variables, jax.random.key(2)))
      seconds = time.perf_counter() - started
      figures.append(dict(entry, rows=plan.rows, s_per_video=seconds / batch,
                          compile_s=compile_s))
      print(f"  sampling {variant} {mode} F={frames} s={s} batch {batch}: "
            f"{seconds / batch:.2f} s/video", flush=True)
  return figures


def _vae_throughput(size: str) -> dict:
  """Frames per second of the paper AR-VAE's encoder and decoder in bf16 (per frame;
  the clean variant's temporally causal decoder over 16-frame clips)."""
  import flax.linen as nn
  import jax.numpy as jnp
  from ardiffusion_jax.models import ar_vae
  spec = ACCELERATOR_SIZES[size]
  vae = ar_vae.vae_from_config(_vae_config(size))
  frames = 16 if size == "paper" else 2
  video = jnp.zeros((spec["vae_batch"], frames, vae.image_size, vae.image_size, 3), jnp.float32)
  params = nn.meta.unbox(jax.jit(vae.init)(jax.random.key(0), video[:1, :1]))["params"]
  encode = jax.jit(lambda v: vae.apply({"params": params}, v, method=ar_vae.ARVAE.encode)[0])
  latents = jax.block_until_ready(encode(video))
  decode = jax.jit(lambda z: vae.apply({"params": params}, z, method=ar_vae.ARVAE.decode))
  jax.block_until_ready(decode(latents))
  result = {"resolution": vae.image_size, "clip_frames": frames, "batch": spec["vae_batch"],
            "dtype": str(jnp.dtype(vae.dtype))}
  for name, fn, x in (("encode", encode, video), ("decode", decode, latents)):
    calls, seconds = _time_calls(lambda _: jax.block_until_ready(fn(x)), 1.0, 3)
    result[f"{name}_frames_per_s"] = calls * spec["vae_batch"] * frames / seconds
  return result


def _vae_config(size: str):
  """The AR-VAE of the real-video configs (official, 256², the temporally causal decoder
  of stage 3) at paper size; the synthetic one at 32² at tiny size; both in bf16."""
  from ardiffusion_jax.configs import sky, synthetic
  # The model section only: a real-video config validates its data.root, which no
  # dataset here has.
  vae = (sky.get_config("vae_causal") if size == "paper" else synthetic.get_config("vae_causal")).vae
  vae.dtype = "bfloat16"
  if size != "paper":
    vae.image_size = 32
  return vae


def bench_accelerator(argv):
  """The prepared accelerator check: the paper DiT's training step (official and clean,
  bf16, remat), MFU, the attention kernel, memory against `ardiff plan`, paper-size
  sampling against Table 2, the paper AR-VAE's throughput and the largest batch, in one
  process and in that order, the JSON rewritten after each part. `--size tiny` runs the
  same code on CPU."""
  import flax
  import jaxlib

  from ardiffusion_jax.train import plan as plan_lib
  parser = argparse.ArgumentParser(prog="bench accelerator")
  parser.add_argument("--size", default="paper", choices=tuple(ACCELERATOR_SIZES))
  parser.add_argument("--skip", default="", help="comma-separated parts to leave out: "
                      "train, memory, attention, sampling, vae, largest_batch")
  parser.add_argument("--budget-s", type=float, default=420.0,
                      help="sampling settings and the largest-batch search start only "
                           "before this many seconds (default 420)")
  parser.add_argument("--out", default="bench_results/accelerator.json")
  args = parser.parse_args(argv)
  skip = set(filter(None, args.skip.split(",")))
  spec = ACCELERATOR_SIZES[args.size]
  device = jax.devices()[0]
  capacity, _ = _device_memory()
  peak = _peak_tflops(device.device_kind)
  started = time.perf_counter()
  over_budget = lambda: time.perf_counter() - started > args.budget_s
  result = {
      "benchmark": "accelerator", "size": args.size,
      "environment": {
          "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
          "backend": jax.default_backend(), "device_kind": device.device_kind,
          "devices": jax.device_count(), "memory_bytes": capacity,
          "compute_capability": getattr(device, "compute_capability", None),
          "peak_bf16_tflops": peak, "python": platform.python_version()},
  }
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)

  def part(name):
    """Saves what is measured so far (a run cut short keeps it) and logs the next part."""
    result["seconds"] = time.perf_counter() - started
    out.write_text(json.dumps(result, indent=2))
    print(f"[{result['seconds']:6.1f} s] {name}", flush=True)
    return name not in skip

  if part("train"):
    result["train"] = {}
    for variant in ("official", "clean"):
      figures = _time_train_step(_paper_config(args.size, variant, spec["batch"]),
                                 spec["batch"], spec["train_steps"])
      achieved = figures["flops_per_step"] / figures["s_per_step"]
      figures["tflops_per_s"] = achieved / 1e12
      figures["mfu"] = None if peak is None else achieved / (peak * 1e12)
      if variant == "official":  # the process's first steps: the peak is this config's
        figures["device_peak_bytes"] = _device_memory()[1]
      result["train"][variant] = figures
  planned = None
  if part("memory"):
    planned = plan_lib.plan_train_step(_paper_config(args.size, "official", spec["batch"]),
                                       jax.devices()[:1])
    measured = result.get("train", {}).get("official", {}).get("device_peak_bytes")
    result["memory"] = {"planned_peak_bytes": planned["peak_bytes"],
                        "measured_peak_bytes": measured,
                        "measured_over_planned": None if measured is None
                        else measured / planned["peak_bytes"]}
  if part("attention"):
    result["attention"] = _attention_check(args.size)
  if part("sampling"):
    result["sampling"] = _sampling_figures(args.size, over_budget)
    result["paper_table2_s_per_video"] = {"F16_s0": 2.4, "F16_s5": 5.2, "F16_s50": 30.5,
                                          "F128_s5": 42.0}
  if part("vae"):
    result["vae"] = _vae_throughput(args.size)
  if part("largest_batch"):
    batch, how = None, "over the time budget (--budget-s)"
    if not over_budget():
      planned = planned or plan_lib.plan_train_step(
          _paper_config(args.size, "official", spec["batch"]), jax.devices()[:1])
      batch, how = _largest_batch(args.size, "official", planned, capacity)
    result["largest_batch"] = {"variant": "official", "batch": batch, "how": how}
  part("done")
  _print_accelerator(result)
  return _write(args.out, result)


def _print_accelerator(result: dict):
  fmt = lambda v, f=".3g": "null" if v is None else format(v, f)
  env = result["environment"]
  rows = [["device", f"{env['device_kind']} ({env['backend']}), jax {env['jax']}"]]
  for variant, f in (result.get("train") or {}).items():
    rows.append([f"train {variant}", f"{f['s_per_step']:.3f} s/step, "
                 f"{f['tokens_per_s']:,.0f} tokens/s, MFU {fmt(f['mfu'], '.1%')}"])
  if "largest_batch" in result:
    rows.append(["largest batch", fmt(result["largest_batch"]["batch"], "d")])
  if "memory" in result:
    m = result["memory"]
    measured = m["measured_peak_bytes"]
    rows.append(["peak memory", f"measured {fmt(measured and measured / 2**30, '.2f')} GiB, "
                 f"planned {m['planned_peak_bytes'] / 2**30:.2f} GiB"])
  if "attention" in result:
    a = result["attention"]
    rows.append(["attention", f"{a['implementation']} (xla {fmt(a['xla_ms'], '.2f')} ms, "
                 f"cudnn {fmt(a['cudnn_ms'], '.2f')} ms)"])
  for f in result.get("sampling") or []:
    rows.append([f"sample {f['variant']} {f['mode']} F={f['frames']} s={f['s']} b={f['batch']}",
                 f["skipped"] if "skipped" in f else f"{f['s_per_video']:.2f} s/video"])
  if "vae" in result:
    v = result["vae"]
    rows.append(["AR-VAE", f"encode {v['encode_frames_per_s']:.1f}, decode "
                 f"{v['decode_frames_per_s']:.1f} frames/s at {v['resolution']}²"])
  _print_table(["", "value"], rows)


BENCHMARKS = {"timesteps": bench_timesteps, "train_step": bench_train_step, "vae": bench_vae,
              "sampling": bench_sampling, "streaming": bench_streaming, "convert": bench_convert,
              "accelerator": bench_accelerator}


def _print_table(header, rows):
  widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
  for row in [header, ["-" * w for w in widths], *rows]:
    print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def _write(path, result: dict) -> dict:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(result, indent=2))
  print(f"wrote {path}")
  return result


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] not in BENCHMARKS:
    print(f"usage: python -m ardiffusion_jax.bench {{{','.join(BENCHMARKS)}}} [options]",
          file=sys.stderr)
    return 2
  BENCHMARKS[argv[0]](argv[1:])
  return 0


if __name__ == "__main__":
  sys.exit(main())
