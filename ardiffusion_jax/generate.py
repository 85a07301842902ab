"""From checkpoints to videos: load a trained DiT and its AR-VAE, sample with the AD
scheduler, decode, and write mp4 / GIF / npz. `ardiff sample`, the demo and the Colab
notebooks all go through `Generator`."""

import dataclasses
import functools
import hashlib
import json
import pathlib
import time
import warnings
from typing import Any, Iterator, Mapping, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from ardiffusion_jax import config as config_lib
from ardiffusion_jax import diffusion, runs, sampling, viz
from ardiffusion_jax.data import video as video_lib
from ardiffusion_jax.errors import ArgumentError, CheckpointError, ConfigError, DataError
from ardiffusion_jax.models import ar_vae, dit

LATENTS_INFO = "latents_info.json"  # written by `ardiff extract` next to the shards


ENCODER_PARAMS = ("encoder", "latent_tokens")  # what maps pixels to latents (ARVAE.encode)


def encoder_fingerprint(params) -> str:
  """A hash of the weights that make latents. A stage-3 finetune keeps them frozen, so
  it decodes the same latents; any other AR-VAE makes latents of its own."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path({k: params[k] for k in ENCODER_PARAMS}):
    leaf = np.asarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape}".encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()[:16]


def latents_info(dit_config) -> dict:
  """What `ardiff extract` recorded next to the DiT's training latents ({} if nothing)."""
  info = pathlib.Path(dit_config.train.get("latents_dir", "") or ".") / LATENTS_INFO
  return json.loads(info.read_text()) if info.is_file() else {}


def _check_same_encoder(vae_ckpt, vae_params, info: dict):
  """Refuses a VAE whose encoder did not make the DiT's latents: it would decode them
  into noise without a word."""
  recorded = info.get("vae_encoder_fingerprint")
  if recorded and recorded != encoder_fingerprint(vae_params):
    raise CheckpointError(
        f"{vae_ckpt}: this AR-VAE's encoder did not make the DiT's training latents (they "
        f"came from {info.get('vae_checkpoint')}, encoder {recorded}), so it cannot decode "
        f"the samples; pass that run (or its stage-3 finetune) as --vae-ckpt")


class StreamFrame(NamedTuple):
  """One final frame of `Generator.stream`."""
  index: int  # absolute: context frames come first
  latent: np.ndarray  # [L, C], the sampler's unit-norm tokens
  pixels: Optional[np.ndarray]  # [H, W, 3] uint8, None without decoding


def _to_uint8(pixels) -> np.ndarray:
  return np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)


LabelSchedule = Union[None, int, Mapping[int, int]]


def parse_label_schedule(text: str) -> dict:
  """'0:1,64:3' -> {0: 1, 64: 3}: from frame 0 class 1, from frame 64 class 3."""
  schedule = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    frame, sep, label = part.partition(":")
    try:
      if not sep:
        raise ValueError
      schedule[int(frame)] = int(label)
    except ValueError:
      raise ArgumentError("label_schedule", f"expected FRAME:CLASS pairs such as '0:1,64:3', "
                                            f"got {part!r}") from None
  return schedule


