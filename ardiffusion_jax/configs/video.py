"""What every real-video config shares: the synthetic config's model and training
sections over a `data` section that reads your files (`data.root`). Each dataset's file
(`sky.py`, `taichi.py`, ...) calls `video_dataset_config` with the authors' settings for
that dataset; a config of your own can do the same."""

import ml_collections

from ardiffusion_jax.configs import synthetic

VIDEO_VARIANTS = {"dit": "paper", "vae": "vae", "vae_causal": "vae_causal", "smoke": "smoke",
                  "vae_smoke": "vae_smoke"}


def video_dataset_config(dataset: str, variant, *, num_classes: int = 0, vae_lr: float,
                         disc_start: int, dit_lr: float, grad_clip: float,
                         grad_accum: int) -> ml_collections.ConfigDict:
  """A real-video config: the synthetic config's model and training sections (same
  variant names; `dit` is its `paper`) over a `data` section reading `data.root`, with
  the authors' per-dataset settings (from their VAE and DiT training scripts; listed in
  docs/configs.md) at paper size."""
  variant = variant or "dit"
  if variant not in VIDEO_VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; expected one of {tuple(VIDEO_VARIANTS)}")
  config = synthetic.get_config(VIDEO_VARIANTS[variant])
  config.variant = variant
  smoke = variant in ("smoke", "vae_smoke")
  config.data = ml_collections.ConfigDict(dict(
      name=dataset,
      root="",  # your copy of the dataset (layouts: docs/datasets.md)
      split="train",
      fold=1,  # UCF-101's official split lists 1..3
      num_frames=8 if smoke else 16,
      frame_stride=1,  # the authors take consecutive native-rate frames
      resolution=32 if smoke else 256,
      random_start=True,  # a random clip start per video, drawn from (seed, index)
      seed=0,
      tfds_dir="",  # with name='tfds': a builder directory (ardiff build-tfds) or a data dir
      tfds_name="",  # with a data dir: the TFDS dataset name, e.g. 'ucf101'
  ))
  config.vae.image_size = config.data.resolution
  config.vae_train.clip_frames = min(config.vae_train.clip_frames, config.data.num_frames)
  config.dit.num_frames = config.sample.num_frames = config.data.num_frames
  config.dit.num_classes = num_classes
  if not smoke:
    config.vae.update(variant="official", size="paper", patch_size=16, channel_mult=(1, 1, 2, 2, 4),
                      proxy_head=False)
    # The authors' recipe (their VAE training scripts): AdamW (0.9, 0.999), no EMA.
    config.vae_train.update(pixel_loss="l1", proxy_weight=0.0, chroma_weight=0.0,
                            disc_lr=vae_lr, batch_size=32,
                            lr=vae_lr if variant == "vae" else 1e-6, b2=0.999, ema_decay=0.0)
    if variant == "vae":
      config.vae_train.disc_start = disc_start
    # 16 clips per device on 8 devices, times the authors' accumulation.
    config.train.update(lr=dit_lr, grad_clip=grad_clip, grad_accum=grad_accum,
                        batch_size=128 * grad_accum, weight_decay=1e-4, steps=100_000)
  return config
