"""The causal DiT: parameter count, causality, variants, scan/remat and conditioning."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ardiffusion_jax.models import dit
from tests import support

FRAMES, TOKENS = 4, 32


_count = support.count_params
_randomised = support.randomised


def _inputs(batch=2, seed=1):
  x = jax.random.normal(jax.random.key(seed), (batch, FRAMES, TOKENS, 4))
  t = jnp.array([[0, 10, 500, 999], [3, 3, 700, 900]])[:batch]
  return x, t


def _tiny(variant, **changes):
  return support.tiny(dit, dit.DiT, variant, **{"num_frames": FRAMES, **changes})


@pytest.mark.parametrize("scan_layers", [False, True])
def test_paper_official_parameter_count(scan_layers):
  model = dit.DiT(**dit.VARIANTS["official"], **dit.PRESETS["paper"], scan_layers=scan_layers)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 32, 4)),
                          jnp.zeros((1, 16), jnp.int32))
  assert _count(shapes["params"]) == 671_864_836  # the authors' DiT_crossattn: trainable parameters
  assert shapes["constants"]["context_emb"].shape == (77, 768)  # fixed, never trained


def test_class_conditional_official_keeps_a_fixed_class_table():
  model = _tiny("official", num_classes=5)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *_inputs(), jnp.array([1, 2]))
  assert shapes["constants"]["class_emb"].shape == (6, 77, 768)


@pytest.mark.parametrize("scan_layers,remat", [(False, False), (True, True)])
@pytest.mark.parametrize("frame", range(FRAMES))
def test_clean_variant_is_strictly_causal(frame, scan_layers, remat):
  model = _tiny("clean", num_classes=3, scan_layers=scan_layers, remat=remat)
  x, t = _inputs()
  label = jnp.array([0, 2])
  variables = _randomised(model, x, t, label)
  base = model.apply(variables, x, t, label)
  changed_x = model.apply(variables, x.at[:, frame].add(1.0), t, label)
  changed_t = model.apply(variables, x, t.at[:, frame].set(123), label)
  for changed in (changed_x, changed_t):
    np.testing.assert_array_equal(changed[:, :frame], base[:, :frame])
    assert np.abs(changed[:, frame] - base[:, frame]).max() > 1e-4


def test_official_variant_shows_the_documented_leak():
  model = _tiny("official")
  x, t = _inputs()
  variables = _randomised(model, x, t)
  base = model.apply(variables, x, t)
  changed = model.apply(variables, x.at[:, -1].add(1.0), t)
  # The 77 context tokens see every frame, so the last frame reaches the first (§2.3.6).
  assert np.abs(changed[:, 0] - base[:, 0]).max() > 1e-5
  strict = _tiny("official", context_sees_video=False)
  changed = strict.apply(variables, x.at[:, -1].add(1.0), t)
  np.testing.assert_array_equal(changed[:, :-1], strict.apply(variables, x, t)[:, :-1])


@pytest.mark.parametrize("chunks", [1, 2])
def test_bidirectional_attention_lets_every_frame_see_the_last(chunks):
  """Table 3's "− temporal causal attention": the same weights, with a change to the last
  frame reaching every earlier one; the causal model's chunking must not apply to it."""
  causal = _tiny("clean", attention_chunks=chunks)
  bidirectional = _tiny("clean", attention_chunks=chunks, temporal_attention="bidirectional")
  x, t = _inputs()
  variables = _randomised(causal, x, t)
  base = bidirectional.apply(variables, x, t)
  changed = bidirectional.apply(variables, x.at[:, -1].add(1.0), t)
  assert np.abs(changed[:, 0] - base[:, 0]).max() > 1e-4
  assert np.abs(base - causal.apply(variables, x, t)).max() > 1e-4
  unchunked = _tiny("clean", temporal_attention="bidirectional").apply(variables, x, t)
  np.testing.assert_allclose(base, unchunked, atol=1e-6, rtol=0)
  assert causal.strictly_causal and not bidirectional.strictly_causal
  assert "bidirectional" in bidirectional.future_leak


def test_a_bidirectional_dit_refuses_a_kv_cache():
  model = _tiny("clean", temporal_attention="bidirectional")
  x, t = _inputs()
  variables = _randomised(model, x, t)
  cache = dit.KVCache((), (), jnp.zeros((1,), jnp.int32))
  with pytest.raises(ValueError, match="bidirectionally"):
    model.apply(variables, x, t, cache=cache)


@pytest.mark.parametrize("variant", ["official", "clean"])
def test_unrolled_matches_the_scanned_layers(variant):
  x, t = _inputs()
  scanned = _tiny(variant, scan_layers=True, remat=True)
  variables = _randomised(scanned, x, t)
  model, unrolled_vars = dit.unrolled(scanned, variables)
  assert not model.scan_layers and not model.remat
  # The split tree is exactly what an unrolled model initialises...
  assert (jax.tree.structure(unrolled_vars)
          == jax.tree.structure(_randomised(_tiny(variant), x, t)))
  np.testing.assert_array_equal(unrolled_vars["params"]["blocks_1"]["attn"]["qkv"]["kernel"],
                                variables["params"]["blocks"]["attn"]["qkv"]["kernel"][1])
  # ...and computes the same function.
  np.testing.assert_allclose(model.apply(unrolled_vars, x, t), scanned.apply(variables, x, t),
                             rtol=1e-5, atol=1e-5)


