"""Test setup, before JAX initialises its backend: 8 fake CPU devices, and compilation
settings that make the suite fit its time budget.

- XLA's optimisation passes are skipped (`JAX_DISABLE_MOST_OPTIMIZATIONS`): on these tiny
  shapes compiling costs far more than running, and every comparison in the suite is
  between programs compiled the same way or against tolerances that do not depend on
  fusion.
- Compiled programs go to a persistent cache shared by the session's processes
  (`JAX_COMPILATION_CACHE_DIR`): the subprocess tests (SIGKILL and SIGTERM resumes, two
  processes, the CLI) compile the same train steps as the tests around them.

Both are environment variables, so the subprocesses the tests start inherit them; set
them yourself before running pytest to override.
"""

import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


import pytest  # noqa: E402  (after the environment above, before anything imports jax)


@pytest.fixture(scope="session")
def smoke_dit_run(tmp_path_factory):
  """A DiT run of the smoke config (official DDIM grid, S = 10) with untrained weights,
  built once per test process: for the checks that refuse before anything is sampled,
  and for loading runs."""
  from ardiffusion_jax import config as config_lib
  from tests import support
  config = config_lib.load_config("configs/synthetic.py:smoke", ["diffusion.ddim_grid='official'"])
  run = tmp_path_factory.mktemp("smoke_dit_run")
  support.write_dit_run(run, config)
  return run


@pytest.fixture
def xla_optimised():
  """XLA's optimisation passes back on for one test: for the networks that run far longer
  than they compile (I3D, InceptionV3 and the 3D ResNet at 112-299 px), where they
  halve the run (`ardiff eval` at smoke size: 57 s against 95 s, 2026-12-07)."""
  import jax
  before = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", False)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", before)
