"""The `ardiff` command line, the demo main job and the benchmark entry point."""

import json
import subprocess
import sys

import pytest

from ardiffusion_jax import bench, cli

SUBCOMMANDS = ["demo", "train-vae", "extract", "train", "sample", "eval", "convert", "plan", "bench"]


def test_help_lists_every_planned_subcommand():
  result = subprocess.run([sys.executable, "-m", "ardiffusion_jax.cli", "--help"],
                          capture_output=True, text=True, check=True)
  for name in SUBCOMMANDS:
    assert name in result.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_explains_itself(name, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main([name, "--help"])
  assert exit_info.value.code == 0
  assert len(capsys.readouterr().out.splitlines()) >= 3


def test_eval_rejects_unknown_metrics_before_loading_anything(tmp_path, capsys):
  assert cli.main(["eval", "--config", "configs/synthetic.py:smoke", "--ckpt", str(tmp_path),
                   "--out", str(tmp_path), "--metrics", "fvd16,kvd"]) == 1
  assert "unknown metric 'kvd'" in capsys.readouterr().err


def test_demo_reports_config_errors(tmp_path, capsys):
  code = cli.main(["demo", "--config", "configs/synthetic.py:smoke", "--set", "vae.patch_size=5",
                   "--workdir", str(tmp_path)])
  assert code == 1
  assert "config.vae.patch_size" in capsys.readouterr().err


def test_timesteps_benchmark_runs_and_writes_json(tmp_path):
  out = tmp_path / "timesteps.json"
  assert bench.main(["timesteps", "--batch", "8", "--frames", "4", "--timesteps", "20",
                     "--seconds", "0.05", "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  assert result["jax_samples_per_s"] > 0 and result["numpy_samples_per_s"] > 0
  assert bench.main(["nonexistent"]) == 2


def test_sampling_benchmark_times_both_modes_and_the_matmul_floor(tmp_path):
  out = tmp_path / "sampling.json"
  assert bench.main(["sampling", "--size", "tiny", "--steps", "4", "--frames", "4",
                     "--s", "0,4", "--long-frames", "6", "--long-s", "1", "--repeats", "1",
                     "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  assert [(r["frames"], r["s"], r["rows"]) for r in result["results"]] == [
      (4, 0, 4), (4, 4, 16), (6, 1, 9)]
  assert all(r["full_s"] > 0 and r["cached_s"] > 0 for r in result["results"])
  assert result["matmul_floor_row_s"] > 0
  floor_ratio = 16 * result["matmul_floor_row_s"] / result["results"][0]["cached_s"]
  assert result["ratios"]["matmul_floor_sS_over_s0"] == pytest.approx(floor_ratio)


def test_plan_prints_and_writes_per_device_memory(tmp_path, capsys):
  out = tmp_path / "plan.json"
  assert cli.main(["plan", "--config", "configs/synthetic.py:smoke", "--devices", "8",
                   "--set", "mesh.fsdp=4", "--json", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "peak per device" in printed and "'fsdp': 4" in printed
  result = json.loads(out.read_text())
  assert result["devices"] == 8 and result["per_device_batch"] == 1
  assert cli.main(["plan", "--config", "configs/synthetic.py:smoke", "--devices", "8",
                   "--set", "mesh.fsdp=3"]) == 1


def test_vae_benchmark_trains_for_its_budget_and_scores_held_out_clips(tmp_path):
  out = tmp_path / "vae.json"
  assert bench.main(["vae", "--config", "configs/synthetic.py:vae_smoke", "--minutes", "0",
                     "--held-out", "2", "--set", "vae_train.ema_decay=0.9",
                     "--workdir", str(tmp_path / "run"), "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  assert result["overrides"] == ["vae_train.ema_decay=0.9"] and result["ema_decay"] == 0.9
  assert result["steps"] == 1  # a zero budget stops after the first step, with a save
  assert 0 < result["held_out_psnr_db"] < 60
  assert result["ema_decay"] > 0 and 0 < result["held_out_psnr_raw_db"] < 60  # both weights scored
