"""Faults injected into the pieces that must lose nothing: the workdir lock, checkpoint
fallback from an unreadable step, a torn metrics line, and the TensorBoard log. (The NaN guard, the lock
between two real runs and the fallback of a real run are in test_train_loop.py.)"""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from ardiffusion_jax.errors import CheckpointError, WorkdirLocked
from ardiffusion_jax.train import lock as lock_lib
from ardiffusion_jax.train.checkpoint import Checkpointer
from ardiffusion_jax.train.logging import MetricWriter, read_metrics
from tests import support


def _write_lock(workdir, **fields):
  holder = {"host": socket.gethostname(), "pid": os.getpid(),
            "process_start": lock_lib._process_start(os.getpid()), "started": time.time(),
            "heartbeat": time.time(), "token": 12345, **fields}
  (workdir / lock_lib.LOCK_NAME).write_text(json.dumps(holder))
  return holder


def test_a_live_holder_keeps_the_lock_and_is_named(tmp_path):
  holder = _write_lock(tmp_path)
  with pytest.raises(WorkdirLocked, match=rf"in use by another run \(host {socket.gethostname()}, "
                                          rf"PID {os.getpid()}, started "):
    lock_lib.WorkdirLock(tmp_path).acquire()
  assert json.loads((tmp_path / lock_lib.LOCK_NAME).read_text()) == holder  # untouched
  other_host = _write_lock(tmp_path, host="elsewhere", pid=1)  # a fresh heartbeat
  with pytest.raises(WorkdirLocked, match="host elsewhere, PID 1"):
    lock_lib.WorkdirLock(tmp_path).acquire()
  assert json.loads((tmp_path / lock_lib.LOCK_NAME).read_text()) == other_host


def _dead_pid():
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


@pytest.mark.parametrize("fields, reason", [
    (lambda: {"pid": _dead_pid()}, "its process is no longer running"),
    (lambda: {"process_start": -5}, "its PID now belongs to another process"),
    (lambda: {"host": "elsewhere", "heartbeat": time.time() - 3600}, "its heartbeat is 60 minutes old"),
])
def test_a_stale_lock_is_taken_over_and_said_so(tmp_path, caplog, fields, reason):
  _write_lock(tmp_path, **fields())
  with caplog.at_level("WARNING", logger="ardiffusion_jax.train.lock"):
    lock = lock_lib.WorkdirLock(tmp_path).acquire()
  assert any(f"taking over the lock of {tmp_path}: {reason}" in r.message for r in caplog.records)
  held = json.loads((tmp_path / lock_lib.LOCK_NAME).read_text())
  assert held["token"] == lock.token and held["pid"] == os.getpid()
  assert sorted(p.name for p in tmp_path.iterdir()) == [lock_lib.LOCK_NAME]  # no litter
  lock.release()
  assert not (tmp_path / lock_lib.LOCK_NAME).exists()


def test_the_heartbeat_refreshes_the_lock_and_notices_a_thief(tmp_path, monkeypatch):
  lock = lock_lib.WorkdirLock(tmp_path).acquire()
  first = json.loads((tmp_path / lock_lib.LOCK_NAME).read_text())
  lock.heartbeat()  # too soon: nothing written
  assert json.loads((tmp_path / lock_lib.LOCK_NAME).read_text()) == first
  monkeypatch.setattr(lock_lib, "HEARTBEAT_SECONDS", 0.0)
  lock.heartbeat()
  beaten = json.loads((tmp_path / lock_lib.LOCK_NAME).read_text())
  assert beaten["heartbeat"] > first["heartbeat"] and beaten["token"] == lock.token
  assert sorted(p.name for p in tmp_path.iterdir()) == [lock_lib.LOCK_NAME]
  _write_lock(tmp_path, token=54321)
  with pytest.raises(WorkdirLocked, match="was taken by another run"):
    lock.heartbeat()


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
  lock = lock_lib.WorkdirLock(tmp_path).acquire()
  theirs = _write_lock(tmp_path, token=54321)
  lock.release()
  assert json.loads((tmp_path / lock_lib.LOCK_NAME).read_text()) == theirs


def _saved_steps(directory, steps=(1, 2, 3)):
  checkpointer = Checkpointer(directory, keep=10, async_save=False)
  for step in steps:
    state = {"w": jnp.full((4, 4), float(step)), "b": jnp.arange(3.0) * step}
    checkpointer.save(step, state, config=ml_collections.ConfigDict({"step": step}), force=True)
  checkpointer.close()


def _truncate_arrays(step_dir):
  files = [p for p in (step_dir / "state").rglob("d/*") if p.is_file()]
  assert files
  for path in files:
    path.write_bytes(path.read_bytes()[:5])


def test_loading_falls_back_from_unreadable_steps_and_keeps_them(tmp_path, caplog):
  _saved_steps(tmp_path)
  _truncate_arrays(tmp_path / "3")
  checkpointer = Checkpointer(tmp_path, async_save=False)
  with caplog.at_level("WARNING", logger="ardiffusion_jax.train.checkpoint"):
    step, config, state = checkpointer.load_latest()
  assert step == 2 and config.step == 2 and float(state["w"][0, 0]) == 2.0
  lines = [r.message for r in caplog.records if "unreadable, skipped" in r.message]
  assert len(lines) == 1 and lines[0].startswith(f"checkpoint step 3 in {tmp_path} is unreadable")
  assert "\n" not in lines[0] and "moved to" in lines[0]
  assert [p.name.split("-")[0] for p in (tmp_path / "unreadable").iterdir()] == ["3"]
  assert checkpointer.manager.all_steps() == [1, 2]

  # An emptied step folder (a kill while a copy ran) is unreadable too; so is a lost config.
  for child in (tmp_path / "2").iterdir():
    subprocess.run(["rm", "-rf", str(child)], check=True)
  step, _, state = checkpointer.load_latest()
  assert step == 1 and float(state["w"][0, 0]) == 1.0
  _truncate_arrays(tmp_path / "1")
  with pytest.raises(CheckpointError, match=r"no readable checkpoint in .*: steps 1 were "
                                            r"unreadable and are now in .*unreadable"):
    checkpointer.load_latest()
  assert sorted(p.name.split("-")[0] for p in (tmp_path / "unreadable").iterdir()) == ["1", "2", "3"]
  checkpointer.close()


