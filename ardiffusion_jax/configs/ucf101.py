r"""UCF-101: 101 action classes, avi files, the official split lists (class-conditional).

Layout:
  ROOT/classInd.txt, ROOT/trainlist0{1,2,3}.txt, ROOT/testlist0{1,2,3}.txt (or in
  ROOT/ucfTrainTestlist/), videos in ROOT/UCF-101/<Class>/v_*.avi (or ROOT/<Class>/).

Variants: dit (default; the paper's official DiT over latents from `ardiff extract`),
vae (AR-VAE stages 1-2 at 256 px, the authors' L1 + LPIPS + PatchGAN schedule),
vae_causal (stage 3, the temporal-causal decoder), smoke / vae_smoke (tiny models, 32 px,
8 frames: for checking a data layout on a CPU). Every variant needs --set data.root=...

Run:
  ardiff train-vae --config configs/ucf101.py:vae --workdir runs/ucf101_vae --set data.root=/data/ucf101 --set data.fold=3
  ardiff extract --config configs/ucf101.py:dit --vae-ckpt runs/ucf101_vae --out runs/ucf101_latents \
      --set data.root=/data/ucf101
  ardiff train --config configs/ucf101.py:dit --workdir runs/ucf101_dit --set data.root=/data/ucf101 \
      --set train.latents_dir="'runs/ucf101_latents'"
  ardiff train-vae --config configs/ucf101.py:vae_smoke --workdir runs/ucf101_check --set data.root=/data/ucf101
"""

from ardiffusion_jax.configs.video import video_dataset_config


def get_config(arg=None):
  # The authors' settings for this dataset, from their VAE and DiT training scripts
  # (docs/configs.md).
  return video_dataset_config("ucf101", arg,
                              num_classes=101, vae_lr=2e-4, disc_start=100_000, dit_lr=1e-4, grad_clip=0.1, grad_accum=6)
