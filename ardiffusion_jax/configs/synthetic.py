r"""The embedded default: bouncing shapes with ground-truth physics.

Variants:
  default  64x64, 16 frames: the demo's dataset and tiny models.
  smoke    32x32, 8 frames, few videos: CI and notebooks.
  vae      AR-VAE stages 1-2: frames, L1 (+ LPIPS), PatchGAN from disc_start.
  vae_causal  stage 3: the temporally causal decoder finetuned on clips.
  vae_motion  a frames-stage tokenizer (the demo's) finetuned on clips of 3 frames with
           the motion term, so its latents move in straight lines as the balls do.
  vae_smoke   stages 1-2 at smoke size.
  paper    the paper's official DiT (1152 wide, 28 deep, 16 heads) in bf16 with remat,
           batch 16 per device, FSDP over 8 devices: for planning and GPU runs.
  ablate   the paper's Table 3 rows and Table 2's s on the demo's data and models, 3 seeds
           a row (`ardiff ablate`, ardiffusion_jax/ablate.py).
  ablate_smoke  the same at smoke size, 2 seeds: CI.

Run:
  ardiff demo --config configs/synthetic.py:default --workdir runs/demo
  ardiff demo --config configs/synthetic.py:smoke --workdir runs/smoke
  ardiff plan --config configs/synthetic.py:paper --devices 8
  ardiff train-vae --config configs/synthetic.py:vae --workdir runs/vae
  ardiff train-vae --config configs/synthetic.py:vae_causal --workdir runs/vae_causal \
      --set vae_train.init_from="'runs/vae'"
  ardiff train-vae --config configs/synthetic.py:vae_motion --workdir runs/vae_motion \
      --set vae_train.init_from="'runs/demo/vae'"
  ardiff ablate --config configs/synthetic.py:ablate --workdir runs/ablate \
      --set ablate.tokenizer_from="'runs/demo/vae'"
  ardiff ablate --config configs/synthetic.py:ablate_smoke --workdir runs/ablate_smoke
"""

import ml_collections

VARIANTS = ("default", "smoke", "paper", "vae", "vae_causal", "vae_motion", "vae_smoke",
            "ablate", "ablate_smoke")