def test_restoring_into_another_model_is_an_error_not_a_fallback(tmp_path):
  _saved_steps(tmp_path, steps=(1, 2))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = {"w": jax.ShapeDtypeStruct((4, 5), jnp.float32, sharding=device),
              "c": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=device)}
  checkpointer = Checkpointer(tmp_path, async_save=False)
  with pytest.raises(CheckpointError, match=r"checkpoint .*2 does not match the model and "
                                            r"optimizer in the config \(3 differences: c missing; "
                                            r"b not in the model; w is \(4, 4\), the model's \(4, 5\)\); "
                                            r"a run resumes only under the config it was started "
                                            r"with .*train into a new workdir"):
    checkpointer.restore(abstract)
  assert checkpointer.manager.all_steps() == [1, 2] and not (tmp_path / "unreadable").exists()
  right = {"w": abstract["w"].update(shape=(4, 4)), "b": abstract["c"]}
  state, step = checkpointer.restore(right)
  assert step == 2 and float(state["b"][1]) == 2.0
  checkpointer.close()


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path):
  writer = MetricWriter(tmp_path)
  for step in (1, 2, 3):
    writer.write(step, {"loss": 0.5 / step})
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 4, "ema_de')  # a kill or a full disk mid-write
  with pytest.warns(UserWarning, match=r"metrics.jsonl:4: dropping a torn record"):
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
  resumed = MetricWriter(tmp_path)
  with pytest.warns(UserWarning, match="torn record"):
    resumed.truncate_after(2)  # what a resume from step 2 does
  assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
  resumed.write(3, {"loss": 0.1})
  resumed.close()
  assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_tensorboard_gets_every_scalar_without_importing_torch(tmp_path):
  # In a fresh process, as a training run starts: tensorboardX would import torch (seconds).
  script = f"""
import sys
from ardiffusion_jax.train.logging import MetricWriter
writer = MetricWriter({str(tmp_path)!r})
writer.write(7, {{"loss": 0.25, "loss_per_frame": [0.5, 0.125]}})
writer.close()
assert "torch" not in sys.modules, "the metric writer imported torch"
"""
  subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
  from tensorboardX.proto import event_pb2
  (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
  data, scalars = events.read_bytes(), {}
  while data:  # TFRecords: length (8 bytes), its CRC (4), the record, its CRC (4)
    length = int.from_bytes(data[:8], "little")
    event = event_pb2.Event.FromString(data[12:12 + length])
    scalars.update({v.tag: (event.step, v.simple_value) for v in event.summary.value})
    data = data[16 + length:]
  assert scalars == {"loss": (7, 0.25), "loss_per_frame/0": (7, 0.5),
                     "loss_per_frame/1": (7, 0.125)}
  assert read_metrics(tmp_path) == [{"step": 7, "loss": 0.25, "loss_per_frame": [0.5, 0.125]}]


def test_load_run_names_the_kind_and_checks_dit_weights_fit(smoke_dit_run, tmp_path):
  from ardiffusion_jax import runs
  run = runs.load_run(smoke_dit_run)
  assert (run.kind, run.weights, run.step) == ("dit", "ema", 0)
  expected = support.init_weights(run.model())["params"]
  assert jax.tree.structure(run.variables["params"]) == jax.tree.structure(expected)
  with pytest.raises(CheckpointError, match="holds a DiT run, not an AR-VAE run"):
    runs.load_run(smoke_dit_run, "vae")
  with pytest.raises(CheckpointError, match=r"holds no 'params'.*use_ema=True"):
    runs.load_run(smoke_dit_run, use_ema=False)
  # A saved config that builds a deeper DiT than the weights (scanned or not, the
  # blocks differ): the load names the blocks instead of sampling with a wrong model.
  support.write_dit_run(tmp_path / "deeper", run.config, depth=run.model().depth + 1)
  with pytest.raises(CheckpointError, match=r"do not fit the DiT its saved config builds now "
                                            r"\(\d+ differences: params/blocks"):
    runs.load_run(tmp_path / "deeper", "dit")


def test_unretrieved_read_reports_of_a_skipped_step_are_dropped_and_no_others(tmp_path):
  """After a step is found unreadable, asyncio's late "never retrieved" report of another
  failed read in that step's folder is dropped; the same report elsewhere still shows."""
  import logging
  from ardiffusion_jax.train import checkpoint as checkpoint_lib
  skipped = tmp_path / "checkpoints" / "6"
  checkpoint_lib._quiet_unretrieved_reads(skipped)
  asyncio_log = logging.getLogger("asyncio")

  def record(path):
    error = ValueError(f'OUT_OF_RANGE: Error reading local file "{path}/state/d/0"')
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1,
                             "Task exception was never retrieved", (), (ValueError, error, None))

  assert not asyncio_log.filter(record(skipped))
  assert asyncio_log.filter(record(tmp_path / "checkpoints" / "60"))  # not the skipped step
  other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", (), None)
  assert asyncio_log.filter(other)
