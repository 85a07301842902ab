"""A trained run on disk: `load_run(path)` gives its config, its kind (DiT or AR-VAE) and
the variables to infer with, checked against the model its config builds.

Sampling, latent extraction, evaluation, export and the AR-VAE's warm start all load runs
through here. Converted and imported checkpoints are runs too (`ardiff convert` writes the
same layout), so they go through the same checks.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax

from ardiffusion_jax.errors import CheckpointError
from ardiffusion_jax.models import ar_vae, dit
from ardiffusion_jax.train.checkpoint import Checkpointer, checkpoint_dir, tree_differences

KINDS = {"dit": "DiT", "vae": "AR-VAE"}


@dataclasses.dataclass(frozen=True)
class Run:
  path: str
  step: int
  config: Any  # the ConfigDict the run was trained (or converted) with
  kind: str  # "dit" or "vae"
  variables: dict  # {"params": ...} and, for the official DiT, {"constants": ...}
  weights: str  # "ema" or "raw"

  def model(self):
    """The model the run's config builds (its weights are known to fit it)."""
    return build_model(self.config, self.kind)


def build_model(config, kind: str):
  return dit.dit_from_config(config.dit) if kind == "dit" else ar_vae.vae_from_config(config.vae)


def kind_of(params) -> str:
  """The model a tree of parameters belongs to: an AR-VAE's has an encoder, a DiT's not.
  `load_run` then proves it by fitting the weights to that model."""
  return "vae" if "encoder" in params else "dit"


def variables_of(state, kind: str, use_ema: bool = True):
  """(variables, "ema" | "raw") to infer with from a saved state (a restored dict or a
  live train state). A DiT run always keeps an EMA, so a missing one is an error; an
  AR-VAE keeps one only when vae_train.ema_decay > 0, and the raw weights stand in."""
  get = state.get if isinstance(state, dict) else lambda key: getattr(state, key, None)
  if kind == "vae":
    with_ema = use_ema and bool(get("ema_params"))
    return {"params": get("ema_params" if with_ema else "params")}, "ema" if with_ema else "raw"
  key = "ema_params" if use_ema else "params"
  if not get(key):
    held = sorted(state) if isinstance(state, dict) else "a train state"
    raise CheckpointError(f"this DiT checkpoint holds no {key!r} (it holds {held}); "
                          f"load it with use_ema={not use_ema}")
  variables = {"params": get(key)}
  if get("constants"):
    variables["constants"] = get("constants")
  return variables, "ema" if use_ema else "raw"


def check_fit(model, variables, source):
  """Flax ignores parameters a model does not use and fails late (or not at all) on
  missing ones, so weights are compared with the model's own tree first: a checkpoint
  whose saved config now builds another model (a preset changed since it was written)
  would otherwise sample or decode wrongly instead of failing."""
  expected = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                          *model.example_inputs()))
  problems = tree_differences(variables, expected)
  if problems:
    raise CheckpointError(
        f"{source}: its weights do not fit the {type(model).__name__} its saved config builds "
        f"now ({len(problems)} differences: {'; '.join(problems[:4])}); the config or a "
        f"preset has changed since the checkpoint was written, so convert or retrain it "
        f"with this code")


def _a(kind: str) -> str:
  return {"dit": "a DiT", "vae": "an AR-VAE"}[kind]


def load_run(path, kind: str = "", use_ema: bool = True) -> Run:
  """The newest readable checkpoint of the run at `path` (a run folder or its
  checkpoints folder). `kind` ("dit" or "vae"), when given, is what the caller needs:
  another kind is an error that says what the run is."""
  if kind and kind not in KINDS:
    raise ValueError(f"unknown kind of run {kind!r}; expected one of {sorted(KINDS)}")
  checkpointer = Checkpointer(checkpoint_dir(path), async_save=False)
  try:
    step, config, state = checkpointer.load_latest(KINDS.get(kind, ""))
  finally:
    checkpointer.close()
  found = kind_of(state.get("params") or state.get("ema_params") or {})
  if kind and found != kind:
    raise CheckpointError(f"{path} holds {_a(found)} run, not {_a(kind)} run")
  section = "dit" if found == "dit" else "vae"
  if section not in config:
    raise CheckpointError(f"{path}: its config has no {section!r} section, so the "
                          f"{KINDS[found]} it holds cannot be built")
  variables, weights = variables_of(state, found, use_ema)
  check_fit(build_model(config, found), variables, path)
  return Run(str(path), step, config, found, variables, weights)
