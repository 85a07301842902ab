"""Streaming: `sampling.make_stream` and `Generator.stream` give `sample`'s frames bit for
bit, chunk by chunk, in constant memory; label switches leave earlier frames alone; and
what cannot stream is refused with the constraint named."""

import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ardiffusion_jax import cli, diffusion, generate, sampling
from ardiffusion_jax.data.video import read_video, write_video
from ardiffusion_jax.errors import ArgumentError
from ardiffusion_jax.models import ar_vae, dit
from tests import support

STEPS = 6
TOKENS = 4


def _grid():
  alphas = diffusion.alphas_cumprod(diffusion.beta_schedule("scaled_linear", 1000, 1e-4, 0.02))
  return diffusion.ddim_grid("clean", alphas, STEPS)


def _model(variant="clean", num_frames=8, num_classes=0, **overrides):
  return dit.dit_from_config(ml_collections.ConfigDict(dict(
      variant=variant, size="tiny", num_frames=num_frames, tokens_per_frame=TOKENS,
      in_channels=4, num_classes=num_classes, context_dim=16, **overrides)))


def _config(parameterization="x0"):
  return ml_collections.ConfigDict(dict(diffusion=dict(eta=0.0,
                                                       parameterization=parameterization)))


def _generator(num_frames=8, num_classes=0, vae=True, temporal_frames=0,
               parameterization="x0", **overrides):
  model = _model(num_frames=num_frames, num_classes=num_classes, **overrides)
  variables = support.randomised(model, collections=("params",))
  config = _config(parameterization)
  generator = generate.Generator(config, model, variables, _grid())
  if vae:
    autoencoder = support.tiny(ar_vae, ar_vae.ARVAE, "clean", image_size=16, num_latent_tokens=TOKENS,
                               token_dim=4, temporal_causal=bool(temporal_frames))
    generator.vae = autoencoder
    generator.vae_params = support.randomised(autoencoder, scale=0.02)["params"]
    generator.resolution = 16
    generator.vae_window = temporal_frames or 1
  return generator


def _context(frames, seed=4):
  return np.asarray(sampling.normalize_context(
      jax.random.normal(jax.random.key(seed), (frames, TOKENS, 4))))


def _streamed(generator, s, frames, unbounded=False, **kwargs):
  """The first `frames` frames of a stream of that many (or of an unbounded one)."""
  stream = generator.stream(s, max_frames=None if unbounded else frames, **kwargs)
  out = list(itertools.islice(stream, frames))
  assert [f.index for f in out] == list(range(len(out)))
  latents = np.stack([f.latent for f in out])
  pixels = None if out[0].pixels is None else np.stack([f.pixels for f in out])
  return latents, pixels


@pytest.mark.parametrize("s", [1, 3, STEPS])
@pytest.mark.parametrize("context_frames", [0, 3])
def test_a_streamed_video_is_sample_bit_for_bit(s, context_frames):
  """12 frames from an 8-frame model: the ring wraps and the last chunks run the plan's
  clamped window; latents and pixels equal `sample_latents` + `decode` exactly."""
  generator = _generator()
  context = _context(context_frames) if context_frames else None
  expected, _ = generator.sample_latents(1, 12, s, seed=3, context=context, show_progress=False)
  latents, pixels = _streamed(generator, s, 12, seed=3, context=context)
  np.testing.assert_array_equal(latents, expected[0])
  np.testing.assert_array_equal(pixels, generator.decode(expected)[0])
  if context_frames:
    np.testing.assert_array_equal(latents[:context_frames], context)


def test_stream_with_guidance_and_a_label_is_sample_bit_for_bit():
  """The demo's kind of DiT: class-conditional, several latent tokens a transformer token."""
  generator = _generator(num_classes=3, token_patch=2)
  expected, _ = generator.sample_latents(1, 10, 2, seed=1, label=2, cfg_scale=2.0,
                                         show_progress=False)
  latents, _ = _streamed(generator, 2, 10, seed=1, label=2, cfg=2.0, decode=False)
  np.testing.assert_array_equal(latents, expected[0])


@pytest.mark.parametrize("parameterization", ["eps", "v"])
def test_a_stream_of_an_eps_or_v_model_is_sample_bit_for_bit(parameterization):
  """The Generator tells both samplers what its DiT outputs; read as x̂0, an eps or v
  output would give another video."""
  generator = _generator(parameterization=parameterization)
  expected, _ = generator.sample_latents(1, 10, 3, seed=2, show_progress=False)
  latents, _ = _streamed(generator, 3, 10, seed=2, decode=False)
  np.testing.assert_array_equal(latents, expected[0])
  generator.config = _config("x0")
  as_x0, _ = generator.sample_latents(1, 10, 3, seed=2, show_progress=False)
  assert np.abs(as_x0 - expected).max() > 1e-2


