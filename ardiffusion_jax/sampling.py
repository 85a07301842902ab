"""The AD sampler: asynchronous DDIM over the rows of the AD step matrix, in one `lax.scan`.

Row r of `timesteps.ad_step_matrix` says, for every frame, how many of the S DDIM steps
it has completed and whether it moves in that row. One scan step runs the denoiser,
applies classifier-free guidance in x0 space and moves exactly the frames whose mask is
set (docs/architecture.md says why the cached mode is exact). Two execution modes share
that step:

* **full**: every row evaluates the whole window, the authors' semantics. For a video
  longer than the model's window (`dit.num_frames`) the `official` variant (absolute
  sin-cos positions) slides a window of that many frames exactly as their code does, and
  so does a bidirectional DiT; the causal `clean` variant (temporal RoPE) evaluates every
  frame with a rolling attention window: each frame sees itself and the `num_frames - 1`
  frames before it. Models that are not strictly causal run in this mode only.
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

Self-conditioning (`dit.self_condition`): beside the latents the sampler keeps a store of
estimates, each frame's x̂0 from the last row that moved it: zeros before its first
step, its final x̂0 once it is finished, the latents themselves for context frames. A
frame's estimate changes only where its latent does, so both modes feed every frame
the same one, and the one-frame pass that caches a finished frame reads it too.
"""

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional

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


def default_mode(model) -> str:
  """cached (KV cache) for strictly causal models; the others run in full mode only."""
  return "cached" if model.strictly_causal else "full"


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
  # Past the trained window, models that cannot roll their attention (absolute positions,
  # or every frame seeing every other) slide a window of exactly the trained length.
  sliding = relative or model.temporal_attention == "bidirectional"
  num_rows = step_index.shape[0]
  commit = np.full(num_rows, -1, np.int32)
  cache_slots, attention_window = 0, None if sliding else model_window

  if mode == "full":
    if sliding and num_frames > model_window:
      window = model_window
      starts = _sliding_window_starts(update_mask, step_index, window, num_steps)
    else:
      window, starts = num_frames, np.zeros(num_rows, np.int32)
    first_frame = np.zeros(num_rows, np.int32)
  else:
    if not model.strictly_causal:
      raise ValueError(f"cached sampling needs a strictly causal model, but {model.future_leak}; "
                       f"use mode='full'")
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


def frame_noise(key, batch: int, first, count: int, shape) -> jax.Array:
  """Standard normals [batch, count, *shape] for frames first..first+count-1, frame f
  drawn from `fold_in(key, f)`. A frame's noise does not depend on how many frames are
  drawn with it, so a stream that draws each frame as it enters the window gets the noise
  `sample` draws for the whole video. `first` may be traced; frames below 0 (a stream's
  unused slot before frame 0) draw frame 0's."""
  frames = jnp.maximum(first + jnp.arange(count, dtype=jnp.int32), 0)
  draw = jax.vmap(lambda f: layers.normal(jax.random.fold_in(key, f), (batch,) + tuple(shape)))
  return jnp.moveaxis(draw(frames), 0, 1)


def _denoiser(model, variables, cfg_scale: float, attention_window):
  """The model's output for a window (x̂0, or ε̂ or v̂ as it was trained: `_Steps.run`
  converts), with classifier-free guidance as one doubled batch [unconditional;
  conditional] (and one cache for each half); the conversion is affine in the output
  at a fixed x_t, so guiding it is guiding x̂0. `label` is [B] (one per video) or
  [B, F] (one per frame of the window)."""
  guided = cfg_scale != 1.0

  def predict(x, t, label, first_frame, cache, estimate=None):
    if guided:
      x, t = jnp.concatenate([x, x]), jnp.concatenate([t, t])
      label = jnp.concatenate([jnp.full_like(label, model.null_label), label])
      estimate = None if estimate is None else jnp.concatenate([estimate, estimate])
    out = model.apply(variables, x, t, label, x0_estimate=estimate, first_frame=first_frame,
                      cache=cache, attention_window=attention_window)
    prediction, kv = out if cache is not None else (out, None)
    if guided:
      uncond, cond = jnp.split(prediction, 2)
      prediction = uncond + cfg_scale * (cond - uncond)
    return prediction, kv

  return predict


def _empty_cache(model, batch: int, slots: int, dtype) -> KVCache:
  head_dim = model.hidden_size // model.num_heads
  shape = (batch, slots * model.frame_tokens, model.num_heads, head_dim)
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


