"""The package as a user installs it (`pip install .`, not editable): it finds its own
configs from any directory and trains with a dataset config."""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
from PIL import Image

from tests import support

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_an_installed_package_trains_from_another_directory(tmp_path):
  # Built from a copy: setuptools writes build/ and *.egg-info into the source tree.
  source, wheels, site = tmp_path / "source", tmp_path / "wheels", tmp_path / "site"
  shutil.copytree(REPO / "ardiffusion_jax", source / "ardiffusion_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy(REPO / name, source / name)
  pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
  subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                  str(source)], check=True, cwd=tmp_path)
  subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site),
                  *map(str, wheels.glob("*.whl"))], check=True, cwd=tmp_path)
  # Sky-Timelapse's layout: every folder of frames under sky_train/ is one video.
  for video in range(2):
    clip = tmp_path / "sky" / "sky_train" / f"video{video}" / "clip0"
    clip.mkdir(parents=True)
    for t in range(8):
      frame = np.full((32, 32, 3), 20 + 10 * video, np.uint8)
      frame[8:16, t:t + 8] = 200
      Image.fromarray(frame).save(clip / f"{t:03d}.jpg")
  # -S: no site hooks, so the repository's editable install is invisible; the installed
  # copy comes first and the dependencies come from this interpreter's site-packages.
  env = support.subprocess_env()
  env["PYTHONPATH"] = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]])
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  command = [sys.executable, "-S", "-c",
             "import sys, ardiffusion_jax, ardiffusion_jax.cli as c; "
             "print('FROM', ardiffusion_jax.__file__); sys.exit(c.main(sys.argv[1:]))",
             "train-vae", "--config", "configs/sky.py:vae_smoke", "--workdir", "run",
             "--set", f"data.root='{tmp_path / 'sky'}'", "--set", "vae_train.steps=1",
             "--set", "vae_train.batch_size=2", "--set", "mesh.fsdp=1"]
  result = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"FROM {site}" in result.stdout  # the installed copy, not the repository
  assert (elsewhere / "run" / "checkpoints" / "1").is_dir()
