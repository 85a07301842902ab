"""`ardiff extract`: encode a video dataset into ArrayRecord latent shards.

Shard k holds clips [k·S, (k+1)·S) in dataset order, so the output is deterministic.
Process p writes the shards k with k % P == p. A shard appears under its final name only
once complete, so a restarted extraction skips finished shards and redoes the rest:
every clip is written exactly once. Latents are the encoder's raw mean, as the authors
store them; the DiT normalises each token when it reads them. `latents_info.json` names
the AR-VAE run, so `ardiff sample` can decode what a DiT trained on these shards makes.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from ardiffusion_jax.data import datasets, latents as latents_lib
from ardiffusion_jax import runs
from ardiffusion_jax.generate import LATENTS_INFO, encoder_fingerprint
from ardiffusion_jax.models import ar_vae
from ardiffusion_jax.train.checkpoint import checkpoint_dir as find_checkpoints


def extract(config, vae_ckpt, out_dir, shard_size: int = 256, batch_size: int = 8,
            process_index=None, process_count=None, on_shard=None) -> dict:
  """Writes this process's latent shards of `config.data`, encoded by the AR-VAE run
  `vae_ckpt` (built from the config saved with it); returns counts. `on_shard(k)` runs
  after each shard is complete."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  source = datasets.video_source(config.data)
  vae = runs.load_run(vae_ckpt, "vae")
  model, params = vae.model(), vae.variables["params"]
  encode = jax.jit(lambda video: model.apply({"params": params}, video,
                                             method=ar_vae.ARVAE.encode)[0])
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  if process_index == 0:
    info = {"vae_checkpoint": str(pathlib.Path(find_checkpoints(vae_ckpt)).absolute()),
            "vae_encoder_fingerprint": encoder_fingerprint(params),
            "clips": len(source), "shard_size": shard_size}
    (out / LATENTS_INFO).write_text(json.dumps(info, indent=2))
  num_shards = -(-len(source) // shard_size)
  mine = [k for k in range(num_shards) if k % process_count == process_index]
  todo = [k for k in mine if not (out / latents_lib.SHARD_PATTERN.format(index=k)).exists()]
  progress = tqdm.tqdm(total=sum(min(shard_size, len(source) - k * shard_size) for k in todo),
                       desc="extract latents", unit="clip", disable=process_index != 0)
  written = 0
  for k in todo:
    indices = range(k * shard_size, min((k + 1) * shard_size, len(source)))
    examples = []
    for start in range(0, len(indices), batch_size):
      batch = [source[i] for i in indices[start:start + batch_size]]
      video = jnp.asarray(np.stack([b["video"] for b in batch]), jnp.float32) / 255.0
      means = np.asarray(encode(video))
      examples += [{"latents": m, "label": b["label"], "index": b["index"]}
                   for m, b in zip(means, batch)]
      progress.update(len(batch))
    written += latents_lib.write_latent_shard(out / latents_lib.SHARD_PATTERN.format(index=k),
                                              examples)
    if on_shard is not None:
      on_shard(k)
  progress.close()
  return {"shards": len(mine), "skipped": len(mine) - len(todo), "clips_written": written,
          "skipped_files": int(getattr(source, "skipped", 0))}
