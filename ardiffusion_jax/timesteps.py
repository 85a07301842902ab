"""Training timestep schedulers (FoPP and the ablations) and the AD inference matrix.

All training schemes return int32 [B, F] in [0, T-1] and run under `jax.jit` with a
traced key. The FoPP dynamic-programming tables are computed once in float64 numpy,
in log space, so any F and T works without overflow.

Counting. Let N(n, m) be the number of non-decreasing sequences of length n with values
in [m, T-1]; N(n, m) = C(T-1-m+n, n), N(0, m) = 1 and N(n, T) = 0 for n >= 1. The
paper's tables (§3.3, zero-based) are
    d^s[f, t] = N(F-1-f, t)        completions t_{f+1..F-1} after t_f = t
    d^e[f, t] = N(f, T-1-t)        prefixes t_{0..f-1} before t_f = t (by reflection)
and the number of compositions through (f, t) is d^s[f, t] · d^e[f, t].

Sampling. Given t_{f-1} = K, the next frame of a uniform completion of n = F-f frames
has P(t_f <= k) = 1 - N(n, k+1) / N(n, K). We invert that CDF by binary search over
log N(n, ·) stored as float32 hi/lo pairs, so the comparison keeps about 1e-7 absolute
precision in the log ratio even where log N reaches several hundred. Frames before the
anchor are drawn the same way on the reflected sequence t' = T-1-t read backwards.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SCHEMES = ("fopp", "increasing_uniform", "naive_increasing", "equal", "independent")


def _check_sizes(num_frames: int, num_timesteps: int):
  if int(num_frames) < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  if int(num_timesteps) < 1:
    raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")


@functools.lru_cache(maxsize=32)
def log_completion_counts(num_frames: int, num_timesteps: int) -> np.ndarray:
  """log N(n, m) as float64 [F+1, T+1] for n in [0, F] and m in [0, T]."""
  _check_sizes(num_frames, num_timesteps)
  table = np.full((num_frames + 1, num_timesteps + 1), -np.inf)
  table[0] = 0.0
  for n in range(1, num_frames + 1):
    # N(n, m) = sum_{k >= m} N(n-1, k): a reverse cumulative sum, done in log space.
    table[n, :num_timesteps] = np.logaddexp.accumulate(table[n - 1, num_timesteps - 1::-1])[::-1]
  table.flags.writeable = False
  return table


class FoppTables(NamedTuple):
  """The paper's DP tables in natural log, both [F, T] (frame f, timestep t, zero-based)."""
  log_ds: np.ndarray  # completions after frame f given t_f = t
  log_de: np.ndarray  # prefixes before frame f given t_f = t

  def log_paths_through(self) -> np.ndarray:
    """log of the number of compositions with t_f = t, [F, T]."""
    return self.log_ds + self.log_de

  def log_num_compositions(self) -> float:
    """log of the number of non-decreasing compositions."""
    return float(np.logaddexp.reduce(self.log_paths_through()[0]))


def fopp_tables(num_frames: int, num_timesteps: int) -> FoppTables:
  """The FoPP dynamic-programming tables d^s and d^e (paper §3.3) in log space."""
  counts = log_completion_counts(num_frames, num_timesteps)
  frames = np.arange(num_frames)
  return FoppTables(
      log_ds=counts[num_frames - 1 - frames, :num_timesteps].copy(),
      log_de=counts[frames, :num_timesteps][:, ::-1].copy())


@functools.lru_cache(maxsize=32)
def _hi_lo_tables(num_frames: int, num_timesteps: int):
  counts = log_completion_counts(num_frames, num_timesteps)
  hi = counts.astype(np.float32)
  finite = np.isfinite(counts)
  lo = np.zeros_like(hi)
  lo[finite] = counts[finite] - hi[finite].astype(np.float64)
  return hi, lo


def _draw_after(prev_t, row_hi, row_lo, uniform, num_timesteps: int):
  """Draws t_f >= prev_t for a uniform completion of n frames (t_f included).

  prev_t: int32 [B]; row_hi, row_lo: log N(n, ·) as a float32 pair, [T+1]; uniform:
  float32 [B] in [0, 1). Returns the smallest k in [prev_t, T-1] with
  log N(n, k+1) - log N(n, prev_t) <= log(uniform).
  """
  base_hi, base_lo = row_hi[prev_t], row_lo[prev_t]
  threshold = jnp.log(uniform)

  # Binary search for the first m in [K+1, T] with log N(n, m) - log N(n, K) <= threshold;
  # the left side falls with m and m = T (log N = -inf) always qualifies.
  def halve(_, bounds):
    lo_m, hi_m = bounds
    mid = (lo_m + hi_m) // 2
    ok = (row_hi[mid] - base_hi) + (row_lo[mid] - base_lo) <= threshold
    return jnp.where(ok, lo_m, mid + 1), jnp.where(ok, mid, hi_m)

  iterations = max(1, math.ceil(math.log2(num_timesteps + 1)))
  _, first = jax.lax.fori_loop(0, iterations, halve,
                               (prev_t + 1, jnp.full_like(prev_t, num_timesteps)))
  return jnp.clip(first - 1, prev_t, num_timesteps - 1)


def _complete_forward(key, t, start_frame, num_timesteps: int, tables):
  """Resamples frames f > start_frame[b] as a uniform non-decreasing completion of t.

  A `lax.scan` over frames, so compile time does not grow with F.
  """
  batch, num_frames = t.shape
  hi, lo = (jnp.asarray(table) for table in tables)
  uniforms = jax.random.uniform(key, (num_frames - 1, batch))

  def step(prev, inputs):
    frame, current, uniform = inputs
    remaining = num_frames - frame
    drawn = _draw_after(prev, hi[remaining], lo[remaining], uniform, num_timesteps)
    new = jnp.where(frame > start_frame, drawn, current)
    return new, new

  frames = jnp.arange(1, num_frames)
  _, rest = jax.lax.scan(step, t[:, 0], (frames, t[:, 1:].T, uniforms))
  return jnp.concatenate([t[:, :1], rest.T], axis=1)


