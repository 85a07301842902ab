"""The demo main job end to end (smoke size) and `ardiff sample` on what it trained."""

import json

import av
import numpy as np
import pytest
from PIL import Image

from ardiffusion_jax import cli, demo, generate
from tests import support

# Every test here reads the one demo run: keep them on one xdist worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("demo")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  """The README's demo command at smoke size, as a user runs it: its own process, one CPU
  device. (The tests below load its runs on the suite's 8 fake devices.)"""
  workdir = tmp_path_factory.mktemp("demo")
  run = support.run_cli("demo", "--config", "configs/synthetic.py:smoke", "--workdir", str(workdir),
                        env=support.subprocess_env(), timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  return workdir


def _gif_duration_ms(path):
  """Total duration of a GIF. (PIL merges identical consecutive frames into one longer
  frame, so a still video has fewer frames but the same duration.)"""
  with Image.open(path) as gif:
    total = 0
    for index in range(gif.n_frames):
      gif.seek(index)
      total += gif.info["duration"]
  return total


def _mp4_frames(path):
  with av.open(str(path)) as container:
    return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_demo_runs_the_whole_pipeline(demo_dir):
  report = json.loads((demo_dir / "report.json").read_text())
  assert Image.open(demo_dir / report["dataset"]["preview_gif"]).n_frames == 8
  for name in ("training_schedules_png", "ad_schedules_png"):
    assert Image.open(demo_dir / report["schedules"][name]).size[0] > 300
  assert report["schedules"]["ad_rows_per_s"] == {"0": 10, "5": 45, "10": 80}
  vae = report["vae"]
  assert vae["steps"] == 20 and 5 < vae["held_out_psnr_db"] < 60
  # The warning is there exactly when the tokenizer is near the mean frame's PSNR.
  assert 5 < vae["mean_image_psnr_db"] < 40
  near_mean = vae["held_out_psnr_db"] < vae["mean_image_psnr_db"] + demo.MEAN_IMAGE_MARGIN_DB
  assert ("warning" in vae) == near_mean
  assert ("**Warning: the AR-VAE scores" in (demo_dir / "report.md").read_text()) == near_mean
  assert set(report["stage_seconds"]) == {"dataset", "schedules", "vae", "dit", "samples"}
  assert sum(report["stage_seconds"].values()) <= report["seconds"] + 1  # each rounded
  assert report["dit"]["steps"] == 20
  assert report["dit"]["last_loss"] < report["dit"]["first_loss"]
  assert set(report["samples"]) == {"s0", "s5", "s10", "long_16f_s2"}
  for name, result in report["samples"].items():
    folder = demo_dir / "samples" / name
    frames = result["frames"]
    assert result["rows"] == 10 + result["s"] * (frames - 1)
    with np.load(folder / "latents.npz") as data:
      assert data["latents"].shape == (result["num"], frames, 32, 4)
    video = _mp4_frames(folder / result["videos"][0])
    assert video.shape == (frames, 32, 32, 3)
    # 8 fps; GIF stores whole centiseconds per frame (12 or 13 for 125 ms)
    assert abs(_gif_duration_ms(folder / "grid.gif") - frames * 125) <= frames * 5
    assert set(result["physics"]) == {"samples", "real", "speed_ratio", "acceleration_ratio",
                                      "wall_bounce_ratio", "elasticity_ratio", "palette_ratio"}
    if name.startswith("long"):  # the long video window by window
      assert len(result["windows"]) == frames // 8 and "novelty" not in result
    else:
      assert result["num"] == 4 and result["novelty"]["held_out_nn"] > 0
  assert set(report["vae"]["physics"]) >= {"samples", "speed_ratio", "palette_ratio"}
  assert Image.open(demo_dir / report["vae"]["reconstructions_gif"]).n_frames == 8
  assert Image.open(demo_dir / "long_windows.png").size[0] > 300
  markdown = (demo_dir / "report.md").read_text()
  assert "![preview](preview.gif)" in markdown and "samples/s5/grid.gif" in markdown
  assert "| palette colours |" in markdown and "| AR-VAE reconstructions (ceiling) |" in markdown
  assert "## Long videos" in markdown and "![windows](long_windows.png)" in markdown


def test_demo_resumes_without_redoing_finished_stages(demo_dir):
  sample_json = demo_dir / "samples" / "s5" / "sample.json"
  before = sample_json.stat().st_mtime_ns
  assert cli.main(["demo", "--config", "configs/synthetic.py:smoke", "--workdir", str(demo_dir)]) == 0
  report = json.loads((demo_dir / "report.json").read_text())
  assert report["vae"]["steps"] == 20 and report["dit"]["steps"] == 20
  assert sample_json.stat().st_mtime_ns == before


def test_a_resumed_demo_samples_with_its_own_sampler_settings(demo_dir, tmp_path):
  # The DiT's run saved the sampler settings it trained with; sampling again after
  # removing a setting's samples takes the new config's steps and eta instead.
  import shutil
  workdir = tmp_path / "demo"
  shutil.copytree(demo_dir, workdir)
  shutil.rmtree(workdir / "samples" / "s0")
  kept = (workdir / "samples" / "s5" / "sample.json").read_text()
  assert cli.main(["demo", "--config", "configs/synthetic.py:smoke", "--workdir", str(workdir),
                   "--set", "diffusion.sampling_steps=20", "--set", "diffusion.eta=1.0"]) == 0
  assert json.loads((demo_dir / "samples" / "s0" / "sample.json").read_text())["rows"] == 10
  resampled = json.loads((workdir / "samples" / "s0" / "sample.json").read_text())
  assert (resampled["rows"], resampled["eta"]) == (20, 1.0)
  assert (workdir / "samples" / "s5" / "sample.json").read_text() == kept


def test_sample_cli_writes_videos_and_continues_a_video(demo_dir, tmp_path):
  out = tmp_path / "plain"
  assert cli.main(["sample", "--ckpt", str(demo_dir / "dit"), "--frames", "12", "--s", "3",
                   "--num", "2", "--label", "1", "--cfg", "2.0", "--out", str(out)]) == 0
  summary = json.loads((out / "sample.json").read_text())
  assert summary["rows"] == 10 + 3 * 11 and len(summary["videos"]) == 2
  assert _mp4_frames(out / "sample_001.mp4").shape == (12, 32, 32, 3)
  with np.load(out / "latents.npz") as data:
    assert data["latents"].shape == (2, 12, 32, 4)

  # Continuation from a video file: the encoded context comes out bit-identical.
  context_video = out / "sample_000.mp4"
  continued = tmp_path / "continued"
  assert cli.main(["sample", "--ckpt", str(demo_dir / "dit"), "--frames", "10", "--s", "2",
                   "--num", "2", "--batch-size", "1", "--context", str(context_video),
                   "--context-frames", "3",
                   "--out", str(continued)]) == 0
  generator = generate.Generator.from_checkpoint(demo_dir / "dit")  # VAE from latents_info
  expected = generator.context_from_file(context_video, 3)
  with np.load(continued / "latents.npz") as data:
    latents = data["latents"]
  np.testing.assert_array_equal(latents[:, :3], np.broadcast_to(expected, (2,) + expected.shape))
  assert np.abs(latents[0, 3:] - latents[1, 3:]).max() > 1e-3  # different continuations

  # ... and from our own latents.npz, in full mode.
  again = tmp_path / "again"
  assert cli.main(["sample", "--ckpt", str(demo_dir / "dit"), "--frames", "6", "--s", "1",
                   "--num", "1", "--context", str(out / "latents.npz"), "--mode", "full",
                   "--latents-only", "--out", str(again)]) == 0
  with np.load(again / "latents.npz") as data:
    np.testing.assert_array_equal(data["latents"][0, :5],
                                  generator.context_from_file(out / "latents.npz", 5))


def test_sample_cli_rejects_bad_settings_clearly(demo_dir, tmp_path, capsys):
  ckpt = str(demo_dir / "dit")
  assert cli.main(["sample", "--ckpt", ckpt, "--s", "11", "--out", str(tmp_path)]) == 1
  assert "--s" in capsys.readouterr().err
  assert cli.main(["sample", "--ckpt", ckpt, "--label", "7", "--out", str(tmp_path)]) == 1
  assert "labels must be in [0, 2]" in capsys.readouterr().err
  assert cli.main(["sample", "--ckpt", ckpt, "--frames", "8", "--context-frames", "8",
                   "--context", "x.mp4", "--out", str(tmp_path)]) == 1
  assert "--context-frames" in capsys.readouterr().err
  assert cli.main(["sample", "--ckpt", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 1
  assert "no DiT checkpoint" in capsys.readouterr().err
  assert cli.main(["sample", "--ckpt", ckpt, "--context", str(tmp_path / "missing.mp4"),
                   "--out", str(tmp_path)]) == 1
  assert "does not exist" in capsys.readouterr().err
  # An AR-VAE whose encoder did not make the DiT's latents would decode noise silently.
  import jax
  from ardiffusion_jax import runs
  from ardiffusion_jax.convert import write_model_checkpoint
  vae = runs.load_run(demo_dir / "vae", "vae")
  vae_config, params = vae.config, vae.variables["params"]
  other = jax.tree.map(lambda x: x, params)
  other["latent_tokens"] = params["latent_tokens"] + 0.01
  write_model_checkpoint(tmp_path / "other_vae", vae_config, {"params": other})
  assert cli.main(["sample", "--ckpt", ckpt, "--vae-ckpt", str(tmp_path / "other_vae"),
                   "--out", str(tmp_path)]) == 1
  assert "this AR-VAE's encoder did not make the DiT's training latents" in capsys.readouterr().err


def test_eval_cli_scores_every_metric_per_s(demo_dir, tmp_path, xla_optimised):
  import jax
  import jax.numpy as jnp
  from ardiffusion_jax.convert import save_variables
  from ardiffusion_jax.eval.nets.inception import FIDInceptionV3
  from ardiffusion_jax.eval.nets.resnet3d import ResNet3D50
  # Randomly initialised FID networks stand in for the weights that cannot be downloaded.
  # (Initialised under jit: op by op, these two networks take minutes to initialise.)
  save_variables(tmp_path / "fid.npz", jax.jit(FIDInceptionV3().init)(
      jax.random.key(0), jnp.zeros((1, 299, 299, 3))))
  save_variables(tmp_path / "r3d.npz", jax.jit(ResNet3D50().init)(
      jax.random.key(0), jnp.zeros((1, 16, 112, 112, 3))))
  out = tmp_path / "eval"
  assert cli.main(["eval", "--config", "configs/synthetic.py:smoke", "--ckpt", str(demo_dir / "dit"),
                   "--metrics", "fvd16,fid_img,fid_vid,physics,novelty", "--s", "0,10", "--num", "2",
                   "--batch-size", "2", "--fid-weights", str(tmp_path / "fid.npz"),
                   "--fid-vid-weights", str(tmp_path / "r3d.npz"), "--references",
                   "--out", str(out)]) == 0
  report = json.loads((out / "eval.json").read_text())
  assert set(report["results"]) == {"0", "10", "real", "reconstructed"}
  assert report["sampling_mode"] == "cached"  # the clean DiT is strictly causal
  for name, row in report["results"].items():
    assert row["fvd16"] > 0 and row["fid_img"] > 0 and row["fid_vid"] > 0
    assert set(row["physics"]) >= {"speed_ratio", "acceleration_ratio", "palette_ratio"}
    assert row["novelty"]["samples_nn"] > 0 and row["novelty"]["held_out_nn"] > 0
    assert (row["seconds_per_video_16f"] > 0) if name in ("0", "10") else (
        "seconds_per_video_16f" not in row)  # the reference rows sample nothing
  # Real clips against other real clips: every ball wears a palette colour in both.
  floor = report["results"]["real"]["physics"]
  assert 0.8 < floor["palette_ratio"] < 1.25 and 0.33 < floor["speed_ratio"] < 3
  assert 0.5 < report["results"]["real"]["novelty"]["ratio"] < 2  # new real clips: like held-out
  table = (out / "eval.md").read_text()
  assert ("| s | FVD16 | FID-img | FID-vid | physics (speed / accel ratio) | novelty (NN ratio) | "
          "s/video (16f) |") in table
  assert "Sampler: cached mode (KV cache)." in table
  assert "| real clips (floor) |" in table and "| AR-VAE reconstructions (ceiling) |" in table
  assert "novelty (NN ratio)" in table and "Physics from 2 clips per set" in table
