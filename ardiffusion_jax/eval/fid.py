"""FID-img and FID-vid features.

FID-img: the FID InceptionV3's 2048-d pool3 features of single frames, with the TF
reference's preprocessing (uint8, TF1 legacy bilinear resize to 299×299, (x − 128)/128);
weights from pytorch-fid's file (`ardiff convert fid-inception`).

FID-vid: AR-Diffusion's "FVD-3DRN50": a Kinetics 3D ResNet-50's 2048-d features of
16-frame segments (the last one padded with its final frame), averaged over segments;
frames resized to 112×112 bicubic (antialiased, close to their PIL float-mode resize) minus
the Kinetics mean. Weights: Hara's `resnet-50-kinetics.pth` (`ardiff convert fid-resnet3d`).

Both then use the Fréchet distance of `eval/fvd.py` (float64, N − 1).
"""

import jax
import jax.numpy as jnp
import numpy as np

from ardiffusion_jax.convert.metric_nets import load_metric_net
from ardiffusion_jax.eval.fvd import BatchedFeatures, resize_bilinear_tf1
from ardiffusion_jax.eval.nets.inception import FIDInceptionV3
from ardiffusion_jax.eval.nets.resnet3d import ResNet3D50

KINETICS_MEAN = np.array([114.7748, 107.7354, 99.4750], np.float32)
SEGMENT = 16


def preprocess(frames):
  """uint8 [N, H, W, 3] -> float32 [N, 299, 299, 3] as the TF graph expects."""
  return (resize_bilinear_tf1(jnp.asarray(frames, jnp.float32), 299) - 128.0) / 128.0


def preprocess_resnet3d(segments):
  """uint8 [N, 16, H, W, 3] -> float32 [N, 16, 112, 112, 3] minus the Kinetics mean."""
  x = jnp.asarray(segments, jnp.float32)
  x = jax.image.resize(x, x.shape[:2] + (112, 112, 3), "bicubic", antialias=True)
  return x - KINETICS_MEAN


def segments_of(videos) -> tuple:
  """uint8 [N, T, H, W, 3] -> ([N·k, 16, H, W, 3], k): 16-frame segments, the last one
  padded by repeating its final frame."""
  videos = np.asarray(videos)
  k = -(-videos.shape[1] // SEGMENT)
  pad = k * SEGMENT - videos.shape[1]
  if pad:
    videos = np.concatenate([videos, np.repeat(videos[:, -1:], pad, axis=1)], axis=1)
  return videos.reshape((-1, SEGMENT) + videos.shape[2:]), k


class InceptionFeatures(BatchedFeatures):
  """uint8 frames [N, H, W, 3] -> float64 pool3 features [N, 2048]."""

  def __init__(self, weights_path, batch_size: int = 32):
    variables = load_metric_net("fid-inception", weights_path)
    super().__init__(lambda params, x: FIDInceptionV3().apply(params, preprocess(x)), variables,
                     batch_size)

  def __call__(self, frames) -> np.ndarray:
    return self.features(frames)


class ResNet3DFeatures(BatchedFeatures):
  """uint8 videos [N, T, H, W, 3] -> float64 features [N, 2048], averaged over segments."""

  def __init__(self, weights_path, batch_size: int = 8):
    variables = load_metric_net("fid-resnet3d", weights_path)
    super().__init__(lambda params, x: ResNet3D50().apply(params, preprocess_resnet3d(x)),
                     variables, batch_size)

  def __call__(self, videos) -> np.ndarray:
    segments, k = segments_of(videos)
    return self.features(segments).reshape(len(videos), k, -1).mean(axis=1)
