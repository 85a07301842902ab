"""The `ardiff` command line, the demo main job and the benchmark entry point."""

import json
import re

import numpy as np
import pytest

from ardiffusion_jax import bench, cli
from tests import support

SUBCOMMANDS = ["demo", "ablate", "train-vae", "extract", "train", "sample", "stream", "eval", "convert", "plan", "bench"]


def test_help_lists_every_planned_subcommand():
  result = support.run_cli("--help")
  assert result.returncode == 0, result.stderr
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


def test_ablate_refuses_bad_settings_before_training(tmp_path, capsys):
  code = cli.main(["ablate", "--config", "configs/synthetic.py:ablate_smoke", "--set",
                   "ablate.seeds=1", "--workdir", str(tmp_path)])
  assert code == 1
  assert "ablate.seeds" in capsys.readouterr().err
  assert not (tmp_path / "tokenizers").exists()


def test_timesteps_benchmark_runs_and_writes_json(tmp_path):
  out = tmp_path / "timesteps.json"
  assert bench.main(["timesteps", "--batch", "8", "--frames", "4", "--timesteps", "20",
                     "--seconds", "0.05", "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  assert result["jax_samples_per_s"] > 0 and result["numpy_samples_per_s"] > 0
  assert bench.main(["nonexistent"]) == 2


def test_train_step_benchmark_builds_the_token_patch_it_is_given(tmp_path):
  out = tmp_path / "train_step.json"
  results = {}
  for patch in (1, 32):
    assert bench.main(["train_step", "--size", "tiny", "--variant", "clean", "--batch", "2",
                       "--frames", "4", "--steps", "1", "--token-patch", str(patch),
                       "--out", str(out)]) == 0
    results[patch] = json.loads(out.read_text())
  assert results[32]["token_patch"] == 32 and results[1]["token_patch"] == 1
  # One embedding of 32 tokens x 4 channels and a head back to them: more parameters.
  assert results[32]["params"] > results[1]["params"]
  assert results[1]["s_per_step"] > 0 and results[32]["s_per_step"] > 0


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


def test_streaming_benchmark_compares_the_stream_with_sample(tmp_path):
  out = tmp_path / "streaming.json"
  assert bench.main(["streaming", "--sizes", "tiny", "--steps", "4", "--frames", "6,10",
                     "--s", "2,S", "--decode", "no,yes", "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  runs = [r for r in result["results"] if "frames" in r]
  assert [(r["s"], r["decode"], r["frames"]) for r in runs] == [
      (s, d, f) for s in (2, 4) for d in (False, True) for f in (6, 10)]
  for run in runs:
    assert 0 < run["stream_first_frame_s"] < run["stream_total_s"] and run["stream_fps"] > 0
    assert run["sample_total_s"] > 0 and run["sample_fps"] > 0
    assert run["stream_rss_mb"] > 0 and run["sample_rss_mb"] > 0
  assert [r["decode_frame_ms"] > 0 for r in result["results"] if "decode_frame_ms" in r] == [True]
  assert len(result["rss_growth"]) == 4 and all(g > 0 for g in result["rss_growth"].values())


def test_accelerator_check_at_tiny_size_gives_every_field(tmp_path):
  """The CPU run of the prepared GPU check: every field is there, and what needs an
  accelerator (MFU's peak, device memory, the largest batch, cuDNN) is null with a reason."""
  out = tmp_path / "accelerator.json"
  assert bench.main(["accelerator", "--size", "tiny", "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  env = result["environment"]
  assert env["backend"] == "cpu" and env["jax"] and env["jaxlib"] and env["flax"]
  assert env["memory_bytes"] is None and env["peak_bf16_tflops"] is None
  for variant in ("official", "clean"):
    train = result["train"][variant]
    assert train["s_per_step"] > 0 and train["flops_per_step"] > 0 and train["mfu"] is None
    assert train["tokens_per_s"] == pytest.approx(2 * 4 * 32 / train["s_per_step"])
    assert np.isfinite(train["loss"])
  assert result["largest_batch"]["batch"] is None and "CPU" in result["largest_batch"]["how"]
  memory = result["memory"]
  assert memory["planned_peak_bytes"] > 0 and memory["measured_peak_bytes"] is None
  attention = result["attention"]
  assert attention["implementation"] == "xla" and attention["xla_ms"] > 0
  assert attention["cudnn_ms"] is None and attention["cudnn_error"]
  sampling = result["sampling"]
  assert len(sampling) == 2 * 3 * 2 + 1 and all(f["s_per_video"] > 0 for f in sampling)
  assert {(f["variant"], f["mode"]) for f in sampling} == {("official", "full"),
                                                           ("clean", "cached")}
  assert [f["frames"] for f in sampling if f["frames"] != 4] == [8]
  assert result["paper_table2_s_per_video"]["F128_s5"] == 42.0
  assert result["vae"]["encode_frames_per_s"] > 0 and result["vae"]["decode_frames_per_s"] > 0


def test_mfu_peaks_are_the_dense_bf16_figures_of_the_chip():
  assert bench._peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
  assert bench._peak_tflops("NVIDIA H200") == 989.0
  assert bench._peak_tflops("NVIDIA A800-SXM4-80GB") == 312.0
  assert bench._peak_tflops("cpu") is None


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


@pytest.mark.parametrize("steps,reason", [
    ("-3", r"must be in \[1, num_timesteps=1000\], got -3"),
    ("0", r"must be in \[1, num_timesteps=1000\], got 0"),
    ("5000", r"must be in \[1, num_timesteps=1000\], got 5000"),
    ("30", "the official DDIM grid needs the number of steps to divide 1000"),
])
def test_sample_refuses_bad_steps(smoke_dit_run, tmp_path, capsys, steps, reason):
  assert cli.main(["sample", "--ckpt", str(smoke_dit_run), "--latents-only", "--steps", steps,
                   "--out", str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert err.startswith("ardiff sample: error: --steps: ") and len(err.splitlines()) == 1
  assert re.search(reason, err)
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("s_values,bad", [("0,999", "999"), ("-1,2", "-1"), ("11", "11")])
def test_eval_refuses_s_outside_the_dits_steps(smoke_dit_run, tmp_path, capsys, s_values, bad):
  assert cli.main(["eval", "--config", "configs/synthetic.py:smoke", "--ckpt", str(smoke_dit_run),
                   "--out", str(tmp_path / "out"), f"--s={s_values}"]) == 1
  err = capsys.readouterr().err
  assert err.startswith("ardiff eval: error: --s: ") and len(err.splitlines()) == 1
  assert ("[0, S=10]" if bad != "-1" else ">= 0") in err and bad in err
  assert not (tmp_path / "out").exists()


def test_guidance_scales_are_checked_before_sampling(smoke_dit_run, tmp_path, capsys):
  from ardiffusion_jax import config as config_lib
  eval_args = ["eval", "--config", "configs/synthetic.py:smoke", "--s=0",
               "--out", str(tmp_path / "out")]
  assert cli.main(eval_args + ["--ckpt", str(smoke_dit_run), "--cfg=-1"]) == 1
  assert "--cfg: the guidance scale must be a number >= 0" in capsys.readouterr().err
  # A clean unconditional DiT has no null condition: refused, saying why.
  config = config_lib.load_config("configs/synthetic.py:smoke",
                                  ["dit.num_classes=0", "dit.variant='clean'"])
  unconditional = tmp_path / "unconditional"
  support.write_dit_run(unconditional, config)
  assert cli.main(eval_args + ["--ckpt", str(unconditional), "--cfg=2"]) == 1
  assert "clean unconditional DiT was trained with none" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_eval_refuses_an_empty_metric_list(tmp_path, capsys):
  assert cli.main(["eval", "--config", "configs/synthetic.py:smoke", "--ckpt", str(tmp_path),
                   "--out", str(tmp_path / "out"), "--metrics", " , "]) == 1
  err = capsys.readouterr().err
  assert "--metrics: " in err and "fvd16" in err and "physics" in err
  assert cli.main(["eval", "--config", "configs/synthetic.py:smoke", "--ckpt", str(tmp_path),
                   "--out", str(tmp_path / "out"), "--metrics", ""]) == 1
  assert "--metrics: " in capsys.readouterr().err


def test_library_argument_errors_name_the_flag_that_sets_them(capsys):
  """The library names its argument (overrides); the CLI says which flag that is."""
  assert cli.main(["plan", "--config", "configs/synthetic.py:smoke", "--set", "mesh.fsdp"]) == 1
  err = capsys.readouterr().err
  assert err.startswith("ardiff plan: error: --set: an override must look like field.sub=value")
  assert len(err.splitlines()) == 1
