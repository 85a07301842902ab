r"""Sky-Timelapse: frame folders (unconditional).

Layout:
  ROOT/sky_train/<video>/<clip>/*.jpg and ROOT/sky_test/...: every folder that holds
  frames is one video.

Variants: dit (default; the paper's official DiT over latents from `ardiff extract`),
vae (AR-VAE stages 1-2 at 256 px, the authors' L1 + LPIPS + PatchGAN schedule),
vae_causal (stage 3, the temporal-causal decoder), smoke / vae_smoke (tiny models, 32 px,
8 frames: for checking a data layout on a CPU). Every variant needs --set data.root=...

Run:
  ardiff train-vae --config configs/sky.py:vae --workdir runs/sky_vae --set data.root=/data/sky
  ardiff extract --config configs/sky.py:dit --vae-ckpt runs/sky_vae --out runs/sky_latents \
      --set data.root=/data/sky
  ardiff train --config configs/sky.py:dit --workdir runs/sky_dit --set data.root=/data/sky \
      --set train.latents_dir="'runs/sky_latents'"
  ardiff train-vae --config configs/sky.py:vae_smoke --workdir runs/sky_check --set data.root=/data/sky
"""

from ardiffusion_jax.configs.video import video_dataset_config


def get_config(arg=None):
  # The authors' settings for this dataset, from their VAE and DiT training scripts
  # (docs/configs.md).
  return video_dataset_config("sky", arg,
                              vae_lr=2e-4, disc_start=100_000, dit_lr=2e-4, grad_clip=1.0, grad_accum=6)
