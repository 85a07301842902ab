"""Benchmarks: `python -m ardiffusion_jax.bench <name> [options]`.

Each benchmark prints a table and writes JSON (default `bench_results/<name>.json`).
Timings are wall-clock on whatever machine runs them; tests never assert on them.
"""

import argparse
import json
import pathlib
import platform
import sys
import time

import jax
import numpy as np


def _numpy_fopp_tables(num_frames: int, num_timesteps: int):
  """The authors' float64 count tables (spec §3.1): mat_s[t, f] and mat_e[t, f]."""
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


BENCHMARKS = {"timesteps": bench_timesteps}


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
