"""The training loop every model shares: resume, step, guard, log, checkpoint.

It knows nothing about the model: it gets a jitted step `(state, batch) -> (state,
metrics)`, an abstract state for restoring, and a checkpointable data iterator. The DiT
(`train/dit.py`) and the AR-VAE use it unchanged.
"""

import dataclasses
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
from ardiffusion_jax.train.logging import MetricWriter


@dataclasses.dataclass
class LoopSettings:
  total_steps: int
  log_every: int = 50
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  async_checkpoints: bool = True


@dataclasses.dataclass
class LoopResult:
  state: Any
  step: int
  resumed_from: Any  # the checkpoint step it started from, or None
  stopped_early: bool  # a SIGTERM asked it to stop


def _first_non_finite(tree) -> str:
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    leaf = np.asarray(leaf)
    if np.issubdtype(leaf.dtype, np.floating) and not np.all(np.isfinite(leaf)):
      return jax.tree_util.keystr(path)
  return ""


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
        desc: str = "train", logdir=None) -> LoopResult:
  """Trains until `settings.total_steps`, resuming from `workdir/checkpoints`.

  `init_state()` builds a fresh state and is only called when there is no checkpoint.
  Each hook is called as hook(step, state, metrics, checkpointer) after every step.
  Metrics go to `logdir` (default: workdir), which must be a local folder.
  """
  primary = jax.process_index() == 0
  checkpointer = Checkpointer(f"{workdir}/checkpoints", keep=settings.keep_checkpoints,
                              async_save=settings.async_checkpoints)
  writer = MetricWriter(logdir or workdir, enabled=primary)
  state, resumed_from = checkpointer.restore(abstract_state, data_iterator)
  if state is None:
    state = init_state()
  else:
    writer.truncate_after(resumed_from)
  step = int(jax.device_get(state.step))

  progress = tqdm.tqdm(total=settings.total_steps, initial=step, desc=desc, unit="step",
                       disable=not primary, dynamic_ncols=True)
  last_log_time, last_log_step = time.perf_counter(), step
  stopped_early = False
  try:
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
        if not np.isfinite(metrics["loss"]):
          raise TrainingDiverged(step, f"the loss is {metrics['loss']}", checkpointer.latest_step())
        progress.update(1)
        progress.set_postfix(loss=f"{float(metrics['loss']):.4f}", refresh=False)

        done = step == settings.total_steps
        if step % settings.log_every == 0 or done:
          now = time.perf_counter()
          metrics["steps_per_s"] = (step - last_log_step) / max(now - last_log_time, 1e-9)
          last_log_time, last_log_step = now, step
          writer.write(step, metrics)
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
    progress.close()
    checkpointer.close()
    writer.close()
  return LoopResult(state=state, step=step, resumed_from=resumed_from, stopped_early=stopped_early)
