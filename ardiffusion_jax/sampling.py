"""The AD sampler: asynchronous DDIM over the rows of the AD step matrix, in one `lax.scan`.

Row r of `timesteps.ad_step_matrix` says, for every frame, how many of the S DDIM steps
it has completed and whether it moves in that row. One scan step runs the denoiser,
applies classifier-free guidance in x0 space and moves exactly the frames whose mask is
set (docs/architecture.md says why the cached mode is exact). Two execution modes share
that step:

* **full**: every row evaluates the whole window, the authors' semantics. For a video
  longer than the model's window (`dit.num_frames`) the `official` variant (absolute
  sin-cos positions) slides a window of that many frames exactly as their code does; the
  `clean` variant (temporal RoPE) evaluates every frame with a rolling attention window:
  each frame sees itself and the `num_frames - 1` frames before it.
* **cached**: for a strictly causal model each row evaluates only a static window of W
  frames that holds every active one (W = ceil(S/s), or all frames for s = 0), slid with
  `dynamic_slice`. Earlier frames are read from a per-layer KV cache. A frame's keys and
  values are written once, when the window moves past it: by then it is finished, so a
  one-frame pass (its final latent, the context timestep) gives exactly what full mode
  recomputes at every row. Frames not yet started are never evaluated. With RoPE the
  cache is a ring of `num_frames` slots, so 128+ frame videos run in constant memory.

A W+1 window that keeps the just-finished frame would write its keys and values without
a separate pass, but it doubles the work per row at s = S (two frames instead of one).
So the one-frame pass runs instead, and only in the rows where the window moves (a
`lax.cond`).

Continuation: context frames count as finished from the start, are prefilled into the
cache (cached) or fed at the context timestep (full), and are never updated, so they
come out bit-identical.
"""

import dataclasses
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ardiffusion_jax import diffusion, timesteps
from ardiffusion_jax.models import dit, layers
from ardiffusion_jax.models.dit import EMPTY_SLOT, KVCache

MODES = ("cached", "full")


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything static about a sampling run, in numpy; per-row arrays are [R, ...] and
  the per-frame ones are relative to each row's window."""
  num_frames: int
  context_frames: int
  mode: str
  window: int  # frames evaluated per row
  window_start: np.ndarray  # [R] first frame of the window
  first_frame: np.ndarray  # [R] the absolute index given to the model (0: relative)
  timesteps: np.ndarray  # [R, window] int32, fed to the model
  alphas: np.ndarray  # [R, window] float32, ᾱ of the frame's current level
  alphas_prev: np.ndarray  # [R, window] float32, ᾱ it moves to when updated
  update_mask: np.ndarray  # [R, window] bool
  commit_frame: np.ndarray  # [R] cached: frame written to the cache before the row, or -1
  cache_slots: int  # cached: frames the cache holds (a ring when rolling); 0: no cache
  attention_window: Optional[int]  # frames a query sees (rolling), or None

  @property
  def rows(self) -> int:
    return len(self.window_start)


def _sliding_window_starts(update_mask, step_index, window: int, num_steps: int):
  """The authors' long-video window (their `fifoddim.py`): it starts at [0, window) and
  moves one frame before any row in which the frame just past its end is due to start.
  Raises where their code silently evicts unfinished frames or skips updates."""
  num_rows, num_frames = update_mask.shape
  starts = np.zeros(num_rows, np.int32)
  start = 0
  for r in range(num_rows):
    end = start + window
    if end < num_frames and update_mask[r, end]:
      if r and step_index[r - 1, start] != num_steps:
        raise ValueError(
            f"the official sliding window would evict frame {start} before it is finished "
            f"(row {r}): it needs s * window >= S, here window={window} and S={num_steps}; "
            f"use a larger s, or the clean variant's rolling cache")
      start += 1
    starts[r] = start
    updated = np.flatnonzero(update_mask[r])
    if updated.min() < start or updated.max() >= start + window:
      raise ValueError(
          f"the official sliding window covers frames {start}..{start + window - 1} at row "
          f"{r}, but frames {updated.min()}..{updated.max()} are due an update: s = 0 with "
          f"more frames than the window ({num_frames} > {window}) cannot run, as in the "
          f"authors' code; use s >= 1 or at most {window} frames")
  return starts


def _cached_window_starts(update_mask, window: int, context_frames: int):
  """Cached mode: each row's window starts at its first active frame, clamped so the
  window stays inside the video."""
  num_rows, num_frames = update_mask.shape
  first_active = np.argmax(update_mask, axis=1)
  starts = np.minimum(first_active, num_frames - window).astype(np.int32)
  for r in range(num_rows):
    active = np.flatnonzero(update_mask[r])
    assert active.min() >= starts[r] and active.max() < starts[r] + window, "AD band too wide"
  previous = np.concatenate([[context_frames], starts[:-1]])
  assert np.all(starts - previous <= 1), "the window moved more than one frame in a row"
  commit = np.where(starts > previous, starts - 1, -1).astype(np.int32)
  return starts, commit


