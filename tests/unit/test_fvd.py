"""FVD: the Fréchet distance against closed forms and scipy, TF1's bilinear resize, the
safe weights loader, and the I3D value for the reference's all-black vs all-white example."""

import pickle

import numpy as np
import pytest
import scipy.linalg

from ardiffusion_jax.errors import CheckpointError
from ardiffusion_jax.eval import fvd


def test_frechet_distance_matches_closed_forms_and_scipy():
  rng = np.random.default_rng(0)
  mu, sigma = rng.standard_normal(5), np.diag(rng.uniform(0.5, 2, 5))
  assert abs(fvd.frechet_distance(mu, sigma, mu, sigma)) < 1e-9
  s1, s2 = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
  expected = np.sum((mu - 1) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
  assert fvd.frechet_distance(mu, np.diag(s1), mu * 0 + 1, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
  # Rank-deficient covariances (fewer samples than dimensions), as with small sets.
  a, b = rng.standard_normal((20, 64)), rng.standard_normal((20, 64)) * 1.5 + 0.3
  (m1, c1), (m2, c2) = fvd.statistics(a), fvd.statistics(b)
  reference = (np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2)
               - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2).real))
  assert fvd.frechet_distance(m1, c1, m2, c2) == pytest.approx(reference, rel=1e-6)
  # fvd() on so few samples takes the trace term from the samples (an SVD of A Bᵀ), on as
  # many samples as dimensions from the covariances: the same distance either way (up to
  # the square roots of the rank-deficient covariances' round-off eigenvalues, ~1e-8).
  assert fvd.fvd(a, b) == pytest.approx(fvd.frechet_distance(m1, c1, m2, c2), rel=1e-7)
  assert fvd.fvd(a[:7], b) == pytest.approx(fvd.frechet_distance(
      *fvd.statistics(a[:7]), *fvd.statistics(b)), rel=1e-7)
  many_a, many_b = rng.standard_normal((80, 16)), rng.standard_normal((90, 16)) + 0.5
  assert fvd.fvd(many_a, many_b) == pytest.approx(fvd.frechet_distance(
      *fvd.statistics(many_a), *fvd.statistics(many_b)), rel=1e-9)
  with pytest.raises(ValueError, match="at least 2 samples"):
    fvd.fvd(a[:1], b)


def test_tf1_bilinear_resize_uses_corner_aligned_source_pixels():
  image = np.array([[0.0, 10.0]], np.float32)[None, :, :, None]  # [1, 1, 2, 1]
  row = np.asarray(fvd.resize_bilinear_tf1(np.repeat(image, 2, axis=1), 4))[0, 0, :, 0]
  np.testing.assert_allclose(row, [0.0, 5.0, 10.0, 10.0])  # src = dst * 2/4, clamped


def test_weights_pickles_cannot_run_code(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ("pwned",))
  path = tmp_path / "evil.ckpt"
  path.write_bytes(pickle.dumps({"params": Evil()}))
  with pytest.raises(CheckpointError, match="refusing"):
    fvd.load_i3d(path, check_hash=False)
  with pytest.raises(CheckpointError, match="sha256"):
    fvd.load_i3d(path)


def test_i3d_fvd_of_black_against_white_clips():
  # The google-research example (16 black vs 16 white 64x64 clips of 15 frames) gives
  # about 134 with these weights; identical clips make every covariance zero, so two
  # clips per set give the same value.
  features = fvd.I3DFeatures(batch_size=2)
  black = features(np.zeros((2, 15, 64, 64, 3), np.uint8))
  white = features(np.full((2, 15, 64, 64, 3), 255, np.uint8))
  assert black.shape == (2, 400)
  assert fvd.fvd(black, white) == pytest.approx(133.9, abs=1.0)
  assert abs(fvd.fvd(black, black)) < 1e-6


