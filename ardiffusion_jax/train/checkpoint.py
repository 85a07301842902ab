"""Orbax checkpoints: the train state, the grain iterator state and the config JSON.

Saves are asynchronous and keep the newest `keep` steps. A step directory only counts
once orbax has committed it, so a run killed mid-save resumes from the previous one.
"""

import json

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from grain import checkpoint as grain_checkpoint

from ardiffusion_jax.errors import CheckpointError


def checkpoint_dir(path) -> str:
  """A run folder's `checkpoints` folder, or `path` itself when it is one."""
  path = str(path).rstrip("/")
  candidate = epath.Path(path) / "checkpoints"
  return str(candidate) if candidate.is_dir() else path


class Checkpointer:

  def __init__(self, directory, keep: int = 3, async_save: bool = True):
    # epath: local folders and object stores (gs://...) alike.
    self.directory = epath.Path(directory)
    if not str(directory).startswith(("gs://", "s3://")):
      self.directory = self.directory.absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data", "config"))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator=None, config=None, force: bool = False):
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain_checkpoint.CheckpointSave(data_iterator)
    if config is not None:
      items["config"] = ocp.args.JsonSave(json.loads(config.to_json_best_effort()))
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state, data_iterator=None, step=None):
    """Restores `step` (default: the latest) into the shapes and shardings of
    `abstract_state`, and the data iterator in place. Returns (state, step) or
    (None, None) when there is no checkpoint."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None, None
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain_checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as error:
      raise CheckpointError(f"checkpoint {self.directory / str(step)} does not match the "
                            f"model and optimizer in the config: {error}") from error
    return restored["state"], step

  def restore_raw(self, step=None):
    """The saved state tree as written, on one local device, without a target (for
    reading another run's weights, whatever topology wrote them)."""
    step = self.latest_step() if step is None else step
    fallback = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(fallback_sharding=fallback)))
    return restored["state"]

  def restore_config(self, step=None):
    """The config saved with `step` (default: the latest), as a ConfigDict."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    except (ValueError, KeyError, FileNotFoundError) as error:
      raise CheckpointError(f"checkpoint {self.directory / str(step)} has no saved config: "
                            f"{error}") from error
    return ml_collections.ConfigDict(restored["config"])

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