@pytest.mark.parametrize("s,context_frames", [(1, 3), (3, 0), (STEPS, 2)])
def test_a_stream_of_a_self_conditioning_model_is_sample_bit_for_bit(s, context_frames):
  """The stream carries each buffer frame's estimate, shifting it with the latents (an
  entering frame has none): 14 frames of an 8-frame model, so the ring wraps and the
  template's chunks repeat; with guidance and a label."""
  generator = _generator(num_classes=3, token_patch=2, self_condition=True)
  context = _context(context_frames) if context_frames else None
  kwargs = dict(seed=4, label=1, context=context)
  expected, _ = generator.sample_latents(1, 14, s, cfg_scale=2.0, show_progress=False,
                                         **kwargs)
  latents, _ = _streamed(generator, s, 14, cfg=2.0, decode=False, **kwargs)
  np.testing.assert_array_equal(latents, expected[0])


def test_a_stochastic_stream_is_sample_bit_for_bit():
  """eta > 0 draws noise per row and frame: the template's moved chunks must carry the
  whole plan's row indices for it to match."""
  generator = _generator()
  expected, _ = generator.sample_latents(1, 14, 3, seed=5, eta=1.0, show_progress=False)
  latents, _ = _streamed(generator, 3, 14, seed=5, eta=1.0, decode=False)
  np.testing.assert_array_equal(latents, expected[0])
  deterministic, _ = generator.sample_latents(1, 14, 3, seed=5, show_progress=False)
  assert not np.allclose(latents, deterministic[0])


def test_an_unbounded_stream_runs_the_plan_a_frame_on_each_chunk():
  """Without max_frames the chunks after the first repeat the first steady one a frame
  later. Frames the finite plan finishes before its window stops at the video's end are
  the same, and the state keeps its shapes however long the stream runs."""
  model, grid = _model(num_frames=4), _grid()
  finite = sampling.make_stream(model, grid, s=2, max_frames=30)
  unbounded = sampling.make_stream(model, grid, s=2)
  assert unbounded.num_chunks is None and finite.num_chunks == 30
  for j in range(30 - finite.window - 1):
    for ours, theirs in zip(unbounded.rows(j), finite.rows(j)):
      np.testing.assert_array_equal(ours, theirs)

  generator = _generator(num_frames=4)
  expected, _ = generator.sample_latents(1, 30, 2, seed=0, show_progress=False)
  latents, _ = _streamed(generator, 2, 30 - finite.window, unbounded=True, decode=False)
  np.testing.assert_array_equal(latents, expected[0, :len(latents)])

  # Streams that differ only in length share their compiled chunks.
  _, *longer = generator._stream_program(2, 0, 40, 1.0, 0.0)
  _, *shorter = generator._stream_program(2, 0, 30, 1.0, 0.0)
  assert all(a is b for a, b in zip(longer, shorter))

  variables = generator.variables
  start = jax.jit(unbounded.start, static_argnums=2)
  advance = jax.jit(unbounded.advance)
  state = start(variables, jax.random.key(0), 1, jnp.zeros((1,), jnp.int32))
  shapes = jax.tree.map(jnp.shape, state)
  for j in range(40):
    state = advance(variables, state, unbounded.rows(j), np.int32(unbounded.base(j)))
  assert jax.tree.map(jnp.shape, state) == shapes
  assert int(state.base) == 39 - 1 and np.all(np.isfinite(np.asarray(state.x)))


@pytest.mark.parametrize("s,context_frames", [(1, 0), (2, 3), (5, 0), (STEPS, 2)])
def test_a_long_finite_stream_runs_the_whole_plan_from_a_short_template(s, context_frames):
  """Every chunk of a 60-frame stream equals the rows of the 60-frame plan, steady and
  clamped at the end alike, while the stream holds a plan of a few windows only."""
  model, grid, frames = _model(num_frames=4), _grid(), 60
  stream = sampling.make_stream(model, grid, s=s, context_frames=context_frames,
                                max_frames=frames)
  plan = sampling.make_plan(model, grid, frames, s, context_frames, "cached")
  assert stream.plan.num_frames < frames / 4
  assert (stream.window, stream.plan.cache_slots) == (plan.window, plan.cache_slots)
  for j in range(stream.num_chunks):
    begin, end = (0, STEPS) if j == 0 else (STEPS + (j - 1) * s, STEPS + j * s)
    for field, ours, theirs in zip(sampling.Rows._fields, stream.rows(j),
                                   sampling.plan_rows(plan, begin, end)):
      np.testing.assert_array_equal(ours, theirs, err_msg=f"chunk {j}, {field}")
  assert end == plan.rows


def test_s0_yields_the_whole_window_at_once_and_says_so():
  generator = _generator()
  expected, _ = generator.sample_latents(1, 6, 0, seed=2, show_progress=False)
  with pytest.warns(UserWarning, match="whole window at once"):
    latents, _ = _streamed(generator, 0, 6, seed=2, decode=False)
  np.testing.assert_array_equal(latents, expected[0])


