"""Orbax checkpoints: the train state, the grain iterator state and the config JSON.

Saves are asynchronous and keep the newest `keep` steps. A step directory only counts
once orbax has committed it, so a run killed mid-save resumes from the previous one.

Restoring falls back from an unreadable step (a truncated file, an emptied folder) to
the newest readable one: the broken step is moved to `unreadable/` beside the steps,
never deleted, and one line says which step was skipped and why. A state that does not
fit the model is the config's problem, not the disk's, so it is an error, not a
fallback.
"""

import json
import logging
import os
import sys
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from grain import checkpoint as grain_checkpoint
from jax.experimental import multihost_utils

from ardiffusion_jax.errors import CheckpointError

log = logging.getLogger(__name__)
UNREADABLE = "unreadable"  # where broken steps are moved (orbax ignores non-step names)


def checkpoint_dir(path) -> str:
  """A run folder's `checkpoints` folder, or `path` itself when it is one."""
  path = str(path).rstrip("/")
  candidate = epath.Path(path) / "checkpoints"
  return str(candidate) if candidate.is_dir() else path


def _one_line(error: BaseException, limit: int = 240) -> str:
  text = " ".join(str(error).split()) or type(error).__name__
  return text if len(text) <= limit else text[:limit] + "..."


def _quiet_closed_loop_reports():
  """When a read fails, tensorstore still finishes the step's other reads and calls back
  into orbax's asyncio loop, which is closed by then; each callback would print a
  traceback ("Event loop is closed", as an unraisable exception) under the one line that
  already says the step was skipped. Drops just those; anything else still reaches the
  previous hook."""
  previous = sys.unraisablehook
  if getattr(previous, "ardiff_quiet", False):
    return

  def hook(unraisable):
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      previous(unraisable)

  hook.ardiff_quiet = True
  sys.unraisablehook = hook


class _UnretrievedReadFilter(logging.Filter):
  """Drops asyncio's "Task exception was never retrieved" reports of reads inside the
  step folders in `folders`: when one read of a broken step fails, orbax stops waiting
  and the step's other failed reads are reported (with a traceback) when their tasks are
  collected, under the one line that already says the step was skipped."""

  def __init__(self):
    super().__init__()
    self.folders = set()

  def filter(self, record):
    if not record.getMessage().startswith("Task exception was never retrieved"):
      return True
    error = record.exc_info[1] if record.exc_info else None
    return not any(folder in str(error) for folder in self.folders)


_UNRETRIEVED_READS = _UnretrievedReadFilter()


def _quiet_unretrieved_reads(step_folder):
  _UNRETRIEVED_READS.folders.add(f"{step_folder}{os.sep}")
  asyncio_log = logging.getLogger("asyncio")
  if _UNRETRIEVED_READS not in asyncio_log.filters:
    asyncio_log.addFilter(_UNRETRIEVED_READS)


def _every_process(ok: bool) -> bool:
  """True when `ok` holds on every process: all of them then pick the same step."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


def _key_name(key) -> str:
  for attribute in ("key", "name", "idx"):  # dict keys, dataclass fields, sequence indices
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def tree_differences(saved, expected) -> list:
  """Where two trees of arrays (or shape structs) differ in keys or shapes; a dataclass
  (TrainState) and the dict orbax reads it back as compare equal."""
  shapes = lambda tree: {"/".join(map(_key_name, path)): tuple(np.shape(leaf))
                         for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  have, want = shapes(saved), shapes(expected)
  return ([f"{key} missing" for key in want if key not in have] +
          [f"{key} not in the model" for key in have if key not in want] +
          [f"{key} is {have[key]}, the model's {want[key]}" for key in want
           if key in have and have[key] != want[key]])


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

  def _newest_readable(self, read):
    """(step, read(step)) for the newest step `read` can load, moving unreadable ones
    aside; (None, None) when there is no step at all. `read` raises CheckpointError for
    a readable step that is wrong for the caller: that stops the search."""
    skipped = []
    # Before the first read: a failing read's callbacks can reach the closed loop before
    # the read itself raises.
    _quiet_closed_loop_reports()
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        result, error = read(step), None
      except CheckpointError:
        raise
      except Exception as failure:  # orbax and tensorstore raise bare Exceptions
        result, error = None, failure
        _quiet_unretrieved_reads(self.directory / str(step))
      if _every_process(error is None):
        return step, result
      skipped.append(step)
      self._move_aside(step, error)
    if skipped:
      raise CheckpointError(f"no readable checkpoint in {self.directory}: steps "
                            f"{', '.join(map(str, skipped))} were unreadable and are now in "
                            f"{self.directory / UNREADABLE}")
    return None, None

  def _move_aside(self, step: int, error):
    reason = _one_line(error) if error is not None else "unreadable on another process"
    target = self.directory / UNREADABLE / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    where = f"moved to {target}"
    if jax.process_index() == 0:
      try:
        target.parent.mkdir(parents=True, exist_ok=True)
        (self.directory / str(step)).rename(target)
      except OSError as failure:  # a read-only run folder: skip it in place
        where = f"left in place ({_one_line(failure, 80)})"
    log.warning("checkpoint step %d in %s is unreadable, skipped (%s); %s", step,
                self.directory, reason, where)
    _every_process(True)  # a barrier: process 0 has moved the step before anyone reloads
    self.manager.reload()

  def _state_metadata(self, step):
    """The saved state's tree of shapes, read without its arrays."""
    metadata = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "state")
    return metadata.tree

  def restore(self, abstract_state, data_iterator=None, step=None):
    """Restores `step` (default: the newest readable one) into the shapes and shardings
    of `abstract_state`, and the data iterator in place. Returns (state, step) or
    (None, None) when there is no checkpoint."""

    def read(step):
      differences = tree_differences(self._state_metadata(step), abstract_state)
      if differences:
        raise CheckpointError(
            f"checkpoint {self.directory / str(step)} does not match the model and optimizer "
            f"in the config ({len(differences)} differences: {'; '.join(differences[:4])}); "
            f"a run resumes only under the config it was started with (a learning-rate "
            f"warmup, for one, adds a step count to the optimizer state): train into a new "
            f"workdir, or restore that config")
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if data_iterator is not None:
        items["data"] = grain_checkpoint.CheckpointRestore(data_iterator)
      return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    if step is not None:
      return read(step), step
    step, state = self._newest_readable(read)
    return state, step

  def restore_raw(self, step=None):
    """The saved state tree as written, on one local device, without a target (for
    reading another run's weights, whatever topology wrote them)."""
    step = self.latest_step() if step is None else step
    fallback = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(fallback_sharding=fallback)))
    return restored["state"]

  def _read_config(self, step):
    restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return ml_collections.ConfigDict(restored["config"])

  def load_latest(self, kind: str = ""):
    """(step, config, raw state) of the newest step whose config and weights both
    read: what sampling, export, extraction and warm starts load. Raises
    CheckpointError when there is no checkpoint (of `kind`, for the message)."""
    step, loaded = self._newest_readable(
        lambda step: (self._read_config(step), self.restore_raw(step)))
    if step is None:
      raise CheckpointError(f"no {kind + ' ' if kind else ''}checkpoint in {self.directory}")
    return (step, *loaded)

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