class Rows(NamedTuple):
  """Plan rows as a scan consumes them, each [n, ...]: the absolute row index, then the
  `Plan` fields of those rows."""
  row: np.ndarray
  start: np.ndarray
  first_frame: np.ndarray
  timesteps: np.ndarray
  alphas: np.ndarray
  alphas_prev: np.ndarray
  update: np.ndarray
  commit: np.ndarray


def plan_rows(plan: Plan, begin: int, end: int, shift: int = 0) -> Rows:
  """Rows begin..end-1 of `plan`, their window `shift` frames later (an unbounded stream's
  steady chunks repeat one another, a frame on each time)."""
  moved = lambda a: a[begin:end] + shift
  return Rows(np.arange(begin, end, dtype=np.int32), moved(plan.window_start),
              moved(plan.first_frame), plan.timesteps[begin:end], plan.alphas[begin:end],
              plan.alphas_prev[begin:end], plan.update_mask[begin:end],
              np.where(plan.commit_frame[begin:end] >= 0, moved(plan.commit_frame), -1))


def _frames(store, first, count: int):
  """Frames first..first+count-1 (store positions) of a store [B, n, ...]; None stays None
  (the estimates of a model without self-conditioning)."""
  return None if store is None else jax.lax.dynamic_slice_in_dim(store, first, count, axis=1)


def _label_slice(label, first, count: int):
  """Labels of store frames first..first+count-1: per-video labels [B] as they are,
  per-frame ones [B, n] sliced."""
  return label if label.ndim == 1 else jax.lax.dynamic_slice_in_dim(label, first, count, axis=1)


@dataclasses.dataclass(frozen=True)
class _Steps:
  """The AD sampler's work on a latent store, shared by `make_sampler` (one scan over the
  whole video) and `make_stream` (one scan per finished frame over a short buffer), so
  both compute the same numbers. A store x [B, n, L, C] holds frames base..base+n-1 and
  its labels are [B] or [B, n]; `estimate`, the self-conditioning x̂0 of the same frames,
  is a store like x (None for a model without self-conditioning)."""
  model: Any
  grid: diffusion.DDIMGrid
  plan: Plan
  cfg_scale: float
  eta: float
  progress: Optional[Callable[[int], None]]
  # What the model outputs ('x0', 'eps' or 'v'; the run's diffusion.parameterization):
  # every row turns it into x̂0 at each frame's current level before the DDIM update.
  parameterization: str

  def predictor(self, variables):
    return _denoiser(*dit.unrolled(self.model, variables), self.cfg_scale,
                     self.plan.attention_window)

  def empty_cache(self, batch_size: int) -> Optional[KVCache]:
    if not self.plan.cache_slots:
      return None
    guided = self.cfg_scale != 1.0
    return _empty_cache(self.model, batch_size * (2 if guided else 1), self.plan.cache_slots,
                        self.model.dtype)

  def initial_estimate(self, x, context_frames: int):
    """The estimate store for a store x whose first `context_frames` frames are context
    (their own estimate) and the rest not started (zeros); None without self-conditioning."""
    if not self.model.self_condition:
      return None
    return jnp.zeros_like(x).at[:, :context_frames].set(x[:, :context_frames])

  def frame_kv(self, predict, cache, x, estimate, base, label, first, count: int):
    """Keys and values of frames [first, first+count), finished (at the context timestep)."""
    t = jnp.full((x.shape[0], count), self.grid.context_timestep, jnp.int32)
    return predict(_frames(x, first - base, count), t, _label_slice(label, first - base, count),
                   first, cache, _frames(estimate, first - base, count))[1]

  def prefill(self, predict, cache, x, label, count: int) -> KVCache:
    """Writes frames 0..count-1 (the context; the store starts at frame 0) in chunks that
    never wrap the ring."""
    tokens, slots = self.model.frame_tokens, self.plan.cache_slots
    estimate = self.initial_estimate(x, count)
    for first in range(0, count, slots):
      n = min(slots, count - first)
      kv = self.frame_kv(predict, cache, x, estimate, 0, label, first, n)
      cache = _write(cache, kv, first, first + jnp.arange(n, dtype=jnp.int32), tokens)
    return cache

  def run(self, predict, key_noise, x, estimate, base, label, cache, rows: Rows):
    """Runs `rows` over the store (and its estimates); returns (x, estimate, cache)."""
    tokens, window_size = self.model.frame_tokens, self.plan.window
    batch_size = x.shape[0]
    per_frame = lambda a: a[None, :, None, None]
    paste = lambda a, window, start: jax.lax.dynamic_update_slice_in_dim(a, window, start - base,
                                                                         axis=1)

    def row(carry, inputs):
      x, estimate, cache = carry
      r, start, first_frame, t, alpha, alpha_prev, update, commit = inputs
      if cache is not None:
        # Rows without a commit write their slot's own contents back: the cond only reads
        # the cache, so the write stays in place (a cond returning the cache copies it).
        frame = jnp.maximum(commit, 0)
        kv, ids = jax.lax.cond(
            commit >= 0, lambda: (self.frame_kv(predict, cache, x, estimate, base, label, frame,
                                                1), frame[None]),
            lambda: _read(cache, frame, tokens))
        cache = _write(cache, kv, frame, ids, tokens)
      window = _frames(x, start - base, window_size)
      t = jnp.broadcast_to(t, (batch_size, window_size))
      window_estimate = _frames(estimate, start - base, window_size)
      prediction, _ = predict(window, t, _label_slice(label, start - base, window_size),
                              first_frame, cache, window_estimate)
      x0 = diffusion.prediction_to_x0(prediction, window, per_frame(alpha),
                                      self.parameterization)
      noise = None
      if self.eta > 0:
        noise = frame_noise(jax.random.fold_in(key_noise, r), batch_size, start, window_size,
                            x.shape[2:])
      moved = diffusion.ddim_update(window, x0, per_frame(alpha), per_frame(alpha_prev),
                                    self.eta, noise)
      x = paste(x, jnp.where(per_frame(update), moved, window), start)
      if estimate is not None:
        estimate = paste(estimate, jnp.where(per_frame(update), x0, window_estimate), start)
      if self.progress is not None:
        jax.debug.callback(self.progress, r)
      return (x, estimate, cache), None

    (x, estimate, cache), _ = jax.lax.scan(row, (x, estimate, cache),
                                           tuple(jnp.asarray(a) for a in rows))
    return x, estimate, cache


