"""How well an AR-VAE reconstructs videos it never trained on: PSNR over the synthetic
generator's held-out split. The demo, `bench vae` and the tokenizer experiments report it."""

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from ardiffusion_jax.data.synthetic import BouncingShapes
from ardiffusion_jax.models import ar_vae


def held_out_psnr(config, params, num_videos: int, progress: bool = False) -> float:
  """PSNR (dB) of the mean-latent reconstruction of `num_videos` held-out clips
  (`BouncingShapes.held_out`), pooled over every frame: the mean squared error of all
  clips first, then one log, so a few easy clips cannot hide a bad one."""
  return reconstruct_held_out(config, params, num_videos, progress)["psnr_db"]


def reconstruct_held_out(config, params, num_videos: int, progress: bool = False) -> dict:
  """The held-out clips (`real`, uint8 [N, F, H, W, 3]), their mean-latent
  reconstructions (`reconstructed`, uint8, the tokenizer's ceiling for samples) and the
  PSNR of those (`psnr_db`, from the unrounded outputs, as `held_out_psnr`), and
  `mean_image_psnr_db`: the PSNR of the clips' own mean frame, the best any constant
  output scores, so a tokenizer near it passes no information through its latents."""
  model = ar_vae.vae_from_config(config.vae)
  held_out = BouncingShapes.held_out(config.data, num_videos)
  reconstruct = jax.jit(lambda video: jnp.clip(model.apply({"params": params}, video)[0], 0, 1))
  real, reconstructed, errors = [], [], []
  for i in tqdm.trange(num_videos, desc="VAE held-out PSNR", unit="clip", disable=not progress):
    real.append(held_out[i]["video"])
    video = jnp.asarray(real[-1][None], jnp.float32) / 255.0
    output = reconstruct(video)
    errors.append(float(jnp.mean(jnp.square(output - video))))
    reconstructed.append(np.asarray(jnp.round(output[0] * 255.0), np.uint8))
  real = np.stack(real)
  frames = real.reshape((-1,) + real.shape[2:]).astype(np.float64) / 255.0
  mean_image_mse = np.mean(np.square(frames - frames.mean(axis=0)))
  return {"real": real, "reconstructed": np.stack(reconstructed),
          "psnr_db": float(-10 * np.log10(np.mean(errors))),
          "mean_image_psnr_db": float(-10 * np.log10(mean_image_mse))}