def get_config(arg=None):
  variant = arg or "default"
  if variant in ("ablate", "ablate_smoke"):
    return _ablation_config(variant)
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r} for configs/synthetic.py; expected one of {VARIANTS}")
  smoke = variant in ("smoke", "vae_smoke")
  config = ml_collections.ConfigDict()
  config.variant = variant
  config.seed = 0

  config.data = ml_collections.ConfigDict(dict(
      name="synthetic",
      # vae_motion finetunes the demo's tokenizer on the demo's videos.
      num_videos={"smoke": 64, "vae_smoke": 64, "default": 1024,
                  "vae_motion": 1024}.get(variant, 2048),
      num_frames=8 if smoke else 16,
      resolution=32 if smoke else 64,
      min_balls=1,
      max_balls=3,
      radius_range=(0.08, 0.16),
      speed_range=(0.02, 0.06),
      collisions=True,
      substeps=8,
      seed=0,
  ))

  # The AR-VAE tokenizer; sizes from models/ar_vae.py PRESETS.
  config.vae = ml_collections.ConfigDict(dict(
      variant="clean",
      size="tiny",
      image_size=config.data.resolution,
      patch_size=8,
      channel_mult=(1, 1, 2, 2),  # log2(patch_size) + 1 levels
      # A training-only linear patch readout of the decoder ViT: without it the tokenizer
      # trained from scratch stays at the mean image (docs/architecture.md, "The AR-VAE").
      proxy_head=True,
      # Attention starts local: trained from scratch, the tokenizer leaves the mean image
      # after ~150 steps instead of ~450 (docs/experiments/tokenizer.md).
      spatial_init=True,
      num_latent_tokens=32,
      token_dim=4,
      temporal_causal=variant == "vae_causal",
      dtype="float32",
  ))

  # Stage 1 (frames) turns into stage 2 at disc_start; vae_causal is stage 3.
  causal = variant == "vae_causal"
  # default: the demo's budget. Held-out PSNR of the stage alone at seeds 0 / 1: 27.8 /
  # 26.5 dB at 4,000 steps with the rate's final decay; seed 1 27.4 at 5,000 and 28.8 at
  # 6,000 (docs/experiments/tokenizer.md, 2026-12-07 night).
  vae_steps = {"smoke": 20, "vae_smoke": 20, "default": 5000,
               "vae_motion": 1000}.get(variant, 3000)
  motion = variant == "vae_motion"
  config.vae_train = ml_collections.ConfigDict(dict(
      # Frames a step (clips in vae_causal). On a CPU time budget 16 learns as much per step
      # as 32 at a fraction of the cost; 8 falls behind per step by more than its extra
      # steps make up (docs/experiments/tokenizer.md).
      # vae_motion: 6 clips of 3 frames, 18 frames.
      batch_size=8 if smoke else (6 if motion else 16),
      steps=vae_steps,
      clip_frames=config.data.num_frames if causal else (3 if motion else 1),
      # From scratch the tiny tokenizer first sits at the mean image: a constant 2e-3 or
      # more keeps some seeds there, 1e-3 lets every seed measured leave it but climbs
      # slowly after. A linear warmup to 3e-3 over 500 steps leaves it at every seed
      # measured and climbs faster after (docs/experiments/tokenizer.md, 2026-12-04). The
      # smoke variants, 20 steps, keep the constant 1e-3.
      lr=1e-4 if causal else (1e-3 if smoke or motion else 3e-3),
      # The demo holds 3e-3 and decays over its last 1,000 steps ("wsd"): +0.7 and +0.9 dB
      # held out at seeds 0 and 1 over the constant rate (docs/experiments/tokenizer.md,
      # 2026-12-06).
      lr_schedule="wsd" if variant == "default" else "constant",
      lr_final=1e-5,
      warmup_steps=0 if causal or smoke or motion else 500,
      decay_steps=1000 if variant == "default" else 0,  # "wsd": the steps of its final decay
      # The authors use L1. Trained from scratch, the tiny tokenizer stays at the mean
      # image under L1; MSE plus the proxy loss gets it out (docs/experiments/tokenizer.md).
      pixel_loss="l2",
      proxy_weight=0.0 if causal else 1.0,  # the proxy head's MSE (needs vae.proxy_head)
      # The pixel loss again on each pixel's chroma (its colour less its grey level), this
      # many times over. Without it some seeds settle with every ball one pink (the hue
      # left out of the latents) and stay there (docs/experiments/tokenizer.md, 2026-12-04).
      chroma_weight=0.0 if causal else 4.0,
      # How much the latents' paths may bend in time (train/vae.py motion_penalty): latents
      # that move in straight lines, as the balls do, let the DiT extrapolate. From scratch
      # it holds the tokenizer at the mean image, so it finetunes a trained one. Its effect
      # on the DiT's samples differed between two seeds (docs/experiments/tokenizer.md,
      # 2026-12-06).
      motion_weight=0.05 if motion else 0.0,
      disc_lr=2e-4,
      b1=0.9,
      # The authors use 0.999. From scratch, the tiny tokenizer climbs about the same with
      # either for its first ~1,000 steps, then faster with 0.99 (docs/experiments/tokenizer.md).
      b2=0.99,
      # The authors keep no EMA. Extraction and decoding use this one; in the tiny
      # tokenizer's runs it reconstructs better than the raw weights (docs/results.md).
      ema_decay=0.99,
      weight_decay=1e-4,
      grad_clip=1.0,
      # -1: no discriminator. The demo (default, and smoke at CI's size) has no adversarial
      # stage, whatever vae_train.steps is set to; vae_smoke runs the alternation.
      disc_start=-1 if causal or motion or variant in ("default", "smoke") else (
          10 if smoke else 2000),
      disc_weight=0.1,
      perceptual_weight=1.0,
      lpips_weights="",  # LPIPS + VGG-16 .npz (ardiff convert lpips); empty: no perceptual loss
      lpips_rescale_inputs=True,  # [0,1] -> [-1,1]; the authors skip this
      trainable="temporal" if causal else "all",
      init_from="",  # a run folder: stage 3 starts from stage 2, stage 1 from ardiff convert titok-init
      log_every=1 if smoke else 50,
      checkpoint_every=10 if smoke else 500,
      keep_checkpoints=3,
      max_nonfinite_steps=1,  # stop at the first non-finite step; N: skip up to N-1 in a row
  ))

  config.diffusion = ml_collections.ConfigDict(dict(
      num_timesteps=1000,
      beta_schedule="scaled_linear",
      beta_start=1e-4,
      beta_end=0.02,
      parameterization="x0",
      # () trains on the unweighted MSE, as the authors do; (lo, hi) weighs each frame's
      # x̂0 error by clip(SNR_t, lo, hi) (diffusion.loss_weights).
      loss_snr_clip=(),
      timestep_scheme="fopp",
      ddim_grid="clean",
      sampling_steps=10 if smoke else 50,
      eta=0.0,
  ))

  config.sample = ml_collections.ConfigDict(dict(
      num_frames=8 if smoke else 16,
      s_values=(0, 5, 10) if smoke else (0, 5, 10, 25, 50),
  ))

  # The causal DiT over [F, 32, 4] latents; sizes from models/dit.py PRESETS.
  config.dit = ml_collections.ConfigDict(dict(
      variant="clean",
      size="demo",
      num_frames=config.data.num_frames,
      tokens_per_frame=config.vae.num_latent_tokens,
      # A frame's 32 latent tokens as one transformer token: the tiny DiT over every latent
      # token (64 wide, 2 deep) did not carry a frame's balls to the next in the demo's
      # budget, and this one, 4x wider, 2x deeper and cheaper a step, does
      # (docs/experiments/dit.md, 2026-12-03 evening).
      token_patch=config.vae.num_latent_tokens,
      in_channels=config.vae.token_dim,
      num_classes=config.data.max_balls - config.data.min_balls + 1,  # label = balls - min
      # Self-conditioning: the DiT also reads its own earlier x̂0 (models/dit.py).
      self_condition=False,
      # Scanned, though unrolled steps are faster on a CPU at small sizes: unrolled layers
      # draw other initial weights, and the demo was measured scanned (docs/experiments/dit.md).
      scan_layers=True,
      remat=False,
      attention_chunks=4,  # skip masked block-causal attention in 4 query groups (exact; 1: off)
      dtype="float32",
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=8 if smoke else 32,
      steps={"smoke": 20, "vae_smoke": 20, "default": 1200}.get(variant, 3000),
      lr=1e-3,
      lr_schedule="cosine",
      lr_final=1e-5,
      warmup_steps=5 if smoke else 200,
      weight_decay=0.0,
      b1=0.9,
      b2=0.999,
      grad_clip=1.0,
      grad_accum=1,
      ema_decay=0.999,
      label_dropout=0.1,
      # With dit.self_condition: the share of examples that read the model's own x̂0.
      self_condition_rate=0.5,
      log_every=1 if smoke else 50,
      checkpoint_every=10 if smoke else 500,
      keep_checkpoints=3,
      max_nonfinite_steps=1,  # stop at the first non-finite step; N: skip up to N-1 in a row
      latents_dir="",  # ArrayRecord latent shards (ardiff extract writes them)
  ))

  # -1 takes the devices the other axes leave.
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  if variant == "paper":
    config.dit.update(variant="official", size="paper", token_patch=1, num_classes=0,
                      remat=True, dtype="bfloat16")
    config.train.update(batch_size=128, lr=2e-4, lr_schedule="constant", warmup_steps=0,
                        ema_decay=0.9999)
    config.mesh.update(data=1, fsdp=-1)

  config.demo = ml_collections.ConfigDict(dict(
      preview_videos=4 if smoke else 8,
      schedule_samples=2000 if smoke else 20000,
      # Per s at sample.num_frames: 64 videos, as physics statistics need to tell settings apart.
      sample_videos=4 if smoke else 64,
      grid_videos=4 if smoke else 16,  # shown in each setting's grid.gif
      decode_batch=4 if smoke else 16,
      long_frames=16 if smoke else 256,  # the long videos (rolling KV cache past 16 frames)
      long_videos=2 if smoke else 8,
      long_s=(2,) if smoke else (5, 50),
      # Labels cycle through the classes (1, 2, 3 balls), as the data's are uniform; False:
      # the null label. The demo's DiT learns its label, and samples steadier counts with it
      # (docs/experiments/dit.md, 2026-12-03 evening).
      class_conditional=True,
      # Held-out clips: the VAE's PSNR and reconstruction physics, the samples' reference.
      real_clips=8 if smoke else 64,
  ))
  return config


