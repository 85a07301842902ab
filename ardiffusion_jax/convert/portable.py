"""Portable checkpoints: `ardiff export` and `ardiff convert portable`.

A portable checkpoint is a folder any JAX pipeline can read without this package:

    config.json          {"format", "kind": "dit"|"vae", "weights": "ema"|"raw", "config": {...}}
    model.safetensors    (safetensors) flat "/"-joined keys, e.g. params/blocks/attn/qkv/kernel
    params/              (orbax) the same tree, nested, as an orbax PyTree checkpoint

    flat = safetensors.numpy.load_file("out/model.safetensors")
    variables = flax.traverse_util.unflatten_dict(flat, sep="/")   # {"params": ..., "constants": ...}
"""

import dataclasses
import json
import pathlib

import flax
import ml_collections
import numpy as np

from ardiffusion_jax import runs
from ardiffusion_jax.convert import write_model_checkpoint
from ardiffusion_jax.errors import CheckpointError

FORMAT = "ardiffusion_jax-portable/1"
FORMATS = ("safetensors", "orbax")


@dataclasses.dataclass
class Bundle:
  flat: dict  # "/"-joined key -> numpy array
  config: dict
  kind: str  # "dit" or "vae"
  weights: str  # "ema" or "raw"


def export(ckpt, fmt: str, out, use_ema: bool = True) -> Bundle:
  """Writes the newest checkpoint of a DiT or AR-VAE run as a portable folder `out`."""
  if fmt not in FORMATS:
    raise CheckpointError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
  run = runs.load_run(ckpt, use_ema=use_ema)
  config = json.loads(run.config.to_json_best_effort())
  kind, weights = run.kind, run.weights
  flat = {k: np.asarray(v)
          for k, v in flax.traverse_util.flatten_dict(run.variables, sep="/").items()}
  out = pathlib.Path(out)
  if out.exists() and any(out.iterdir()):
    raise CheckpointError(f"{out} is not empty; choose a new --out folder")
  out.mkdir(parents=True, exist_ok=True)
  if fmt == "safetensors":
    from safetensors.numpy import save_file
    save_file(flat, str(out / "model.safetensors"), metadata={"format": FORMAT})
  else:
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as saver:
      saver.save((out / "params").absolute(), flax.traverse_util.unflatten_dict(flat, sep="/"))
  meta = {"format": FORMAT, "kind": kind, "weights": weights, "config": config}
  (out / "config.json").write_text(json.dumps(meta, indent=1))
  return Bundle(flat, config, kind, weights)


def read_portable(path) -> Bundle:
  path = pathlib.Path(path)
  meta_path = path / "config.json"
  if not meta_path.is_file():
    raise CheckpointError(f"{path} is not a portable checkpoint (no config.json)")
  meta = json.loads(meta_path.read_text())
  if meta.get("format") != FORMAT:
    raise CheckpointError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
  if (path / "model.safetensors").is_file():
    from safetensors.numpy import load_file
    flat = load_file(str(path / "model.safetensors"))
  elif (path / "params").is_dir():
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as loader:
      tree = loader.restore((path / "params").absolute())
    flat = {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(tree, sep="/").items()}
  else:
    raise CheckpointError(f"{path} has neither model.safetensors nor params/")
  return Bundle(flat, meta["config"], meta["kind"], meta["weights"])


def convert_portable(path, output) -> Bundle:
  """A portable folder -> our checkpoint layout (what `ardiff sample` reads)."""
  bundle = read_portable(path)
  variables = flax.traverse_util.unflatten_dict(bundle.flat, sep="/")
  state = {"params": variables["params"]}  # what the VAE decodes with, whichever weights they are
  if bundle.kind == "dit":
    state = {"ema_params" if bundle.weights == "ema" else "params": variables["params"]}
    if "constants" in variables:
      state["constants"] = variables["constants"]
  write_model_checkpoint(output, ml_collections.ConfigDict(bundle.config), state)
  return bundle
