"""The DiT training loop: latent shards, resume after SIGKILL, SIGTERM, the NaN guard, the
workdir lock, checkpoint fallback, multi-host."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from ardiffusion_jax import config as config_lib
from ardiffusion_jax.convert import portable
from ardiffusion_jax.data import latents
from ardiffusion_jax.errors import DataError, TrainingDiverged
from ardiffusion_jax.train import dit as train_dit
from ardiffusion_jax.train import state as state_lib
from ardiffusion_jax.train.checkpoint import Checkpointer
from ardiffusion_jax.train.logging import read_metrics
from tests import support

FRAMES = 8  # the smoke config
# The runs here train on two devices: the state and the batch sharded as on a real mesh
# (the guards and the resumes must hold there), at a fraction of the cost of the suite's
# 8 fake devices.
DEVICES = 2


MARK = 7.0  # the norm of every raw latent token of a marked clip (the others are unit norm)


def _write_latents(directory, clips=64, nan_clip=None, marked_clip=None):
  rng = np.random.default_rng(0)
  examples = []
  for i in range(clips):
    x = rng.normal(size=(FRAMES, 32, 4)).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    if i == nan_clip:
      x[3, 5, 1] = np.nan
    if i == marked_clip:
      x *= MARK
    examples.append({"latents": x, "label": i % 3})
  latents.write_latent_shard(directory / "latents-00000.array_record", examples[:40])
  latents.write_latent_shard(directory / "latents-00001.array_record", examples[40:])
  return directory


@pytest.fixture(scope="module")
def latent_dir(tmp_path_factory):
  return _write_latents(tmp_path_factory.mktemp("latents"))


def _overrides(latent_dir, **changes):
  settings = {"train.latents_dir": str(latent_dir), "train.steps": 6, "train.log_every": 1,
              "train.checkpoint_every": 3, "train.lr_schedule": "constant", **changes}
  return [f"{key}={value!r}" for key, value in settings.items()]


def _set_args(overrides):
  return [arg for item in overrides for arg in ("--set", item)]


def _restore_params(workdir, step):
  # Onto one local device, whatever topology wrote it (the multi-process run used two hosts).
  return Checkpointer(os.path.join(workdir, "checkpoints")).restore_raw(step)["params"]


def _assert_same_params(a, b, exact=True):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    if exact:
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    else:
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-6)


def _losses(workdir):
  return {record["step"]: record["loss"] for record in read_metrics(workdir)}


KILL_AFTER_STEP_3 = """
import os, signal, sys
from ardiffusion_jax import config as config_lib
from ardiffusion_jax.train import dit as train_dit
from ardiffusion_jax.train.checkpoint import Checkpointer

def kill_after_3(step, state, metrics, checkpointer):
  if step == 3:
    checkpointer.wait()  # the step-3 checkpoint is on disk; now die without cleanup
    os.kill(os.getpid(), signal.SIGKILL)

