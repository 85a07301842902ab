"""The AR-VAE: parameter counts, the legacy reshape, causality and latent normalisation."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ardiffusion_jax.models import ar_vae, layers
from tests import support


_count = support.count_params
_randomised = functools.partial(support.randomised, scale=0.02, noise_seed=7)


def _tiny(variant="clean", **changes):
  return support.tiny(ar_vae, ar_vae.ARVAE, variant, **changes)


def test_paper_size_parameter_counts_match_the_authors_model():
  model = ar_vae.ARVAE(**ar_vae.VARIANTS["official"], **ar_vae.PRESETS["paper"])
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1, 256, 256, 3)))["params"]
  counts = {name: _count(tree) for name, tree in params.items()}
  # The authors' TiTok_KL: encoder 303.4M, TiTok decoder 306.8M, pixel decoder 30.5M,
  # pixel_quantize_conv 0.26M, latent tokens 32K.
  assert round(counts["encoder"] / 1e6, 1) == 303.4
  assert round(counts["decoder"] / 1e6, 1) == 306.8
  assert round(counts["pixel_decoder"] / 1e6, 1) == 30.5
  assert counts["pixel_quantize_conv"] == 1024 * 256 + 256
  assert counts["latent_tokens"] == 32 * 1024
  causal = model.clone(temporal_causal=True)
  extra = _count(jax.eval_shape(causal.init, jax.random.key(0),
                                jnp.zeros((1, 2, 256, 256, 3)))["params"]) - sum(counts.values())
  assert round(extra / 1e6, 1) == 201.7  # their TiTok_KL_wT temporal blocks


def test_legacy_reshape_matches_the_spec_formula():
  rng = np.random.default_rng(0)
  n, length, width, out = 2, 32, 64, 8
  x = rng.normal(size=(n, length, width)).astype(np.float32)
  kernel = rng.normal(size=(width, out)).astype(np.float32)  # W[c, k] = kernel[k, c]
  bias = rng.normal(size=(out,)).astype(np.float32)
  expected = np.zeros((n, out, length), np.float32)
  for b in range(n):
    for c in range(out):
      for j in range(length):
        total = bias[c]
        for k in range(width):
          flat = length * k + j  # Xr[n,k,j] = x[n, (32k+j)//W, (32k+j)%W]
          total += kernel[k, c] * x[b, flat // width, flat % width]
        expected[b, c, j] = total
  got = ar_vae.legacy_moments(jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 2, 1), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["official", "clean"])
def test_causal_decoder_never_looks_ahead(variant):
  model = _tiny(variant, temporal_causal=True)
  latents = jax.random.normal(jax.random.key(1), (1, 4, 32, 4))
  variables = _randomised(model, jnp.zeros((1, 4, 64, 64, 3)))
  decode = jax.jit(lambda z: model.apply(variables, z, method=ar_vae.ARVAE.decode))
  base = decode(latents)
  for frame in range(1, 4):
    changed = decode(latents.at[:, frame:].add(1.0))
    np.testing.assert_array_equal(changed[:, :frame], base[:, :frame])
    assert np.abs(changed[:, frame] - base[:, frame]).max() > 1e-5


def test_per_frame_decoder_treats_frames_independently():
  model = _tiny()
  latents = jax.random.normal(jax.random.key(2), (1, 3, 32, 4))
  variables = _randomised(model, jnp.zeros((1, 3, 64, 64, 3)))
  decode = lambda z: model.apply(variables, z, method=ar_vae.ARVAE.decode)
  np.testing.assert_allclose(decode(latents.at[:, 0].add(1.0))[:, 1:], decode(latents)[:, 1:],
                             rtol=1e-6, atol=1e-6)


def test_latents_are_raw_means_and_decoding_normalises_each_token():
  model = _tiny()
  video = jax.random.uniform(jax.random.key(3), (1, 2, 64, 64, 3))
  variables = _randomised(model, video)
  mean, logvar = model.apply(variables, video, method=ar_vae.ARVAE.encode)
  assert mean.shape == logvar.shape == (1, 2, 32, 4)
  norms = np.linalg.norm(np.asarray(mean), axis=-1)
  assert not np.allclose(norms, 1.0)  # raw mean, as the authors extract it
  unit = layers.l2_normalize(mean)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(unit), axis=-1), 1.0, rtol=1e-5)
  decode = lambda z: model.apply(variables, z, method=ar_vae.ARVAE.decode)
  np.testing.assert_allclose(decode(mean * 3.7), decode(unit), rtol=1e-4, atol=1e-4)
  recon, _, _ = model.apply(variables, video, sample_posterior=True, rng=jax.random.key(4))
  assert recon.shape == video.shape


def test_proxy_head_reads_each_patch_from_its_own_decoder_token():
  model = _tiny(proxy_head=True)
  video = jax.random.uniform(jax.random.key(3), (1, 2, 64, 64, 3))
  variables = _randomised(model, video)  # perturbs the zero-initialised head too
  key = jax.random.key(4)
  (recon, proxy, _), state = model.apply(
      variables, video, key, method=ar_vae.ARVAE.training_reconstruction,
      capture_intermediates=lambda mdl, name: mdl.name == "ln_post" and name == "__call__")
  sampled, _, _ = model.apply(variables, video, sample_posterior=True, rng=key)
  np.testing.assert_array_equal(recon, sampled)  # the same reconstruction as __call__
  assert proxy.shape == video.shape
  features = state["intermediates"]["decoder"]["ln_post"]["__call__"][0]  # [2, 64 tokens, 64]
  head = variables["params"]["proxy_patch_head"]
  p = model.patch_size
  for frame, row, col in [(0, 0, 0), (1, 13, 50), (1, 63, 7)]:
    token = features[frame, (row // p) * (64 // p) + col // p]
    pixel = (token @ head["kernel"] + head["bias"]).reshape(p, p, 3)[row % p, col % p]
    np.testing.assert_allclose(proxy[0, frame, row, col], pixel, rtol=1e-5, atol=1e-6)
  plain = _tiny()
  assert "proxy_patch_head" not in jax.eval_shape(plain.init, jax.random.key(0), video)["params"]
  _, none, _ = plain.apply(_randomised(plain, video), video, key,
                        method=ar_vae.ARVAE.training_reconstruction)
  assert none is None


def test_nin_shortcut_quirk_changes_the_shortcut_shape():
  def nin_shape(variant):
    params = jax.eval_shape(_tiny(variant).init, jax.random.key(0),
                            jnp.zeros((1, 1, 64, 64, 3)))["params"]["pixel_decoder"]
    shortcuts = {k: v["nin_shortcut"]["kernel"].shape for k, v in params.items()
                 if isinstance(v, dict) and "nin_shortcut" in v}
    return shortcuts
  official, clean = nin_shape("official"), nin_shape("clean")
  assert official.keys() == clean.keys() and official
  for name in official:  # official maps out->out (applied to h); clean maps in->out
    assert official[name][2] == official[name][3]
    assert clean[name][2] != clean[name][3]


def test_bad_geometry_raises():
  with pytest.raises(ValueError, match="not divisible by patch_size"):
    _tiny(image_size=60).init(jax.random.key(0), jnp.zeros((1, 1, 60, 60, 3)))
  with pytest.raises(ValueError, match="channel_mult"):
    _tiny(channel_mult=(1, 2)).init(jax.random.key(0), jnp.zeros((1, 1, 64, 64, 3)))


def test_group_norm_matches_flax_in_values_and_gradients():
  x = 2.0 * jax.random.normal(jax.random.key(0), (3, 8, 8, 16)) + 1.0
  params = {"scale": jax.random.normal(jax.random.key(1), (16,)),
            "bias": jax.random.normal(jax.random.key(2), (16,))}
  ours = lambda p, x: layers.GroupNorm(4).apply({"params": p}, x)
  theirs = lambda p, x: nn.GroupNorm(4, epsilon=1e-6).apply({"params": p}, x)
  assert jax.tree.map(jnp.shape, layers.GroupNorm(4).init(jax.random.key(0), x)["params"]) == \
      jax.tree.map(jnp.shape, params)
  np.testing.assert_allclose(ours(params, x), theirs(params, x), atol=2e-5)
  loss = lambda norm: lambda p, x: jnp.sum(jnp.sin(norm(p, x)))
  for got, want in zip(jax.tree.leaves(jax.grad(loss(ours), argnums=(0, 1))(params, x)),
                       jax.tree.leaves(jax.grad(loss(theirs), argnums=(0, 1))(params, x))):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  assert ours(params, x.astype(jnp.bfloat16)).dtype == jnp.float32  # flax's promotion
  with pytest.raises(ValueError, match="groups"):
    layers.GroupNorm(5).init(jax.random.key(0), x)


def test_flat_draws_give_the_full_shape_values():
  # Flat draws only compile faster: every parameter and noise draw keeps its values.
  key = jax.random.key(3)
  qkv = (64, 3, 2, 32)  # a fused [D, 3, H, hd] kernel: Xavier over its true fans
  np.testing.assert_array_equal(
      layers.drawn_as_matrix(layers.xavier, num_out_axes=3)(key, qkv),
      nn.initializers.xavier_uniform(in_axis=(0,), out_axis=(1, 2, 3))(key, qkv))
  np.testing.assert_array_equal(layers.conv_init(key, (3, 3, 16, 8)),
                                nn.initializers.lecun_normal()(key, (3, 3, 16, 8)))
  normal = nn.initializers.normal(0.02)
  np.testing.assert_array_equal(layers.drawn_as_matrix(normal)(key, (4, 4, 3, 8)),
                                normal(key, (4, 4, 3, 8)))
  np.testing.assert_array_equal(layers.normal(key, (2, 3, 4, 5), jnp.bfloat16),
                                jax.random.normal(key, (2, 3, 4, 5), jnp.bfloat16))
  linear = layers.dense((3, 2, 32), ("embed", None, "heads", "kv"), "qkv")
  kernel = nn.meta.unbox(linear.init(key, jnp.zeros((1, 64))))["params"]["kernel"]
  bound = np.sqrt(6 / (64 + 3 * 2 * 32))  # Xavier-uniform's limit over the true fans
  assert kernel.shape == qkv and 0.9 * bound < float(jnp.max(jnp.abs(kernel))) <= bound


def test_upsampling_repeats_each_pixel_like_nearest_resize():
  images = jax.random.normal(jax.random.key(0), (2, 3, 5, 4))
  np.testing.assert_array_equal(ar_vae.upsample_nearest_2x(images),
                                jax.image.resize(images, (2, 6, 10, 4), "nearest"))


def test_spatial_init_starts_with_local_attention():
  points = np.array([[0, 0], [0, 1], [1, 1], [6, 7]], float)
  codes = ar_vae.fourier_codes(points, 64, lengthscale=1.0)
  np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1.0, rtol=1e-5)
  similarity = codes @ codes.T  # ≈ exp(-d² / 2): 0.61 at distance 1, ~0 at 9.2
  np.testing.assert_allclose([similarity[0, 1], similarity[1, 2]], np.exp(-0.5), atol=0.1)
  assert abs(similarity[0, 3]) < 0.15

  def spread(spatial):
    """How far the largest response to a local change stands above the median one."""
    model = _tiny(spatial_init=spatial)
    video = jax.random.uniform(jax.random.key(3), (1, 1, 64, 64, 3))
    variables = nn.meta.unbox(model.init(jax.random.key(0), video))
    encode = lambda v: model.apply(variables, v, method=ar_vae.ARVAE.encode)[0][0, 0]
    # Brightening the top-left patch moves the latent token whose region holds it.
    per_token = jnp.linalg.norm(encode(video.at[:, :, :8, :8].set(1.0)) - encode(video), axis=-1)
    features = lambda z: model.apply(
        variables, z, method=ar_vae.ARVAE.decode,
        capture_intermediates=lambda mdl, name: mdl.name == "ln_post" and name == "__call__",
    )[1]["intermediates"]["decoder"]["ln_post"]["__call__"][0][0]
    z = jax.random.normal(jax.random.key(5), (1, 1, 32, 4))
    # Flipping latent token 0 (the top-left region) moves the decoder's top-left patches.
    per_patch = jnp.linalg.norm(features(z.at[:, :, 0].multiply(-1)) - features(z), axis=-1)
    ratio = lambda d: float(d.max() / jnp.median(d))
    return int(per_token.argmax()), ratio(per_token), int(per_patch.argmax()), ratio(per_patch)

  token, token_ratio, patch, patch_ratio = spread(True)
  assert token == 0 and token_ratio > 10
  assert patch in (0, 8) and patch_ratio > 10  # patch rows 0-1 of column 0
  _, token_ratio, _, patch_ratio = spread(False)  # TiTok's init: no such locality
  assert token_ratio < 3 and patch_ratio < 3
