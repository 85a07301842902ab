r"""Taichi-HD: mp4 files or png frame folders (unconditional).

Layout:
  ROOT/train/*.mp4 or ROOT/train/<video>/*.png, and ROOT/test/ likewise.

Variants: dit (default; the paper's official DiT over latents from `ardiff extract`),
vae (AR-VAE stages 1-2 at 256 px, the authors' L1 + LPIPS + PatchGAN schedule),
vae_causal (stage 3, the temporal-causal decoder), smoke / vae_smoke (tiny models, 32 px,
8 frames: for checking a data layout on a CPU). Every variant needs --set data.root=...

Run:
  ardiff train-vae --config configs/taichi.py:vae --workdir runs/taichi_vae --set data.root=/data/taichi
  ardiff extract --config configs/taichi.py:dit --vae-ckpt runs/taichi_vae --out runs/taichi_latents \
      --set data.root=/data/taichi
  ardiff train --config configs/taichi.py:dit --workdir runs/taichi_dit --set data.root=/data/taichi \
      --set train.latents_dir="'runs/taichi_latents'"
  ardiff train-vae --config configs/taichi.py:vae_smoke --workdir runs/taichi_check --set data.root=/data/taichi
"""

from ardiffusion_jax.configs.video import video_dataset_config


def get_config(arg=None):
  # The authors' settings for this dataset, from their VAE and DiT training scripts
  # (docs/configs.md).
  return video_dataset_config("taichi", arg,
                              vae_lr=1e-4, disc_start=50_000, dit_lr=2e-4, grad_clip=1.0, grad_accum=6)