def fopp_complete(key, anchor_frame, anchor_timestep, num_frames: int, num_timesteps: int):
  """Draws a composition uniformly among those with t[anchor_frame] = anchor_timestep.

  anchor_frame, anchor_timestep: int [B]. This is FoPP (Algorithm 1) with the anchor
  given; `sample_timesteps(..., 'fopp', ...)` draws the anchor uniformly first.
  """
  _check_sizes(num_frames, num_timesteps)
  tables = _hi_lo_tables(num_frames, num_timesteps)
  anchor_frame = jnp.asarray(anchor_frame, jnp.int32)
  anchor_timestep = jnp.asarray(anchor_timestep, jnp.int32)
  key_after, key_before = jax.random.split(key)
  t = jnp.broadcast_to(anchor_timestep[:, None], (anchor_timestep.shape[0], num_frames))
  t = _complete_forward(key_after, t, anchor_frame, num_timesteps, tables)
  # Frames before the anchor: a forward completion of the reflected, reversed sequence.
  reflected = (num_timesteps - 1 - t)[:, ::-1]
  reflected = _complete_forward(key_before, reflected, num_frames - 1 - anchor_frame,
                                num_timesteps, tables)
  return (num_timesteps - 1 - reflected)[:, ::-1]


def sample_timesteps(key, scheme: str, batch_size: int, num_frames: int,
                     num_timesteps: int):
  """Per-frame training timesteps, int32 [B, F] in [0, T-1].

  scheme:
    fopp                FoPP (paper Algorithm 1): anchor frame and timestep uniform, the
                        rest uniform over the non-decreasing completions.
    increasing_uniform  uniform over all non-decreasing compositions.
    naive_increasing    t_0 ~ U[0, T-1], t_i ~ U[t_{i-1}, T-1] (the strawman of §3.3).
    equal               one t per video (synchronous diffusion).
    independent         i.i.d. t per frame (Diffusion Forcing); not monotone.
  """
  _check_sizes(num_frames, num_timesteps)
  if int(batch_size) < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  shape = (batch_size, num_frames)
  if scheme == "fopp":
    key_frame, key_t, key_rest = jax.random.split(key, 3)
    anchor_frame = jax.random.randint(key_frame, (batch_size,), 0, num_frames)
    anchor_t = jax.random.randint(key_t, (batch_size,), 0, num_timesteps)
    return fopp_complete(key_rest, anchor_frame, anchor_t, num_frames, num_timesteps)
  if scheme == "increasing_uniform":
    start = jnp.zeros(shape, jnp.int32)
    # A virtual frame -1 at t = 0 puts no constraint on frame 0.
    return _complete_forward(key, jnp.concatenate([start[:, :1], start], axis=1),
                             jnp.zeros((batch_size,), jnp.int32), num_timesteps,
                             _hi_lo_tables(num_frames, num_timesteps))[:, 1:]
  if scheme == "naive_increasing":
    keys = jax.random.split(key, num_frames)
    columns = [jax.random.randint(keys[0], (batch_size,), 0, num_timesteps)]
    for f in range(1, num_frames):
      columns.append(jax.random.randint(keys[f], (batch_size,), columns[-1], num_timesteps))
    return jnp.stack(columns, axis=1).astype(jnp.int32)
  if scheme == "equal":
    t = jax.random.randint(key, (batch_size, 1), 0, num_timesteps)
    return jnp.broadcast_to(t, shape).astype(jnp.int32)
  if scheme == "independent":
    return jax.random.randint(key, shape, 0, num_timesteps).astype(jnp.int32)
  raise ValueError(f"unknown timestep scheme {scheme!r}; expected one of {SCHEMES}")


def ad_step_matrix(num_frames: int, num_steps: int, s: int, context_frames: int = 0):
  """The AD scheduler's (step_index, update_mask), numpy [R, F] int32 and bool.

  step_index[r, i] is the number of DDIM steps frame i has completed after row r:
  clip(r+1 - (i-c)·s, 0, S) for generated frames i >= c, where c = context_frames, and
  S for context frames, which count as finished and are never updated. R = S + s·(F-c-1)
  rows take the last frame to S. update_mask[r, i] says frame i changes in row r.
  s = 0 is synchronous DDIM; s = S denoises each frame completely before the next starts.
  """
  num_frames, num_steps, s, context_frames = (int(num_frames), int(num_steps), int(s),
                                              int(context_frames))
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  if num_steps < 1:
    raise ValueError(f"num_steps (S) must be >= 1, got {num_steps}")
  if not 0 <= s <= num_steps:
    raise ValueError(f"the timestep difference s must be in [0, S={num_steps}], got {s}")
  if not 0 <= context_frames < num_frames:
    raise ValueError(f"context_frames must be in [0, num_frames-1={num_frames - 1}], "
                     f"got {context_frames}")
  generated = num_frames - context_frames
  rows = num_steps + s * (generated - 1)
  # Entry j of `done` is after j updates; j = 0 is the all-noise state before row 0.
  after = np.arange(rows + 1)[:, None]
  done = np.concatenate([
      np.full((rows + 1, context_frames), num_steps),
      np.clip(after - np.arange(generated)[None, :] * s, 0, num_steps)], axis=1)
  done = done.astype(np.int32)
  return done[1:], done[1:] != done[:-1]
