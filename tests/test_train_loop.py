"""The DiT training loop: latent shards, resume after SIGKILL, SIGTERM, NaN guard, multi-host."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ardiffusion_jax import config as config_lib
from ardiffusion_jax.data import latents
from ardiffusion_jax.errors import DataError, TrainingDiverged
from ardiffusion_jax.train import dit as train_dit
from ardiffusion_jax.train.checkpoint import Checkpointer
from ardiffusion_jax.train.logging import read_metrics

FRAMES = 8  # the smoke config


def _write_latents(directory, clips=64, nan_clip=None):
  rng = np.random.default_rng(0)
  examples = []
  for i in range(clips):
    x = rng.normal(size=(FRAMES, 32, 4)).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    if i == nan_clip:
      x[3, 5, 1] = np.nan
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


def _cli(*args, env=None, timeout=300, **kwargs):
  return subprocess.run([sys.executable, "-m", "ardiffusion_jax.cli", *args], env=env,
                        timeout=timeout, capture_output=True, text=True, **kwargs)


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
                           str(straight))
  assert result.step == 6 and result.resumed_from is None

  killed = tmp_path / "killed"
  run = subprocess.run([sys.executable, "-c", KILL_AFTER_STEP_3, str(killed), *overrides],
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
  assert sorted(_losses(killed)) == [1, 2, 3]

  resumed = _cli("train", "--config", "configs/synthetic.py:smoke", "--workdir", str(killed),
                 *_set_args(overrides))
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert _losses(killed) == _losses(straight)  # float equality: bit-identical
  _assert_same_params(_restore_params(killed, 6), _restore_params(straight, 6))


def test_sigterm_saves_and_stops(latent_dir, tmp_path):
  workdir = tmp_path / "preempted"
  process = subprocess.Popen(
      [sys.executable, "-m", "ardiffusion_jax.cli", "train", "--config",
       "configs/synthetic.py:smoke", "--workdir", str(workdir),
       *_set_args(_overrides(latent_dir, **{"train.steps": 100_000,
                                            "train.checkpoint_every": 100_000}))],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 120
    while not (workdir / "metrics.jsonl").exists() and time.time() < deadline:
      time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
  finally:
    process.kill()
  assert process.returncode == 0, err[-2000:]
  assert "stopped by SIGTERM at step" in out
  stopped_at = int(out.split("stopped by SIGTERM at step ")[1].split(";")[0])
  assert ocp.CheckpointManager(workdir / "checkpoints").latest_step() == stopped_at


def test_nan_in_batch_stops_cleanly(tmp_path):
  directory = _write_latents(tmp_path / "latents", nan_clip=17)
  workdir = tmp_path / "nan"
  config = config_lib.load_config("configs/synthetic.py:smoke", _overrides(
      directory, **{"train.steps": 16, "train.checkpoint_every": 1}))
  with pytest.raises(TrainingDiverged, match=r"NaN or inf in \['latents'\]") as error:
    train_dit.train(config, str(workdir))
  latest = ocp.CheckpointManager(workdir / "checkpoints").latest_step()
  assert error.value.last_good == latest and (latest or 0) < error.value.step
  assert f"last good checkpoint is step {latest}" in str(error.value) or latest is None


def test_diverging_loss_stops_with_the_step(latent_dir, tmp_path):
  config = config_lib.load_config("configs/synthetic.py:smoke", _overrides(
      latent_dir, **{"train.lr": 1e30, "train.lr_final": 1e30, "train.grad_clip": 1e30,
                     "train.steps": 50, "train.checkpoint_every": 1}))
  with pytest.raises(TrainingDiverged, match="the loss is") as error:
    train_dit.train(config, str(tmp_path / "diverged"))
  assert error.value.last_good == error.value.step - 1


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

  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  port = _free_port()
  workdir = tmp_path / "multi"
  processes = [subprocess.Popen(
      [sys.executable, "-m", "ardiffusion_jax.cli", "train", "--config",
       "configs/synthetic.py:smoke", "--workdir", str(workdir), *_set_args(overrides),
       "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
       "--local-devices", "4"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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