def test_the_kv_cache_asks_for_unrolled_layers():
  x, t = _inputs()
  scanned = _tiny("clean", scan_layers=True)
  variables = _randomised(scanned, x, t)
  empty = tuple(jnp.zeros((2, TOKENS, 2, 32)) for _ in range(scanned.depth))
  with pytest.raises(ValueError, match=r"dit.unrolled\(model, variables\)"):
    scanned.apply(variables, x, t, cache=dit.KVCache(empty, empty, jnp.zeros((1,), jnp.int32)))


def test_zero_init_outputs_zero_and_every_param_has_logical_axes():
  model = _tiny("clean", num_classes=2, scan_layers=True)
  x, t = _inputs()
  variables = model.init(jax.random.key(0), x, t, jnp.array([0, 1]))
  boxes = jax.tree.leaves(variables["params"], is_leaf=lambda v: isinstance(v, nn.Partitioned))
  assert boxes and all(isinstance(b, nn.LogicallyPartitioned) for b in boxes)
  assert all(b.names[0] == "layers" for b in jax.tree.leaves(
      variables["params"]["blocks"], is_leaf=lambda v: isinstance(v, nn.Partitioned)))
  out = model.apply(variables, x, t, jnp.array([0, 1]))
  assert out.shape == x.shape and not np.any(np.asarray(out))  # final layer starts at zero


def test_labels_condition_the_clean_model_and_none_means_null():
  model = _tiny("clean", num_classes=3)
  x, t = _inputs()
  variables = _randomised(model, x, t, jnp.array([0, 0]))
  a = model.apply(variables, x, t, jnp.array([0, 0]))
  b = model.apply(variables, x, t, jnp.array([1, 1]))
  assert np.abs(a - b).max() > 1e-4
  np.testing.assert_array_equal(model.apply(variables, x, t),
                                model.apply(variables, x, t, jnp.array([3, 3])))


def test_bfloat16_compute_stays_close_to_float32():
  x, t = _inputs()
  variables = _randomised(_tiny("clean"), x, t)
  full = _tiny("clean").apply(variables, x, t)
  half = _tiny("clean", dtype=jnp.bfloat16).apply(variables, x, t)
  assert half.dtype == jnp.float32
  assert np.abs(half - full).max() < 0.05 * np.abs(full).max() + 1e-2


def test_official_positions_cover_only_the_trained_window():
  model = _tiny("official", num_frames=2)
  with pytest.raises(ValueError, match="covers 2 frames"):
    model.init(jax.random.key(0), *_inputs())


@pytest.mark.parametrize("variant", ["official", "clean"])
def test_chunked_causal_attention_is_exact(variant):
  """Skipping the masked blocks (attention_chunks) changes neither outputs nor gradients."""
  x, t = _inputs()
  plain, chunked = _tiny(variant), _tiny(variant, attention_chunks=FRAMES)
  variables = _randomised(plain, x, t)

  def loss(params, model):
    return jnp.sum(jnp.square(model.apply(dict(variables, params=params), x, t)))

  np.testing.assert_allclose(chunked.apply(variables, x, t), plain.apply(variables, x, t),
                             rtol=1e-5, atol=1e-5)
  grads = [jax.grad(loss)(variables["params"], m) for m in (plain, chunked)]
  for a, b in zip(*map(jax.tree.leaves, grads)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
  # Fewer frames than chunks at call time: the chunking follows gcd(chunks, frames).
  x3, t3 = x[:, :3], t[:, :3]
  np.testing.assert_allclose(chunked.apply(variables, x3, t3), plain.apply(variables, x3, t3),
                             rtol=1e-5, atol=1e-5)


def test_token_patch_groups_latent_tokens_and_stays_causal():
  """token_patch = 4: each transformer token carries 4 latent tokens (8 per frame); the
  prediction keeps the latents' shape and the clean variant's strict causality."""
  model = _tiny("clean", token_patch=4)
  x, t = _inputs()
  variables = _randomised(model, x, t)
  assert model.frame_tokens == TOKENS // 4
  assert variables["params"]["x_embedder"]["kernel"].shape[0] == 4 * 4  # 4 tokens x 4 channels
  base = model.apply(variables, x, t)
  assert base.shape == x.shape
  changed = model.apply(variables, x.at[:, 2, 5].add(1.0), t)  # one latent token of frame 2
  np.testing.assert_array_equal(changed[:, :2], base[:, :2])
  assert np.abs(changed[:, 2] - base[:, 2]).max() > 1e-4


def test_self_conditioning_reads_the_estimate_causally_and_none_means_zeros():
  """The estimate enters beside x (twice the embedder's inputs); a frame's estimate
  reaches that frame and later ones only; None is zeros; other DiTs refuse one."""
  model = _tiny("clean", token_patch=4, self_condition=True)
  x, t = _inputs()
  variables = _randomised(model, x, t)
  assert variables["params"]["x_embedder"]["kernel"].shape[0] == 2 * 4 * 4
  estimate = jax.random.normal(jax.random.key(7), x.shape)
  base = model.apply(variables, x, t, x0_estimate=estimate)
  changed = model.apply(variables, x, t, x0_estimate=estimate.at[:, 2].add(1.0))
  np.testing.assert_array_equal(changed[:, :2], base[:, :2])
  assert np.abs(changed[:, 2:] - base[:, 2:]).max() > 1e-4
  np.testing.assert_array_equal(model.apply(variables, x, t),
                                model.apply(variables, x, t, x0_estimate=jnp.zeros_like(x)))
  plain = _tiny("clean", token_patch=4)
  with pytest.raises(ValueError, match="dit.self_condition"):
    plain.apply(_randomised(plain, x, t), x, t, x0_estimate=estimate)