def make_plan(model, grid: diffusion.DDIMGrid, num_frames: int, s: int,
              context_frames: int = 0, mode: str = "cached") -> Plan:
  """Builds the static plan for `model` (a `DiT`), or raises ValueError naming the
  constraint a setting breaks."""
  if mode not in MODES:
    raise ValueError(f"unknown sampling mode {mode!r}; expected one of {MODES}")
  num_steps = grid.num_steps
  step_index, update_mask = timesteps.ad_step_matrix(num_frames, num_steps, s, context_frames)
  fed = grid.timesteps_for(step_index, update_mask)
  alphas = np.asarray(grid.alphas, np.float32)[step_index]
  alphas_prev = np.asarray(grid.alphas_prev, np.float32)[step_index]
  model_window = model.num_frames
  relative = model.position == "sincos_1d"  # absolute table positions: no rolling cache
  num_rows = step_index.shape[0]
  commit = np.full(num_rows, -1, np.int32)
  cache_slots, attention_window = 0, None if relative else model_window

  if mode == "full":
    if relative and num_frames > model_window:
      window = model_window
      starts = _sliding_window_starts(update_mask, step_index, window, num_steps)
    else:
      window, starts = num_frames, np.zeros(num_rows, np.int32)
    first_frame = np.zeros(num_rows, np.int32)
  else:
    if not model.strictly_causal:
      raise ValueError("cached sampling needs a strictly causal model, but this DiT's context "
                       "tokens see every frame (the official variant's leak); use "
                       "mode='full', or set dit.context_sees_video=False")
    if relative and num_frames > model_window:
      raise ValueError(f"cached sampling past the model's {model_window} frames needs temporal "
                       f"RoPE (the clean variant); the official sin-cos positions only run "
                       f"{num_frames} frames in mode='full' (the authors' sliding window)")
    generated = num_frames - context_frames
    window = generated if s == 0 else min(generated, math.ceil(num_steps / s))
    starts, commit = _cached_window_starts(update_mask, window, context_frames)
    first_frame = starts
    # No cache at all when the window never moves and there is no context (s = 0):
    # attending over empty slots would only cost time.
    if context_frames or np.any(commit >= 0):
      cache_slots = min(num_frames, model_window)

  gather = lambda a: np.stack([a[r, starts[r]:starts[r] + window] for r in range(num_rows)])
  return Plan(num_frames=num_frames, context_frames=context_frames, mode=mode, window=window,
              window_start=starts, first_frame=first_frame, timesteps=gather(fed),
              alphas=gather(alphas), alphas_prev=gather(alphas_prev),
              update_mask=gather(update_mask), commit_frame=commit, cache_slots=cache_slots,
              attention_window=attention_window)


def _denoiser(model, variables, label, cfg_scale: float, attention_window):
  """x0 prediction for a window, with classifier-free guidance as one doubled batch
  [unconditional; conditional] (and one cache for each half)."""
  guided = cfg_scale != 1.0

  def predict(x, t, first_frame, cache):
    labels = label
    if guided:
      x, t = jnp.concatenate([x, x]), jnp.concatenate([t, t])
      labels = jnp.concatenate([jnp.full_like(label, model.null_label), label])
    out = model.apply(variables, x, t, labels, first_frame=first_frame, cache=cache,
                      attention_window=attention_window)
    prediction, kv = out if cache is not None else (out, None)
    if guided:
      uncond, cond = jnp.split(prediction, 2)
      prediction = uncond + cfg_scale * (cond - uncond)
    return prediction, kv

  return predict


def _empty_cache(model, batch: int, slots: int, dtype) -> KVCache:
  head_dim = model.hidden_size // model.num_heads
  shape = (batch, slots * model.tokens_per_frame, model.num_heads, head_dim)
  empty = tuple(jnp.zeros(shape, dtype) for _ in range(model.depth))
  return KVCache(empty, empty, jnp.full((slots,), EMPTY_SLOT, jnp.int32))


def _write(cache: KVCache, kv, first_frame, frame_ids, tokens: int) -> KVCache:
  """Stores keys and values in the ring slots that start at `first_frame`'s (frame % slots;
  the caller keeps a write from wrapping) and records `frame_ids` [count] as their frames."""
  slot = first_frame % cache.frames.shape[0]
  store = lambda old, new: jax.lax.dynamic_update_slice_in_dim(old, new.astype(old.dtype),
                                                               slot * tokens, axis=1)
  return KVCache(jax.tree.map(store, cache.keys, kv[0]), jax.tree.map(store, cache.values, kv[1]),
                 jax.lax.dynamic_update_slice_in_dim(cache.frames, frame_ids, slot, axis=0))


def _read(cache: KVCache, frame, tokens: int):
  """The slot of `frame` as `_write` takes it back: (keys, values), its frame ids [1]."""
  slot = frame % cache.frames.shape[0]
  load = lambda a: jax.lax.dynamic_slice_in_dim(a, slot * tokens, tokens, axis=1)
  kv = (jax.tree.map(load, cache.keys), jax.tree.map(load, cache.values))
  return kv, cache.frames[slot, None]