def test_a_label_switch_leaves_earlier_frames_untouched():
  generator = _generator(num_classes=3)
  plain, _ = _streamed(generator, 2, 14, label=1, decode=False)
  switched, _ = _streamed(generator, 2, 14, label={0: 1, 7: 2}, decode=False)
  np.testing.assert_array_equal(switched[:7], plain[:7])
  assert np.abs(switched[7:] - plain[7:]).max() > 1e-3
  # Frames before the schedule's first key are unconditional.
  late, _ = _streamed(generator, 2, 8, label={4: 2}, decode=False)
  null, _ = _streamed(generator, 2, 8, decode=False)
  np.testing.assert_array_equal(late[:4], null[:4])


def test_a_temporally_causal_decoder_streams_from_its_window():
  """Frame f is decoded from latents <= f, from the last `vae_window`: within the first
  window that is `decode` of the whole clip (to float rounding)."""
  generator = _generator(temporal_frames=4)
  latents, pixels = _streamed(generator, 3, 6)
  decoded = generator.decode(latents[None])[0]
  assert np.abs(pixels[:4].astype(int) - decoded[:4].astype(int)).max() <= 1
  window = generator.decode(latents[None, 2:6])[0, -1]
  assert np.abs(pixels[5].astype(int) - window.astype(int)).max() <= 1


@pytest.mark.parametrize("s", [-1, STEPS + 1])
def test_an_s_outside_the_range_is_refused(s):
  with pytest.raises(ArgumentError, match=r"1 <= s <= S = 6"):
    next(_generator().stream(s, max_frames=8))


def test_what_cannot_stream_is_refused_with_the_reason():
  with pytest.raises(ArgumentError, match="give max_frames"):
    next(_generator().stream(0, decode=False))
  leaky = generate.Generator(_config(), _model("official", num_frames=4), None, _grid())
  with pytest.raises(ArgumentError, match="strictly causal"):
    next(leaky.stream(2, max_frames=4, decode=False))
  bidirectional = generate.Generator(leaky.config, _model(num_frames=4, temporal_attention=
                                                          "bidirectional"), None, _grid())
  with pytest.raises(ArgumentError, match="bidirectionally"):
    next(bidirectional.stream(2, max_frames=4, decode=False))
  with pytest.warns(UserWarning, match="full mode.*bidirectionally"):
    assert bidirectional.default_mode == "full"
  with pytest.raises(ArgumentError, match="longer than the stream's ring of 4 frames"):
    next(_generator(num_frames=4).stream(2, context=_context(5), decode=False))
  conditional = _generator(num_classes=3)
  with pytest.raises(ArgumentError, match=r"labels must be in \[0, 2\]"):
    next(conditional.stream(2, label={0: 1, 8: 7}, decode=False))
  with pytest.raises(ArgumentError, match="FRAME:CLASS"):
    generate.parse_label_schedule("0:1,64")
  assert generate.parse_label_schedule("0:1, 64:3") == {0: 1, 64: 3}
  with pytest.raises(ArgumentError, match="unconditional"):
    next(_generator().stream(2, label={0: 1}, decode=False))


def test_the_cli_writes_a_growing_mp4_and_ctrl_c_leaves_a_valid_one(tmp_path, monkeypatch,
                                                                     capsys):
  generator = _generator()
  monkeypatch.setattr(generate.Generator, "from_checkpoint",
                      classmethod(lambda cls, *args, **kwargs: generator))
  out = tmp_path / "video.mp4"
  command = ["stream", "--ckpt", "run", "--s", "2", "--out", str(out)]
  assert cli.main(command + ["--frames", "6"]) == 0
  written = read_video(out)
  latents, _ = generator.sample_latents(1, 6, 2, show_progress=False)
  expected = generator.decode(latents)[0]
  # The mp4 holds `sample`'s frames: the same pixels through the same (lossy) encoder.
  reference = write_video(tmp_path / "reference.mp4", expected,
                          options={"crf": "18", "tune": "zerolatency"})
  np.testing.assert_array_equal(written, read_video(reference))
  err = capsys.readouterr().err
  assert "frame 6/6" in err and "frames/s" in err and "first frame after" in err

  streamed = generator.stream
  readable = []

  def interrupted(*args, **kwargs):  # Ctrl-C as the fifth frame is being made
    for i, frame in enumerate(streamed(*args, **kwargs)):
      if i == 4:
        raise KeyboardInterrupt
      if i == 3:  # 3 frames written; the growing file plays all but the newest
        readable.append(len(read_video(out)))
      yield frame

  monkeypatch.setattr(generator, "stream", interrupted)
  assert cli.main(command) == 130  # unbounded: only Ctrl-C stops it
  assert readable == [2] and len(read_video(out)) == 4
  assert "holds the 4 frames so far" in capsys.readouterr().err
