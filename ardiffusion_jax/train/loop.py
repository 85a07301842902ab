"""The training loop every model shares: lock, resume, step, guard, log, checkpoint.

It knows nothing about the model: it gets a jitted step `(state, batch) -> (state,
metrics)`, an abstract state for restoring, and a checkpointable data iterator. The DiT
(`train/dit.py`) and the AR-VAE use it unchanged.

The step's metrics must hold `loss`, `update_finite` (the step applied its update: the
loss and gradients were finite; else the state is left as it was) and `state_finite`
(every updated parameter and EMA leaf is finite), and may hold `grad_norm`. The loop
never saves a step that is not finite in both senses, so every checkpoint on disk is
finite and the newest is the last good state.
"""

import dataclasses
import logging
import signal
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from ardiffusion_jax.errors import TrainingDiverged
from ardiffusion_jax.train import sharding
from ardiffusion_jax.train.checkpoint import Checkpointer
from ardiffusion_jax.train.lock import WorkdirLock
from ardiffusion_jax.train.logging import MetricWriter

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoopSettings:
  total_steps: int
  log_every: int = 50
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  async_checkpoints: bool = True
  # Stop after this many non-finite steps in a row (1: at the first, the default); the
  # ones before are skipped, their updates dropped.
  max_nonfinite_steps: int = 1

  @classmethod
  def from_config(cls, train_config) -> "LoopSettings":
    """From a config's `train` or `vae_train` section."""
    return cls(total_steps=train_config.steps, log_every=train_config.log_every,
               checkpoint_every=train_config.checkpoint_every,
               keep_checkpoints=train_config.keep_checkpoints,
               max_nonfinite_steps=train_config.get("max_nonfinite_steps", 1))


@dataclasses.dataclass
class LoopResult:
  state: Any
  step: int
  resumed_from: Any  # the checkpoint step it started from, or None
  stopped_early: bool  # a SIGTERM asked it to stop
  skipped_files: int = 0  # unreadable dataset files skipped (all processes)
  nonfinite_steps: int = 0  # steps whose update was dropped as non-finite


def _first_non_finite(tree) -> str:
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    leaf = np.asarray(leaf)
    if np.issubdtype(leaf.dtype, np.floating) and not np.all(np.isfinite(leaf)):
      return jax.tree_util.keystr(path)
  return ""


def _skipped_files(source) -> int:
  """Unreadable files the data source skipped, summed over processes."""
  count = int(getattr(source, "skipped", 0))
  if jax.process_count() > 1:
    count = int(np.sum(multihost_utils.process_allgather(np.array(count))))
  return count


def _describe_step(metrics) -> str:
  parts = [f"the loss is {float(metrics['loss']):.4g}"]
  if "grad_norm" in metrics:
    parts.append(f"the gradient norm is {float(metrics['grad_norm']):.4g}")
  if not metrics["state_finite"]:
    parts.append("the updated parameters hold NaN or inf")
  return ", ".join(parts)


class _StopFlag:
  """Set by SIGTERM (a preemption notice); restored handler on exit."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler, no preemption save
      self._previous = None
    return self

  def _handle(self, *_):
    self.requested = True

  def __exit__(self, *_):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def any_process(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    flags = multihost_utils.process_allgather(np.array(self.requested))
    return bool(np.any(flags))


def run(*, workdir, mesh, init_state: Callable[[], Any], abstract_state, step_fn, data_iterator,
        settings: LoopSettings, config=None, hooks: Sequence[Callable] = (),
        desc: str = "train", logdir=None, data_source=None) -> LoopResult:
  """Trains until `settings.total_steps`, resuming from `workdir/checkpoints`.

  `init_state()` builds a fresh state and is only called when there is no checkpoint.
  Each hook is called as hook(step, state, metrics, checkpointer) after every step.
  Metrics go to `logdir` (default: workdir), which must be a local folder.
  `data_source` (the iterator's random-access source) reports its skipped files.
  """
  primary = jax.process_index() == 0
  lock = WorkdirLock(workdir).acquire()  # before anything reads or writes the workdir
  checkpointer = writer = progress = None
  try:
    checkpointer = Checkpointer(f"{workdir}/checkpoints", keep=settings.keep_checkpoints,
                                async_save=settings.async_checkpoints)
    writer = MetricWriter(logdir or workdir, enabled=primary)
    state, resumed_from = checkpointer.restore(abstract_state, data_iterator)
    state = init_state() if state is None else state
    writer.truncate_after(resumed_from or 0)  # records past the resumed step are redone
    step = int(jax.device_get(state.step))

    progress = tqdm.tqdm(total=settings.total_steps, initial=step, desc=desc, unit="step",
                         disable=not primary, dynamic_ncols=True)
    last_log_time, last_log_step = time.perf_counter(), step
    stopped_early = False
    in_a_row = dropped = 0
    with _StopFlag() as stop, sharding.mesh_context(mesh):
      while step < settings.total_steps:
        local_batch = next(data_iterator)
        bad = _first_non_finite(local_batch)
        if bad:
          raise TrainingDiverged(step + 1, f"the batch holds NaN or inf in {bad}",
                                 checkpointer.latest_step())
        state, metrics = step_fn(state, sharding.global_batch(local_batch, mesh))
        metrics = jax.device_get(metrics)
        step += 1
        if not metrics["state_finite"]:  # the update cannot be undone: stop, save nothing
          raise TrainingDiverged(step, _describe_step(metrics), checkpointer.latest_step())
        if not metrics["update_finite"]:
          in_a_row, dropped = in_a_row + 1, dropped + 1
          if in_a_row >= settings.max_nonfinite_steps:
            raise TrainingDiverged(
                step, f"{_describe_step(metrics)} ({in_a_row} non-finite steps in a row; "
                      f"max_nonfinite_steps={settings.max_nonfinite_steps})",
                checkpointer.latest_step())
          log.warning("step %d is not finite (%s): its update is dropped (%d in a row)", step,
                      _describe_step(metrics), in_a_row)
        else:
          in_a_row = 0
        lock.heartbeat()
        progress.update(1)
        progress.set_postfix(loss=f"{float(metrics['loss']):.4f}", refresh=False)

        done = step == settings.total_steps
        if step % settings.log_every == 0 or done:
          now = time.perf_counter()
          metrics["steps_per_s"] = (step - last_log_step) / max(now - last_log_time, 1e-9)
          metrics["skipped_files"] = _skipped_files(data_source)
          metrics["nonfinite_steps"] = dropped
          last_log_time, last_log_step = now, step
          writer.write(step, metrics)
        # A step whose update was dropped holds the state of the step before: finite.
        periodic = step % settings.checkpoint_every == 0 or done
        if periodic:
          checkpointer.save(step, state, data_iterator, config, force=True)
        for hook in hooks:
          hook(step, state, metrics, checkpointer)
        stopped_early = stop.any_process() and not done
        if stopped_early:
          if not periodic:
            checkpointer.save(step, state, data_iterator, config, force=True)
          break
  finally:
    for closing in (progress, checkpointer, writer):
      if closing is not None:
        closing.close()
    lock.release()
  return LoopResult(state=state, step=step, resumed_from=resumed_from, stopped_early=stopped_early,
                    skipped_files=_skipped_files(data_source), nonfinite_steps=dropped)