def check_guidance(model, cfg_scale: float):
  """Raises ValueError unless `model` can sample at guidance scale `cfg_scale`."""
  if not cfg_scale >= 0:  # also NaN
    raise ValueError(f"the guidance scale must be a number >= 0, got {cfg_scale}")
  if cfg_scale != 1.0 and model.null_label is None:
    raise ValueError("classifier-free guidance (cfg_scale != 1) needs a condition to guide "
                     "against: this clean unconditional DiT was trained with none (no null "
                     "label, no context tokens), so its guided and unguided predictions "
                     "would be the same; use cfg 1, or train with dit.num_classes > 0")


def make_sampler(model, grid: diffusion.DDIMGrid, *, num_frames: int, s: int,
                 context_frames: int = 0, mode: str = "cached", cfg_scale: float = 1.0,
                 eta: float = 0.0, progress: Optional[Callable[[int], None]] = None):
  """Returns (plan, sample) where the pure, jittable

    sample(variables, key, batch_size, context=None, label=None) -> latents [B, F, L, C]

  runs the AD sampler. `context` holds the first `context_frames` latents [B, c, L, C],
  unit-norm like the model's data (they come out bit-identical); `label` [B] int is the
  class for conditional models. `progress(row)` is called from the device each row
  (e.g. a tqdm update); leave it None inside benchmarks.
  """
  check_guidance(model, cfg_scale)
  if eta < 0:
    raise ValueError(f"eta must be >= 0, got {eta}")
  plan = make_plan(model, grid, num_frames, s, context_frames, mode)
  tokens, channels = model.tokens_per_frame, model.in_channels
  context_timestep = grid.context_timestep

  def sample(variables, key, batch_size: int, context=None, label=None):
    if (context is None) != (context_frames == 0):
      raise ValueError(f"the plan has {context_frames} context frames but context is "
                       f"{'missing' if context is None else 'given'}")
    if label is None:
      label = jnp.full((batch_size,), model.default_label, jnp.int32)
    predict = _denoiser(*dit.unrolled(model, variables), label, cfg_scale,
                        plan.attention_window)
    cache_batch = batch_size * (2 if cfg_scale != 1.0 else 1)
    key_init, key_noise = jax.random.split(key)
    x = layers.normal(key_init, (batch_size, num_frames, tokens, channels), jnp.float32)
    if context_frames:
      x = x.at[:, :context_frames].set(context.astype(jnp.float32))

    def frame_kv(cache, x, first, count):
      """Keys and values of frames [first, first+count), finished (at the context timestep)."""
      window = jax.lax.dynamic_slice_in_dim(x, first, count, axis=1)
      t = jnp.full((batch_size, count), context_timestep, jnp.int32)
      return predict(window, t, first, cache)[1]

    cache = None
    if plan.cache_slots:
      cache = _empty_cache(model, cache_batch, plan.cache_slots, model.dtype)
      # Prefill the context in chunks that never wrap the ring.
      for first in range(0, context_frames, plan.cache_slots):
        count = min(plan.cache_slots, context_frames - first)
        cache = _write(cache, frame_kv(cache, x, first, count), first,
                       first + jnp.arange(count, dtype=jnp.int32), tokens)

    def row(carry, inputs):
      x, cache = carry
      r, start, first_frame, t, alpha, alpha_prev, update, commit = inputs
      if cache is not None:
        # Rows without a commit write their slot's own contents back: the cond only reads
        # the cache, so the write stays in place (a cond returning the cache copies it).
        frame = jnp.maximum(commit, 0)
        kv, ids = jax.lax.cond(commit >= 0, lambda: (frame_kv(cache, x, frame, 1), frame[None]),
                               lambda: _read(cache, frame, tokens))
        cache = _write(cache, kv, frame, ids, tokens)
      window = jax.lax.dynamic_slice_in_dim(x, start, plan.window, axis=1)
      t = jnp.broadcast_to(t, (batch_size, plan.window))
      x0, _ = predict(window, t, first_frame, cache)
      per_frame = lambda a: a[None, :, None, None]
      noise = None
      if eta > 0:
        noise = layers.normal(jax.random.fold_in(key_noise, r), x.shape, x.dtype)
        noise = jax.lax.dynamic_slice_in_dim(noise, start, plan.window, axis=1)
      moved = diffusion.ddim_update(window, x0, per_frame(alpha), per_frame(alpha_prev), eta,
                                    noise)
      window = jnp.where(per_frame(update), moved, window)
      if progress is not None:
        jax.debug.callback(progress, r)
      return (jax.lax.dynamic_update_slice_in_dim(x, window, start, axis=1), cache), None

    xs = (jnp.arange(plan.rows), plan.window_start, plan.first_frame, plan.timesteps,
          plan.alphas, plan.alphas_prev, plan.update_mask, plan.commit_frame)
    (x, _), _ = jax.lax.scan(row, (x, cache), xs)
    return x

  return plan, sample


def normalize_context(latents):
  """Encoder means -> the unit-norm tokens the DiT models (where the authors normalise)."""
  return layers.l2_normalize(jnp.asarray(latents, jnp.float32))