config = config_lib.load_config("configs/synthetic.py:smoke", sys.argv[2:])
train_dit.train(config, sys.argv[1], hooks=[kill_after_3])
"""


def test_resume_after_sigkill_is_bit_identical(latent_dir, tmp_path):
  overrides = _overrides(latent_dir)
  straight = tmp_path / "straight"
  result = train_dit.train(config_lib.load_config("configs/synthetic.py:smoke", overrides),
                           str(straight), devices=jax.devices()[:DEVICES])
  assert result.step == 6 and result.resumed_from is None

  env = support.subprocess_env(DEVICES)
  killed = tmp_path / "killed"
  run = subprocess.run([sys.executable, "-c", KILL_AFTER_STEP_3, str(killed), *overrides],
                       capture_output=True, text=True, timeout=300, env=env)
  assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
  assert sorted(_losses(killed)) == [1, 2, 3]

  resumed = support.run_cli("train", "--config", "configs/synthetic.py:smoke",
                            "--workdir", str(killed), *_set_args(overrides), env=env)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  # The killed run's lock is stale (its PID is gone): taken over, and said so.
  assert f"taking over the lock of {killed}: its process is no longer running" in resumed.stderr
  assert "0 unreadable data files skipped; 0 non-finite steps dropped" in resumed.stdout
  assert not (killed / "RUN_LOCK.json").exists()  # released at the end
  assert _losses(killed) == _losses(straight)  # float equality: bit-identical
  _assert_same_params(_restore_params(killed, 6), _restore_params(straight, 6))

  # A truncated newest step: the restart falls back to step 3, moves step 6 aside (not
  # deleted) and redoes steps 4-6 bit-identically.
  for array_file in (straight / "checkpoints" / "6" / "state").rglob("d/*"):
    array_file.write_bytes(array_file.read_bytes()[:5])
  again = support.run_cli("train", "--config", "configs/synthetic.py:smoke",
                          "--workdir", str(straight), *_set_args(overrides), env=env)
  assert again.returncode == 0, again.stderr[-2000:]
  skipped_lines = [line for line in again.stderr.splitlines() if "is unreadable, skipped" in line]
  assert len(skipped_lines) == 1 and "checkpoint step 6" in skipped_lines[0], again.stderr[-2000:]
  aside = list((straight / "checkpoints" / "unreadable").iterdir())
  assert [p.name.split("-")[0] for p in aside] == ["6"] and "moved to" in skipped_lines[0]
  assert "Traceback" not in again.stderr
  assert _losses(straight) == _losses(killed)
  _assert_same_params(_restore_params(straight, 6), _restore_params(killed, 6))

  # An emptied newest step folder: export (like sample, extract and eval) reads step 3.
  step_6 = straight / "checkpoints" / "6"
  shutil.rmtree(step_6)
  step_6.mkdir()
  bundle = portable.export(straight, "safetensors", tmp_path / "exported")
  expected = flax.traverse_util.flatten_dict(
      Checkpointer(straight / "checkpoints").restore_raw(3)["ema_params"], sep="/")
  assert ({key for key in bundle.flat if key.startswith("params/")} ==
          {f"params/{key}" for key in expected})
  for key, value in expected.items():
    np.testing.assert_array_equal(bundle.flat[f"params/{key}"], np.asarray(value))
  assert len(list((straight / "checkpoints" / "unreadable").iterdir())) == 2


def test_sigterm_saves_and_stops(latent_dir, tmp_path):
  workdir = tmp_path / "preempted"
  process = subprocess.Popen(
      support.cli_command("train", "--config", "configs/synthetic.py:smoke",
                          "--workdir", str(workdir),
                          *_set_args(_overrides(latent_dir, **{"train.steps": 100_000,
                                                               "train.checkpoint_every": 100_000}))),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=support.subprocess_env(DEVICES))
  try:
    deadline = time.time() + 120
    while not (workdir / "metrics.jsonl").exists() and time.time() < deadline:
      time.sleep(0.2)
    # A second run into the same workdir fails at once, naming the holder.
    second = support.run_cli("train", "--config", "configs/synthetic.py:smoke",
                             "--workdir", str(workdir),
                             *_set_args(_overrides(latent_dir, **{"train.lr": 1e-3})),
                             timeout=120, env=support.subprocess_env(DEVICES))
    records_so_far = len(read_metrics(workdir))
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
  finally:
    process.kill()
  assert process.returncode == 0, err[-2000:]
  assert "stopped by SIGTERM at step" in out
  stopped_at = int(out.split("stopped by SIGTERM at step ")[1].split(";")[0])
  assert ocp.CheckpointManager(workdir / "checkpoints").latest_step() == stopped_at

  assert second.returncode == 1
  error_lines = [line for line in second.stderr.splitlines() if line.startswith("ardiff train:")]
  assert len(error_lines) == 1 and "Traceback" not in second.stderr, second.stderr[-2000:]
  assert (f"is in use by another run (host {socket.gethostname()}, PID {process.pid}, started "
          in error_lines[0])
  steps = [record["step"] for record in read_metrics(workdir)]
  assert steps == list(range(1, stopped_at + 1)) and len(steps) >= records_so_far  # one writer
  assert not (workdir / "RUN_LOCK.json").exists()  # released by the clean stop


def test_nan_in_batch_stops_cleanly(tmp_path):
  directory = _write_latents(tmp_path / "latents", nan_clip=17)
  workdir = tmp_path / "nan"
  config = config_lib.load_config("configs/synthetic.py:smoke", _overrides(
      directory, **{"train.steps": 16, "train.checkpoint_every": 1}))
  with pytest.raises(TrainingDiverged, match=r"NaN or inf in \['latents'\]") as error:
    train_dit.train(config, str(workdir), devices=jax.devices()[:DEVICES])
  latest = ocp.CheckpointManager(workdir / "checkpoints").latest_step()
  assert error.value.last_good == latest and (latest or 0) < error.value.step
  assert f"last finite checkpoint, step {latest}, is on disk" in str(error.value) or latest is None


def test_diverging_loss_stops_with_the_step(latent_dir, tmp_path):
  config = config_lib.load_config("configs/synthetic.py:smoke", _overrides(
      latent_dir, **{"train.lr": 1e30, "train.lr_final": 1e30, "train.grad_clip": 1e30,
                     "train.steps": 50, "train.checkpoint_every": 1}))
  with pytest.raises(TrainingDiverged, match="the loss is") as error:
    train_dit.train(config, str(tmp_path / "diverged"), devices=jax.devices()[:DEVICES])
  assert error.value.last_good == error.value.step - 1


def _nan_gradient_on_the_marked_clip(monkeypatch):
  """The real DiT loss, plus a term worth 0 whose gradient is NaN in a batch holding the
  marked clip: the loss stays finite while the gradients are not (the failure of a run at
  too high a learning rate, where the loss is 1e32 and the gradient norm NaN)."""
  real = train_dit.dit_loss

  def loss(params, constants, model, batch, draws, diffusion_config, label_dropout,
           self_condition_rate):
    value, per_frame = real(params, constants, model, batch, draws, diffusion_config,
                            label_dropout, self_condition_rate)
    marked = jnp.any(jnp.abs(jnp.linalg.norm(batch["latents"], axis=-1) - MARK) < 1e-3)
    total = sum(jnp.sum(leaf) for leaf in jax.tree.leaves(params))
    # sqrt at 0: a value of 0 and a gradient of 0 * inf = NaN, only when marked.
    zero = jnp.sqrt(jnp.where(marked, 0.0 * total, 1.0)) - jnp.where(marked, 0.0, 1.0)
    return value + zero, per_frame

  monkeypatch.setattr(train_dit, "dit_loss", loss)


def _assert_every_checkpoint_finite(workdir):
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  steps = checkpointer.manager.all_steps()
  assert steps
  for step in steps:
    state = checkpointer.restore_raw(step)
    for name in ("params", "ema_params", "opt_state"):
      for leaf in jax.tree.leaves(state[name]):
        assert np.all(np.isfinite(np.asarray(leaf))), (step, name)
  return steps


def test_a_nonfinite_gradient_is_never_saved(tmp_path, monkeypatch):
  directory = _write_latents(tmp_path / "latents", marked_clip=5)
  _nan_gradient_on_the_marked_clip(monkeypatch)
  changes = {"train.steps": 8, "train.checkpoint_every": 1, "train.keep_checkpoints": 20}
  with pytest.raises(TrainingDiverged, match="the gradient norm is nan") as error:
    train_dit.train(config_lib.load_config("configs/synthetic.py:smoke",
                                           _overrides(directory, **changes)),
                    str(tmp_path / "stopped"), devices=jax.devices()[:DEVICES])
  bad_step = error.value.step
  steps = _assert_every_checkpoint_finite(tmp_path / "stopped")
  # The step with NaN gradients is not on disk; the one named is, and it restores.
  assert steps == list(range(1, bad_step)) and error.value.last_good == bad_step - 1
  assert f"the last finite checkpoint, step {bad_step - 1}, is on disk" in str(error.value)

  # Allowed two in a row, the run drops that step's update and goes on.
  result = train_dit.train(config_lib.load_config(
      "configs/synthetic.py:smoke",
      _overrides(directory, **changes, **{"train.max_nonfinite_steps": 2})),
      str(tmp_path / "skipped"), devices=jax.devices()[:DEVICES])
  assert result.step == 8 and result.nonfinite_steps == 1
  records = read_metrics(tmp_path / "skipped")
  assert [r["step"] for r in records if not r["update_finite"]] == [bad_step]
  assert records[-1]["nonfinite_steps"] == 1
  _assert_every_checkpoint_finite(tmp_path / "skipped")
  before, after = (Checkpointer(tmp_path / "skipped" / "checkpoints").restore_raw(step)
                   for step in (bad_step - 1, bad_step))
  for name in ("params", "ema_params", "opt_state"):
    _assert_same_params(before[name], after[name])  # the dropped update changed nothing
  _assert_same_params(before["params"], _restore_params(tmp_path / "stopped", bad_step - 1))


def test_a_nonfinite_update_stops_before_it_is_saved(latent_dir, tmp_path, monkeypatch):
  real = state_lib.make_optimizer

  def poisoned_on_the_third_step(train_config):
    def update(updates, count, params=None):
      poison = lambda u: jnp.where(count == 2, jnp.nan, u)
      return jax.tree.map(poison, updates), count + 1
    return optax.chain(real(train_config), optax.GradientTransformation(
        lambda params: jnp.zeros((), jnp.int32), update))

  monkeypatch.setattr(state_lib, "make_optimizer", poisoned_on_the_third_step)
  config = config_lib.load_config("configs/synthetic.py:smoke", _overrides(
      latent_dir, **{"train.steps": 6, "train.checkpoint_every": 1,
                     "train.max_nonfinite_steps": 5}))
  # Finite loss and gradients, NaN parameters: cannot be undone, so it stops at once.
  with pytest.raises(TrainingDiverged, match="updated parameters hold NaN or inf") as error:
    train_dit.train(config, str(tmp_path / "poisoned"), devices=jax.devices()[:DEVICES])
  assert error.value.step == 3 and error.value.last_good == 2
  assert _assert_every_checkpoint_finite(tmp_path / "poisoned") == [1, 2]


def test_wrong_latent_shape_is_a_data_error(latent_dir, tmp_path):
  config = config_lib.load_config("configs/synthetic.py:smoke",
                                  _overrides(latent_dir, **{"dit.num_frames": 4}))
  with pytest.raises(DataError, match=r"shape \(8, 32, 4\).*expects \(4, 32, 4\)"):
    train_dit.train(config, str(tmp_path / "x"))
  with pytest.raises(DataError, match="no \\*.array_record"):
    train_dit.train(config_lib.load_config("configs/synthetic.py:smoke",
                                           _overrides(tmp_path)), str(tmp_path / "y"))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_agree_with_one(latent_dir, tmp_path):
  overrides = _overrides(latent_dir, **{"train.steps": 2, "train.checkpoint_every": 2,
                                        "train.warmup_steps": 1,
                                        "mesh.data": 2, "mesh.fsdp": -1})
  single = tmp_path / "single"
  train_dit.train(config_lib.load_config("configs/synthetic.py:smoke", overrides), str(single))

  env = support.subprocess_env()  # each process takes its 4 from --local-devices
  port = _free_port()
  workdir = tmp_path / "multi"
  processes = [subprocess.Popen(
      support.cli_command(
          "train", "--config", "configs/synthetic.py:smoke", "--workdir", str(workdir),
          *_set_args(overrides), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
          "--process-id", str(i), "--local-devices", "4"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  try:
    outputs = [p.communicate(timeout=300) for p in processes]
  finally:
    for p in processes:
      p.kill()
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  np.testing.assert_allclose([_losses(workdir)[s] for s in (1, 2)],
                             [_losses(single)[s] for s in (1, 2)], rtol=1e-5)
  _assert_same_params(_restore_params(workdir, 2), _restore_params(single, 2), exact=False)
