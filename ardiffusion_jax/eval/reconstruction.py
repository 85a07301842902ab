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
  model = ar_vae.vae_from_config(config.vae)
  held_out = BouncingShapes.held_out(config.data, num_videos)
  reconstruct = jax.jit(lambda video: model.apply({"params": params}, video)[0])
  errors = []
  for i in tqdm.trange(num_videos, desc="VAE held-out PSNR", unit="clip", disable=not progress):
    video = jnp.asarray(held_out[i]["video"][None], jnp.float32) / 255.0
    errors.append(float(jnp.mean(jnp.square(jnp.clip(reconstruct(video), 0, 1) - video))))
  return float(-10 * np.log10(np.mean(errors)))