def test_fid_inception_matches_the_pytorch_reference(tmp_path):
  torch = pytest.importorskip("torch")
  from tests import official_reference as ref
  from ardiffusion_jax.convert.metric_nets import convert_metric_net
  from ardiffusion_jax.eval import fid
  from ardiffusion_jax.eval.nets.inception import FIDInceptionV3
  net = ref.randomize(ref.FIDInception3(), seed=0, scale=0.05).eval()
  with torch.no_grad():  # non-trivial running statistics
    for module in net.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.uniform_(-0.1, 0.1)
        module.running_var.uniform_(0.5, 1.5)
  state = {k: v.numpy() for k, v in net.state_dict().items()}
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "pt_inception.pth")
  variables = convert_metric_net("fid-inception", tmp_path / "pt_inception.pth", tmp_path / "fid.npz")
  x = np.random.default_rng(0).uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)
  ours = FIDInceptionV3().apply(variables, x)
  with torch.no_grad():
    theirs = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  assert np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)) <= 1e-4
  frames = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  features = fid.InceptionFeatures(tmp_path / "fid.npz", batch_size=2)(frames)
  assert features.shape == (3, 2048)
  del state["Mixed_7c.branch_pool.conv.weight"]
  np.savez(tmp_path / "broken.npz", **state)
  with pytest.raises(CheckpointError, match="missing Mixed_7c.branch_pool.conv.weight"):
    convert_metric_net("fid-inception", tmp_path / "broken.npz", tmp_path / "x.npz")
  with pytest.raises(CheckpointError, match="ardiff convert fid-inception"):
    fid.InceptionFeatures(tmp_path / "absent.npz")


def test_fid_vid_resnet3d_matches_the_pytorch_reference(tmp_path):
  torch = pytest.importorskip("torch")
  from tests import official_reference as ref
  from ardiffusion_jax.convert.metric_nets import convert_metric_net
  from ardiffusion_jax.eval import fid
  from ardiffusion_jax.eval.nets.resnet3d import ResNet3D50
  net = ref.randomize(ref.ResNet3D50(), seed=0, scale=0.05).eval()
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, torch.nn.BatchNorm3d):
        module.running_mean.uniform_(-0.1, 0.1)
        module.running_var.uniform_(0.5, 1.5)
  # Hara's checkpoints are saved from DataParallel: every key starts with `module.`.
  torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
             tmp_path / "resnet-50-kinetics.pth")
  variables = convert_metric_net("fid-resnet3d", tmp_path / "resnet-50-kinetics.pth",
                                 tmp_path / "r3d.npz")
  x = np.random.default_rng(0).standard_normal((1, 16, 48, 48, 3)).astype(np.float32)
  ours = ResNet3D50().apply(variables, x)
  with torch.no_grad():
    theirs = net(torch.from_numpy(x).permute(0, 4, 1, 2, 3)).numpy()
  assert np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)) <= 1e-4
  videos = np.broadcast_to(np.arange(20, dtype=np.uint8)[None, :, None, None, None], (2, 20, 8, 8, 3))
  segments, k = fid.segments_of(videos)
  assert k == 2 and segments.shape == (4, 16, 8, 8, 3)
  assert list(segments[1, :, 0, 0, 0]) == [16, 17, 18, 19] + [19] * 12  # padded with the last frame
  with pytest.raises(CheckpointError, match="ardiff convert fid-resnet3d"):
    fid.ResNet3DFeatures(tmp_path / "absent.npz")


@pytest.mark.parametrize("kind", ["fid-inception", "fid-resnet3d"])
def test_fid_weights_of_another_network_are_named(tmp_path, kind):
  from ardiffusion_jax.eval import fid
  features = {"fid-inception": fid.InceptionFeatures, "fid-resnet3d": fid.ResNet3DFeatures}[kind]
  lpips = tmp_path / "lpips.npz"  # the perceptual loss's weights, passed by mistake
  np.savez(lpips, **{"conv_0/kernel": np.zeros((3, 3, 3, 64), np.float32),
                     "conv_0/bias": np.zeros(64, np.float32)})
  with pytest.raises(CheckpointError, match=f"ardiff convert {kind}") as error:
    features(lpips)
  message = str(error.value)
  assert str(lpips) in message and "differences: " in message and " missing" in message
  # The right keys, one of them mis-shaped.
  import jax
  import jax.numpy as jnp
  from ardiffusion_jax.convert.metric_nets import NETS
  net = NETS[kind]
  abstract = jax.eval_shape(lambda: net.model().init(jax.random.key(0), jnp.zeros(net.example_shape)))
  import flax
  flat = {k: np.zeros(v.shape, np.float32) for k, v in
          flax.traverse_util.flatten_dict(abstract, sep="/").items()}
  first = next(iter(flat))
  flat[first] = np.zeros(3, np.float32)
  np.savez(tmp_path / "reshaped.npz", **flat)
  with pytest.raises(CheckpointError, match=f"1 differences: {first} is \\(3,\\)"):
    features(tmp_path / "reshaped.npz")