def _check_settings(model, cfg_scale: float, eta: float, parameterization: str):
  """What `make_sampler` and `make_stream` refuse before anything is traced."""
  check_guidance(model, cfg_scale)
  if not eta >= 0:
    raise ValueError(f"eta must be >= 0, got {eta}")
  if parameterization not in diffusion.PARAMETERIZATIONS:
    raise diffusion.unknown_parameterization(parameterization)


def make_sampler(model, grid: diffusion.DDIMGrid, *, num_frames: int, s: int,
                 context_frames: int = 0, mode: str = "cached", cfg_scale: float = 1.0,
                 eta: float = 0.0, progress: Optional[Callable[[int], None]] = None,
                 parameterization: str = "x0"):
  """Returns (plan, sample) where the pure, jittable

    sample(variables, key, batch_size, context=None, label=None) -> latents [B, F, L, C]

  runs the AD sampler. `context` holds the first `context_frames` latents [B, c, L, C],
  unit-norm like the model's data (they come out bit-identical); `label` [B] int is the
  class for conditional models. `progress(row)` is called from the device each row
  (e.g. a tqdm update); leave it None inside benchmarks. `parameterization` is what the
  model was trained to output (the run's `diffusion.parameterization`).
  """
  _check_settings(model, cfg_scale, eta, parameterization)
  plan = make_plan(model, grid, num_frames, s, context_frames, mode)
  steps = _Steps(model, grid, plan, cfg_scale, eta, progress, parameterization)
  frame_shape = (model.tokens_per_frame, model.in_channels)

  def sample(variables, key, batch_size: int, context=None, label=None):
    if (context is None) != (context_frames == 0):
      raise ValueError(f"the plan has {context_frames} context frames but context is "
                       f"{'missing' if context is None else 'given'}")
    if label is None:
      label = jnp.full((batch_size,), model.default_label, jnp.int32)
    predict = steps.predictor(variables)
    key_init, key_noise = jax.random.split(key)
    x = frame_noise(key_init, batch_size, 0, num_frames, frame_shape)
    if context_frames:
      x = x.at[:, :context_frames].set(context.astype(jnp.float32))
    cache = steps.empty_cache(batch_size)
    if cache is not None:
      cache = steps.prefill(predict, cache, x, label, context_frames)
    x, _, _ = steps.run(predict, key_noise, x, steps.initial_estimate(x, context_frames), 0,
                        label, cache, plan_rows(plan, 0, plan.rows))
    return x

  return plan, sample


