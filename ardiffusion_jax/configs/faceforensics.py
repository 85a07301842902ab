r"""FaceForensics: mp4 files (unconditional).

Layout:
  ROOT/train/*.mp4 and ROOT/test/*.mp4 (sub-folders are searched too).

Variants: dit (default; the paper's official DiT over latents from `ardiff extract`),
vae (AR-VAE stages 1-2 at 256 px, the authors' L1 + LPIPS + PatchGAN schedule),
vae_causal (stage 3, the temporal-causal decoder), smoke / vae_smoke (tiny models, 32 px,
8 frames: for checking a data layout on a CPU). Every variant needs --set data.root=...

Run:
  ardiff train-vae --config configs/faceforensics.py:vae --workdir runs/faceforensics_vae --set data.root=/data/faceforensics
  ardiff extract --config configs/faceforensics.py:dit --vae-ckpt runs/faceforensics_vae --out runs/faceforensics_latents \
      --set data.root=/data/faceforensics
  ardiff train --config configs/faceforensics.py:dit --workdir runs/faceforensics_dit --set data.root=/data/faceforensics \
      --set train.latents_dir="'runs/faceforensics_latents'"
  ardiff train-vae --config configs/faceforensics.py:vae_smoke --workdir runs/faceforensics_check --set data.root=/data/faceforensics
"""

from ardiffusion_jax.configs.video import video_dataset_config


def get_config(arg=None):
  # The authors' settings for this dataset, from their VAE and DiT training scripts
  # (docs/configs.md).
  return video_dataset_config("faceforensics", arg,
                              vae_lr=1e-4, disc_start=50_000, dit_lr=1e-4, grad_clip=0.1, grad_accum=3)
