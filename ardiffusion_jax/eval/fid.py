"""FID-img: the FID InceptionV3's 2048-d pool3 features of single frames.

Protocol of the TF reference and StyleGAN-V: uint8 frames, TF1 legacy bilinear resize to
299×299, (x − 128) / 128; then the Fréchet distance of `eval/fvd.py` (float64, N − 1).
The weights are pytorch-fid's file, converted once (`ardiff convert fid-inception`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from ardiffusion_jax.convert.inception import load_fid_inception
from ardiffusion_jax.eval.fvd import resize_bilinear_tf1
from ardiffusion_jax.models.inception import FIDInceptionV3


def preprocess(frames):
  """uint8 [N, H, W, 3] -> float32 [N, 299, 299, 3] as the TF graph expects."""
  return (resize_bilinear_tf1(jnp.asarray(frames, jnp.float32), 299) - 128.0) / 128.0


class InceptionFeatures:
  """uint8 frames [N, H, W, 3] -> float64 pool3 features [N, 2048]."""

  def __init__(self, weights_path, batch_size: int = 32):
    variables = load_fid_inception(weights_path)
    model = FIDInceptionV3()
    self.batch_size = batch_size
    self._embed = jax.jit(lambda x: model.apply(variables, preprocess(x)))

  def __call__(self, frames) -> np.ndarray:
    frames = np.asarray(frames)
    out = []
    for start in range(0, len(frames), self.batch_size):
      chunk = frames[start:start + self.batch_size]
      pad = self.batch_size - len(chunk)  # one compiled shape
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
      out.append(np.asarray(self._embed(chunk), np.float64)[:self.batch_size - pad])
    return np.concatenate(out)