class StreamState(NamedTuple):
  """What a stream carries between chunks, all on the device and all of a fixed size:
  the buffer of latents (frames base..base+window, the window and the frame before it),
  their self-conditioning estimates, their labels, the ring KV cache and the keys."""
  x: jax.Array  # [B, window + 1, L, C]
  estimate: Optional[jax.Array]  # like x; None for a model without self-conditioning
  label: jax.Array  # [B, window + 1], or [B] for a per-video label
  cache: Optional[KVCache]
  base: jax.Array  # int32: the absolute frame of x[:, 0]
  key_init: jax.Array
  key_noise: jax.Array


@dataclasses.dataclass(frozen=True)
class Stream:
  """The AD sampler cut at the rows where frames finish (`make_stream`).

  Chunk 0 runs rows 0..S-1, after which frame c (the first generated one) is final; chunk
  j >= 1 runs the s rows after which frame c + j is final. At s = 0 there is one chunk,
  after which every frame is. `start` and `advance` are pure and jittable; `rows(j)`,
  `base(j)` and `finished(j)` are the host's bookkeeping.

  The AD plan is shift-invariant away from the video's ends: row r + s at frame f + 1 is
  row r at frame f. So the plan held is a short template (`_template_frames`), not the
  whole video's [R, F] matrices, which would grow with the product of the two: chunk 1
  repeats a frame on for every steady chunk, and the template's last chunks, moved to
  the video's end, are the finite video's last ones (where its window stops moving).
  """
  plan: Plan  # the whole video's when it is no longer than the template, else the template
  max_frames: Optional[int]
  context_frames: int
  s: int
  steps: _Steps

  @property
  def window(self) -> int:
    return self.plan.window

  @property
  def num_chunks(self) -> Optional[int]:
    """None for an unbounded stream."""
    if self.max_frames is None:
      return None
    return 1 if self.s == 0 else self.max_frames - self.context_frames

  def _row_range(self, j: int):
    num_steps = self.steps.grid.num_steps
    return (0, num_steps) if j == 0 else (num_steps + (j - 1) * self.s, num_steps + j * self.s)

  def rows(self, j: int) -> Rows:
    """The plan rows of chunk j (numpy): the held plan's chunk j, or a template chunk
    moved `shift` frames (and s rows a frame) on."""
    if self.plan.num_frames == self.max_frames or j <= 1:
      source, shift = j, 0
    else:
      # Chunks 2..beyond repeat chunk 1; past them come the template's own later chunks.
      beyond = math.inf if self.max_frames is None else self.max_frames - self.plan.num_frames
      source, shift = (1, j - 1) if j <= beyond else (j - beyond, beyond)
    rows = plan_rows(self.plan, *self._row_range(source), shift=shift)
    return rows._replace(row=rows.row + shift * self.s)

  def base(self, j: int) -> int:
    """The absolute frame of the buffer's first slot during chunk j."""
    return int(self.rows(j).start[0]) - 1

  def finished(self, j: int) -> range:
    """The frames that are final after chunk j."""
    if self.s == 0:
      return range(self.context_frames, self.max_frames)
    return range(self.context_frames + j, self.context_frames + j + 1)

  def start(self, variables, key, batch_size: int, label, context=None,
            context_label=None) -> StreamState:
    """The state before chunk 0. `label`: [B] per video, or [B, window + 1] per frame for
    the buffer's frames c-1..c+window-1; `context` [B, c, L, C] with `context_label` [B]
    or [B, c]."""
    c, model = self.context_frames, self.steps.model
    if (context is None) != (c == 0):
      raise ValueError(f"the stream has {c} context frames but context is "
                       f"{'missing' if context is None else 'given'}")
    key_init, key_noise = jax.random.split(key)
    frame_shape = (model.tokens_per_frame, model.in_channels)
    x = frame_noise(key_init, batch_size, c - 1, self.window + 1, frame_shape)
    cache = self.steps.empty_cache(batch_size)
    if c:
      context = context.astype(jnp.float32)
      x = x.at[:, 0].set(context[:, -1])
      cache = self.steps.prefill(self.steps.predictor(variables), cache, context,
                                 context_label, c)
    # The buffer's slot 0 is the last context frame (its own estimate), or a slot before
    # frame 0 that nothing reads.
    estimate = self.steps.initial_estimate(x, 1 if c else 0)
    return StreamState(x, estimate, label, cache, jnp.int32(c - 1), key_init, key_noise)

  def advance(self, variables, state: StreamState, rows: Rows, base, entering_label=None):
    """Runs one chunk: first moves the buffer to `base` (by at most one frame: the frame
    base + window enters as noise, with `entering_label` [B] if labels are per frame),
    then the rows. Returns the new state; the finished frames are `state.x[:, f - base]`."""
    x, estimate, label = state.x, state.estimate, state.label
    moved = base - state.base
    entering = frame_noise(state.key_init, x.shape[0], base + self.window, 1, x.shape[2:])
    shift = lambda a, new: jnp.where(moved > 0, jnp.concatenate([a[:, 1:], new], axis=1), a)
    x = shift(x, entering)
    if estimate is not None:  # the entering frame has not started: no estimate yet
      estimate = shift(estimate, jnp.zeros_like(entering))
    if label.ndim == 2:
      label = shift(label, entering_label[:, None])
    predict = self.steps.predictor(variables)
    x, estimate, cache = self.steps.run(predict, state.key_noise, x, estimate, base, label,
                                        state.cache, rows)
    return StreamState(x, estimate, label, cache, jnp.asarray(base, jnp.int32), state.key_init,
                       state.key_noise)