def _ablation_config(variant):
  """The demo's config (smoke's for ablate_smoke) and the `ablate` section."""
  smoke = variant == "ablate_smoke"
  config = get_config("smoke" if smoke else "default")
  config.variant = variant
  # A third of the demo's DiT steps: the 6 Table 3 rows x 3 seeds of DiTs, each sampled
  # 64 times at five s, take about 2 hours of the slow 2-core CPU (estimated from the run
  # of 2026-12-07, made in parts); the official variant's 3 (77 context tokens,
  # full-mode sampling) add most of an hour (docs/results.md).
  config.train.steps = 20 if smoke else 400
  if smoke:
    # CI trains 14 DiTs: the tiny preset, unrolled, compiles in a fraction of the time.
    # 16 frames, as `ardiff eval` scores: a bidirectional DiT cannot sample them at s = 0
    # from a shorter window.
    config.dit.update(size="tiny", scan_layers=False, num_frames=16)
    config.data.num_frames = config.sample.num_frames = 16
  # Neither tokenizer has an adversarial stage (the demo's has none either).
  config.vae_train.disc_start = -1
  # The AR-VAE's stage 3 (the temporal-causal decoder, trained alone on clips), after
  # the demo's frames stage.
  causal = get_config("vae_causal").vae_train
  causal.update(batch_size=2, log_every=config.vae_train.log_every,
                checkpoint_every=config.vae_train.checkpoint_every)
  config.ablate = ml_collections.ConfigDict(dict(
      rows=("ar_diffusion", "no_fopp", "no_improved_vae", "no_causal_attention", "no_x0",
            "no_nondecreasing", "official"),
      seeds=2 if smoke else 3,
      s_values=(0, 2) if smoke else (0, 5, 10, 25, 50),
      table_s=2 if smoke else 5,  # Table 3's columns at this s; every s is in the plot
      videos=2 if smoke else 64,  # per s, against as many held-out clips
      # physics, plus fvd16 if there is time: I3D takes 1.7 s a clip on the 2-core CPU
      # (docs/results.md#metrics): 21 models x (64 real + 5 x 64 sampled clips), about
      # 4 hours here.
      metrics=("physics",),
      fid_weights="",  # an InceptionV3 .npz (ardiff convert fid-inception) adds FID-img
      batch_size=2 if smoke else 16,
      no_fopp_scheme="increasing_uniform",  # or naive_increasing
      plain_token_dim=12,  # "- improved VAE": the authors' 12 channels a token
      # Stage 3's steps; 0 skips it. Smoke: its compilation alone took 5 minutes on the
      # slow 2-core CPU, and its chaining is tested without training (test_ablate.py).
      causal_steps=0 if smoke else 300,
      causal_vae_train=causal,
      tokenizer_from="",  # a trained frames-stage run to start from, e.g. runs/demo/vae
  ))
  return config