@dataclasses.dataclass
class Generator:
  """A trained DiT (EMA weights by default) and, when known, the AR-VAE that decodes it."""
  config: Any
  model: dit.DiT
  variables: dict
  grid: diffusion.DDIMGrid
  vae: Optional[ar_vae.ARVAE] = None
  vae_params: Any = None
  resolution: Optional[int] = None
  # Frames the temporally causal decoder sees when it streams: its training clip length.
  vae_window: int = 1

  @classmethod
  def from_checkpoint(cls, ckpt, vae_ckpt=None, use_ema: bool = True, sampling_steps=None):
    """`ckpt`: a DiT run folder or its checkpoints folder. `vae_ckpt` defaults to the
    run that encoded the DiT's latents; without one, only latents can be produced."""
    run = runs.load_run(ckpt, "dit", use_ema=use_ema)
    config = run.config
    steps = config.diffusion.sampling_steps
    if sampling_steps is not None:
      try:
        steps = config_lib.check_sampling_steps(sampling_steps, config.diffusion)
      except ConfigError as error:  # the argument, not the run's config, is wrong
        raise ArgumentError("sampling_steps", error.reason) from error
    grid = diffusion.ddim_grid(config.diffusion.ddim_grid,
                                diffusion.alphas_from_config(config.diffusion), steps)
    generator = cls(config, run.model(), run.variables, grid)
    info = latents_info(config)
    vae_ckpt = vae_ckpt or info.get("vae_checkpoint")
    if vae_ckpt:
      vae = runs.load_run(vae_ckpt, "vae")
      generator.vae, generator.vae_params = vae.model(), vae.variables["params"]
      _check_same_encoder(vae_ckpt, generator.vae_params, info)
      generator.resolution = vae.config.vae.image_size
      if generator.vae.temporal_causal:
        generator.vae_window = int(vae.config.vae_train.clip_frames)
    return generator

  @property
  def default_mode(self) -> str:
    """cached (KV cache) for strictly causal models; the others run only in the authors'
    full mode, and a warning says why."""
    mode = sampling.default_mode(self.model)
    if mode == "full":
      warnings.warn(f"sampling in full mode (each row evaluates the whole window, no KV "
                    f"cache): this DiT is not strictly causal, {self.model.future_leak}")
    return mode

  def sampler(self, num_frames: int, s: int, *, context_frames: int = 0, mode: str = "cached",
              cfg_scale: float = 1.0, eta: Optional[float] = None, progress=None):
    """(plan, jitted sample(variables, key, batch_size, context, label))."""
    eta = self.config.diffusion.eta if eta is None else eta
    plan, sample = sampling.make_sampler(self.model, self.grid, num_frames=num_frames, s=s,
                                         context_frames=context_frames, mode=mode,
                                         cfg_scale=cfg_scale, eta=eta, progress=progress,
                                         parameterization=self.config.diffusion.parameterization)
    return plan, jax.jit(sample, static_argnums=2)

  def sample_latents(self, num: int, num_frames: int, s: int, *, batch_size: int = 8,
                     seed: int = 0, label=None, cfg_scale: float = 1.0, context=None,
                     mode: Optional[str] = None, eta=None, show_progress: bool = True):
    """Samples `num` latent videos [num, F, L, C]; returns (latents, timing dict).

    `context`: unit-norm latents [c, L, C] (one clip, continued in every sample) or
    [num, c, L, C]. `label`: an int or [num] ints. Timing separates compilation from the
    sampling itself.
    """
    mode = mode or self.default_mode
    label = self._labels(label, num)
    context_frames = 0 if context is None else np.shape(context)[-3]
    if context is not None:
      context = np.broadcast_to(np.asarray(context, np.float32),
                                (num,) + np.shape(context)[-3:])
    bar = None  # the progress callback reads it once sampling runs
    plan, sample = self.sampler(num_frames, s, context_frames=context_frames, mode=mode,
                                cfg_scale=cfg_scale, eta=eta,
                                progress=(lambda _: bar.update()) if show_progress else None)
    bar = tqdm.tqdm(total=plan.rows * -(-num // batch_size), desc=f"sample s={s}",
                    unit="row", disable=not show_progress)
    outputs, compiled, compile_seconds, run_seconds = [], {}, 0.0, 0.0
    key = jax.random.key(seed)
    for first in range(0, num, batch_size):
      count = min(batch_size, num - first)
      args = (self.variables, jax.random.fold_in(key, first), count,
              None if context is None else jnp.asarray(context[first:first + count]),
              None if label is None else jnp.asarray(label[first:first + count]))
      if count not in compiled:  # one compilation per batch size (the last may be smaller)
        started = time.perf_counter()
        compiled[count] = sample.lower(*args).compile()
        compile_seconds += time.perf_counter() - started
      started = time.perf_counter()
      outputs.append(np.asarray(jax.block_until_ready(compiled[count](*args[:2], *args[3:]))))
      run_seconds += time.perf_counter() - started
    bar.close()
    timing = {"rows": plan.rows, "window": plan.window, "compile_seconds": compile_seconds,
              "sample_seconds": run_seconds, "seconds_per_video": run_seconds / num}
    return np.concatenate(outputs), timing

  def stream(self, s: int, label: LabelSchedule = None, cfg: float = 1.0, context=None,
             max_frames: Optional[int] = None, *, seed: int = 0, eta=None,
             decode: bool = True) -> Iterator[StreamFrame]:
    """Yields each frame of one video as soon as it is final, as a `StreamFrame`.

    The cached AD sampler runs in chunks, one per finished frame (`sampling.make_stream`):
    one host round trip and one decode per frame, the same compiled chunks for any length,
    and device memory that does not grow with the number of frames. With `max_frames` the
    video is bit-identical to `sample_latents(1, max_frames, s, seed=seed, ...)`; without
    it the stream runs until the caller stops. At s = 0 every frame finishes at the last
    row, so the whole window comes at once (and a warning says so).

    `label`: a class, or a schedule {frame: class} (from that frame on, until the next
    key; earlier frames get the unconditional label). A switch at frame k leaves every
    frame before k as it would be without it. `context`: unit-norm latents [c, L, C]
    (`encode` / `context_from_file` make them); they are yielded first, unchanged.
    Pixels come from the AR-VAE: frame f is decoded from latents <= f only, from the
    last `vae_window` of them (1 for a per-frame decoder).
    """
    if decode:
      self._require_vae()
    label_of = self._label_schedule(label)
    context_frames = 0 if context is None else int(np.shape(context)[0])
    eta = self.config.diffusion.eta if eta is None else eta
    try:
      stream, start, advance = self._stream_program(s, context_frames, max_frames, cfg, eta)
    except ValueError as error:  # a setting that cannot stream, with the constraint named
      raise ArgumentError("stream", str(error)) from error
    if s == 0:
      warnings.warn("s = 0 is synchronous: every frame finishes in the last row, so the "
                    "stream yields the whole window at once", stacklevel=2)
    per_frame = isinstance(label, Mapping)
    labels = lambda frames: np.asarray([[label_of(f) for f in frames]], np.int32)
    window = stream.window
    key = jax.random.fold_in(jax.random.key(seed), 0)  # sample_latents' first batch
    if per_frame:
      buffer_label = labels(range(context_frames - 1, context_frames + window))
      context_label = labels(range(context_frames))
    else:
      buffer_label = context_label = labels([0])[:, 0]
    context_array = None
    if context is not None:
      context_array = jnp.asarray(np.asarray(context, np.float32)[None])
    state = start(self.variables, key, 1, jnp.asarray(buffer_label), context_array,
                  None if context is None else jnp.asarray(context_label))
    decoder = self._frame_decoder() if decode else None
    for f in range(context_frames):
      latent = np.asarray(context_array[0, f])
      yield StreamFrame(f, latent, decoder(latent) if decoder else None)

    def run(chunk, state):
      """Dispatches chunk `chunk` (asynchronously) -> (its state, its buffer's base)."""
      base = stream.base(chunk)
      entering = labels([base + window])[:, 0] if per_frame else None
      return advance(self.variables, state, stream.rows(chunk), np.int32(base),
                     None if entering is None else jnp.asarray(entering)), base

    chunk, (state, base) = 0, run(0, state)
    while True:
      last = stream.num_chunks is not None and chunk + 1 >= stream.num_chunks
      # The next chunk goes to the device before this one's frame is read and decoded,
      # so the device denoises while the host decodes and the caller consumes.
      following = None if last else run(chunk + 1, state)
      buffer = np.asarray(state.x)
      for f in stream.finished(chunk):
        latent = buffer[0, f - base]
        yield StreamFrame(f, latent, decoder(latent) if decoder else None)
      if last:
        return
      chunk, (state, base) = chunk + 1, following

  def _stream_program(self, s, context_frames, max_frames, cfg, eta):
    """(Stream, jitted start, jitted advance) for these settings. The jitted functions
    depend only on what is static in a chunk (the rows are arguments), so streams that
    agree on it share them: a second stream, or a longer one, compiles nothing."""
    stream = sampling.make_stream(self.model, self.grid, s=s, context_frames=context_frames,
                                  max_frames=max_frames, cfg_scale=cfg, eta=eta,
                                  parameterization=self.config.diffusion.parameterization)
    plan = stream.plan
    static = (s, context_frames, float(cfg), float(eta), plan.window, plan.cache_slots,
              plan.attention_window)
    programs = self.__dict__.setdefault("_stream_programs", {})
    if static not in programs:
      programs[static] = (jax.jit(stream.start, static_argnums=2), jax.jit(stream.advance))
    return (stream,) + programs[static]

  def _label_schedule(self, label):
    """frame -> class for `stream`, validated against the model."""
    if not isinstance(label, Mapping):
      constant = self.model.default_label if label is None else int(self._labels(label, 1)[0])
      return lambda frame: constant
    if not label:
      raise ArgumentError("label_schedule", "the schedule is empty")
    if min(label) < 0:
      raise ArgumentError("label_schedule", f"frames must be >= 0, got {sorted(label)}")
    if self.model.context_tokens:
      raise ArgumentError("label_schedule", "this DiT conditions through context tokens, one "
                                            "label per video, so it cannot switch class; "
                                            "give one label")
    self._labels(np.asarray(list(label.values())), len(label))
    keys = sorted(label)
    null = self.model.default_label
    return lambda frame: next((label[k] for k in reversed(keys) if k <= frame), null)

  def _frame_decoder(self):
    """latent [L, C] of the next frame -> its uint8 pixels [H, W, 3] (`_decode_frame`
    over the latents seen so far)."""
    _, decode_frame, _ = self._vae_fns
    history = np.zeros((self.vae_window, self.model.tokens_per_frame, self.model.in_channels),
                       np.float32)
    seen = 0

    def decode_next(latent):
      nonlocal seen
      position = min(seen, self.vae_window - 1)
      if seen >= self.vae_window:
        history[:-1] = history[1:]
      history[position] = latent
      seen += 1
      return _to_uint8(np.asarray(decode_frame(jnp.asarray(history), position)))

    return decode_next

  def _labels(self, label, num):
    if label is None:
      return None
    if not self.model.num_classes:
      raise ArgumentError("label", "this DiT is unconditional (dit.num_classes = 0)")
    label = np.broadcast_to(np.asarray(label, np.int32), (num,))
    limit = self.model.num_classes + (0 if self.model.context_tokens else -1)
    if label.min() < 0 or label.max() > limit:
      raise ArgumentError("label", f"labels must be in [0, {limit}], got {label.tolist()}")
    return label

  def _require_vae(self):
    if self.vae is None:
      raise ArgumentError("vae_ckpt", "no AR-VAE is known for this DiT: name the run that "
                                      "encoded its training latents")

  @functools.cached_property
  def _vae_fns(self):
    """(decode_clips, decode_frame, encode), jitted once per Generator: callers decode
    batch after batch and encode clip after clip, and a fresh jit each call would compile
    each time.

    decode_frame(window [K, L, C], position) decodes the frame at `position` of a window
    of K = `vae_window` latents (the frames after it are padding: a causal decoder's
    output ignores them). `stream` calls it frame by frame and `decode` maps it over the
    frames, so both give the same pixels bit for bit; a batched decoder call would round
    differently. decode_clips([N, F, L, C]) is the temporally causal decoder over whole
    clips, which `decode` uses within its first window.
    """
    self._require_vae()
    variables = {"params": self.vae_params}
    decode_clips = lambda z: self.vae.apply(variables, z, method=ar_vae.ARVAE.decode)
    decode_frame = lambda window, position: jax.lax.dynamic_index_in_dim(
        decode_clips(window[None])[0], position, keepdims=False)
    encode = jax.jit(lambda video: self.vae.apply(variables, video,
                                                  method=ar_vae.ARVAE.encode)[0])
    return jax.jit(decode_clips), jax.jit(decode_frame), encode

  @functools.cached_property
  def _decode_windows(self):
    """windows [n, K, L, C] -> the last frame of each, [n, H, W, 3], one frame at a time."""
    _, decode_frame, _ = self._vae_fns
    last = self.vae_window - 1
    return jax.jit(lambda windows: jax.lax.map(lambda w: decode_frame(w, last), windows))

  def decode(self, latents, batch_size: int = 4) -> np.ndarray:
    """Latents [N, F, L, C] -> uint8 videos [N, F, H, W, 3] (the decoder normalises tokens).

    Frame f comes from latents <= f, as `stream` decodes it: a per-frame decoder frame by
    frame (the same pixels as the stream, bit for bit); a temporally causal one over the
    whole clip within its first `vae_window` frames, and from the last `vae_window`
    latents after that (the clip length it was trained on).
    """
    decode_clips, _, _ = self._vae_fns
    latents = np.asarray(latents, np.float32)
    num, frames = latents.shape[:2]
    window = self.vae_window
    videos = []
    for first in range(0, num, batch_size):
      chunk = latents[first:first + batch_size]
      parts = []
      if window > 1:
        parts.append(np.asarray(decode_clips(jnp.asarray(chunk[:, :window]))))
      if frames > window - 1 and (window == 1 or frames > window):
        begin = 0 if window == 1 else window
        windows = np.stack([chunk[:, f - window + 1:f + 1] for f in range(begin, frames)], 1)
        flat = windows.reshape((-1,) + windows.shape[2:])
        pixels = np.asarray(self._decode_windows(jnp.asarray(flat)))
        parts.append(pixels.reshape((len(chunk), frames - begin) + pixels.shape[1:]))
      videos.append(np.concatenate(parts, axis=1))
    return _to_uint8(np.concatenate(videos))

  def encode(self, video) -> np.ndarray:
    """uint8 video [F, H, W, 3] at the VAE's resolution -> unit-norm latents [F, L, C]."""
    _, _, encode = self._vae_fns
    mean = encode(jnp.asarray(video, jnp.float32)[None] / 255.0)
    return np.asarray(sampling.normalize_context(mean[0]))

  def context_from_file(self, path, max_frames: int) -> np.ndarray:
    """Continuation context from a video file (encoded) or an .npz of latents."""
    path = pathlib.Path(path)
    if path.suffix == ".npz":
      with np.load(path) as data:
        if "latents" not in data:
          raise DataError(f"{path} has no 'latents' array (ardiff sample writes one)")
        latents = data["latents"]
      latents = latents[0] if latents.ndim == 4 else latents
      expected = (self.model.tokens_per_frame, self.model.in_channels)
      if latents.ndim != 3 or latents.shape[1:] != expected:
        raise DataError(f"{path}: latents of shape {latents.shape}, expected [F, *{expected}]")
      return np.asarray(sampling.normalize_context(latents[:max_frames]))
    self._require_vae()
    frames = video_lib.read_video(path, max_frames=max_frames)
    return self.encode(video_lib.resize_center_crop(frames, self.resolution))


def write_outputs(out_dir, videos, latents, settings: dict, fps: int = 8,
                  grid_videos: Optional[int] = None) -> dict:
  """mp4 per sample, a GIF grid (of the first `grid_videos`; default all), the latents as
  npz and the settings as JSON."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  files = []
  if videos is not None:
    files = [video_lib.write_video(out / f"sample_{i:03d}.mp4", v, fps).name
             for i, v in enumerate(videos)]
    scale = max(1, 128 // videos.shape[2])
    viz.write_gif(out / "grid.gif", viz.video_grid(videos[:grid_videos]), fps=fps, scale=scale)
  np.savez(out / "latents.npz", latents=latents,
           **{k: np.asarray(v) for k, v in settings.items() if isinstance(v, (int, float))})
  summary = dict(settings, videos=files, grid="grid.gif" if files else None,
                 latents="latents.npz")
  (out / "sample.json").write_text(json.dumps(summary, indent=2))
  return summary