def _template_frames(model, grid: diffusion.DDIMGrid, s: int, context_frames: int) -> int:
  """The frames of a stream's template plan: enough that its chunk 1 runs before the
  window stops at the template's end and its ring is the model's full window."""
  return max(context_frames + math.ceil(grid.num_steps / s) + 2, model.num_frames)


def make_stream(model, grid: diffusion.DDIMGrid, *, s: int, context_frames: int = 0,
                max_frames: Optional[int] = None, cfg_scale: float = 1.0,
                eta: float = 0.0, parameterization: str = "x0") -> Stream:
  """The cached AD sampler as a stream of chunks, one per finished frame (see `Stream`).

  With `max_frames` the chunks follow `make_sampler`'s plan for that many frames, so the
  frames are bit-identical to `sample`'s on the same key. Without it the stream is
  unbounded: past the first chunk every chunk is the one before moved a frame on. Either
  way the host holds a template plan of a few windows, not the video's, and the device
  a ring cache, so memory does not grow with the length. Raises ValueError for what
  cannot stream.
  """
  _check_settings(model, cfg_scale, eta, parameterization)
  num_steps = grid.num_steps
  if not 0 <= s <= num_steps:
    raise ValueError(f"streaming needs 1 <= s <= S = {num_steps} (s = 0 yields the whole "
                     f"window at once), got s = {s}")
  if not model.strictly_causal:
    raise ValueError(f"streaming needs a strictly causal DiT, but {model.future_leak}: a "
                     f"finished frame would still change as later ones are denoised; use "
                     f"`sample` in full mode")
  if max_frames is None:
    if s == 0:
      raise ValueError("s = 0 denoises every frame together, so nothing is final before the "
                       "end: give max_frames (the stream then yields the whole window at once)")
    if model.position == "sincos_1d":
      raise ValueError(f"an unbounded stream needs temporal RoPE (the clean variant): the "
                       f"official sin-cos table covers {model.num_frames} frames; give "
                       f"max_frames <= {model.num_frames}")
  elif max_frames <= context_frames:
    raise ValueError(f"max_frames ({max_frames}) must exceed the {context_frames} context "
                     f"frames")
  frames = max_frames  # s = 0: one chunk, the whole window
  if s:
    template = _template_frames(model, grid, s, context_frames)
    frames = template if max_frames is None else min(max_frames, template)
  plan = make_plan(model, grid, frames, s, context_frames, "cached")
  if plan.cache_slots and context_frames > plan.cache_slots:
    raise ValueError(f"a context of {context_frames} frames is longer than the stream's ring "
                     f"of {plan.cache_slots} frames; pass its last {plan.cache_slots} frames "
                     f"(`sample` takes longer contexts)")
  return Stream(plan, max_frames, context_frames, s,
                _Steps(model, grid, plan, cfg_scale, eta, None, parameterization))


def normalize_context(latents):
  """Encoder means -> the unit-norm tokens the DiT models (where the authors normalise)."""
  return layers.l2_normalize(jnp.asarray(latents, jnp.float32))
