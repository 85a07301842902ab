"""`ardiff ablate`: Table 3's cumulative rows, the checks before anything compiles, and the
tables and test statistics built from finished evaluations."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from ardiffusion_jax import ablate
from ardiffusion_jax import config as config_lib
from ardiffusion_jax.errors import ConfigError


def _config(*overrides):
  return config_lib.load_config("configs/synthetic.py:ablate_smoke", list(overrides))


def test_table3_rows_drop_everything_the_rows_above_dropped():
  config = _config()
  no_x0 = ablate.row_config(config, "no_x0", seed=2)
  assert no_x0.diffusion.timestep_scheme == "increasing_uniform"
  assert no_x0.diffusion.parameterization == "eps" and no_x0.seed == 2
  assert no_x0.dit.temporal_attention == "bidirectional"
  assert no_x0.vae.token_dim == no_x0.dit.in_channels == 12
  last = ablate.row_config(config, "no_nondecreasing", seed=0)
  assert last.diffusion.timestep_scheme == "independent"  # replaces the FoPP ablation's scheme
  full = ablate.row_config(config, "ar_diffusion", seed=0)
  assert (full.diffusion.timestep_scheme, full.diffusion.parameterization) == ("fopp", "x0")
  assert full.dit.get("temporal_attention", "causal") == "causal" and full.dit.in_channels == 4
  # The authors' departure is measured against the full model alone.
  official = ablate.row_config(config, "official", seed=0)
  assert official.dit.variant == "official" and official.diffusion.timestep_scheme == "fopp"
  assert [ablate.tokenizer_of(r) for r in ablate.TABLE3 + ablate.DEPARTURES] == [
      "improved", "improved", "plain", "plain", "plain", "plain", "improved"]
  # The config itself is left as it was.
  assert config.diffusion.timestep_scheme == "fopp" and config.seed == 0


def test_the_plain_tokenizer_trains_as_long_as_both_ar_vae_stages():
  config = _config("ablate.causal_steps=4")
  (frames_dir, frames), (causal_dir, causal) = ablate.tokenizer_configs(config, "improved")
  assert (frames_dir, causal_dir) == ("frames", "vae")
  assert causal.vae.temporal_causal and not frames.vae.temporal_causal
  assert causal.vae_train.trainable == "temporal"
  assert causal.vae_train.clip_frames == config.data.num_frames
  [(plain_dir, plain)] = ablate.tokenizer_configs(config, "plain")
  assert plain_dir == "vae" and plain.vae.token_dim == 12 and not plain.vae.temporal_causal
  assert plain.vae_train.steps == frames.vae_train.steps + causal.vae_train.steps


@pytest.mark.parametrize("overrides,field", [
    (["ablate.seeds=1"], "ablate.seeds"),
    (["ablate.rows=('no_fopp', 'no_x0')"], "ablate.rows"),  # no reference row
    (["ablate.rows=('ar_diffusion', 'no_flux')"], "ablate.rows"),
    (["ablate.table_s=5"], "ablate.table_s"),
    (["ablate.metrics=('fvd17',)"], "ablate.metrics"),
    (["ablate.s_values=(0, 11)", "ablate.table_s=0"], "ablate.s_values"),  # S = 10 at smoke size
    (["ablate.no_fopp_scheme='sideways'"], "diffusion.timestep_scheme"),
    (["ablate.causal_steps=-1"], "ablate.causal_steps"),
    (["ablate.tokenizer_from='/nonexistent/vae'"], "ablate.tokenizer_from"),
    # An 8-frame bidirectional DiT slides its window over eval's 16-frame clips: no s = 0.
    (["dit.num_frames=8"], "ablate.s_values"),
])
def test_bad_ablation_settings_are_refused_before_training(overrides, field):
  with pytest.raises(ConfigError) as error:
    ablate.check(_config(*overrides))
  assert error.value.field == field


def _eval_json(path, by_s):
  rows = {str(s): {"physics": {"samples": {"balls": balls, "count_consistency": 0.9},
                               "speed_ratio": 1.0, "acceleration_ratio": accel,
                               "wall_bounce_ratio": 0.5, "palette_ratio": 0.7},
                   "seconds_per_video_16f": 0.5}
          for s, (balls, accel) in by_s.items()}
  path.mkdir(parents=True)
  (path / "eval.json").write_text(json.dumps({"results": rows}))


def test_the_report_gives_seed_spreads_and_welch_tests(tmp_path):
  config = _config("ablate.rows=('ar_diffusion', 'no_fopp', 'official')", "ablate.seeds=3")
  full_accel, no_fopp_accel = [2.0, 2.2, 2.1], [4.0, 4.6, 4.3]
  for seed in range(3):
    _eval_json(tmp_path / "rows" / "ar_diffusion" / f"seed{seed}" / "eval",
               {0: (2.0, full_accel[seed]), 2: (2.1, 1.5)})
    _eval_json(tmp_path / "rows" / "no_fopp" / f"seed{seed}" / "eval",
               {0: (1.5, no_fopp_accel[seed]), 2: (1.6, 1.5)})
  _eval_json(tmp_path / "rows" / "official" / "seed0" / "eval", {0: (1.0, 9.0), 2: (1.0, 9.0)})
  report = ablate.write_report(config, tmp_path)
  full = report["rows"]["ar_diffusion"]["by_s"]["0"]["acceleration_ratio"]
  assert full["mean"] == pytest.approx(2.1) and full["std"] == pytest.approx(0.1)
  diff = report["rows"]["no_fopp"]["difference"]["0"]["acceleration_ratio"]
  assert diff["delta"] == pytest.approx(2.2)
  # Welch's t by hand: t = delta / sqrt(va/na + vb/nb), Welch-Satterthwaite degrees.
  va, vb = np.var(no_fopp_accel, ddof=1) / 3, np.var(full_accel, ddof=1) / 3
  t = 2.2 / math.sqrt(va + vb)
  dof = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
  assert diff["p"] == pytest.approx(2 * stats.t.sf(t, dof), rel=1e-6) and diff["p"] < 0.01
  # Equal and constant on both sides: no test. One seed: no spread and no test.
  assert math.isnan(report["rows"]["no_fopp"]["difference"]["2"]["acceleration_ratio"]["p"])
  official = report["rows"]["official"]
  assert official["seeds"] == 1 and math.isnan(official["by_s"]["0"]["balls"]["std"])
  assert math.isnan(official["difference"]["0"]["balls"]["p"])
  table = (tmp_path / "ablations.md").read_text()
  assert "| AR-Diffusion | 3 | 2.10 ± 0.00 | 0.90 ± 0.00 |" in table  # Table 3 at table_s = 2
  assert "## Differences from AR-Diffusion at s = 2" in table and "## Table 2" in table
  assert "| 0 | 2.00 ± 0.00 | 0.90 ± 0.00 | 1.00 ± 0.00 | 2.10 ± 0.10 |" in table
  assert (tmp_path / "ablations.png").stat().st_size > 1000
  assert json.loads((tmp_path / "ablations.json").read_text())["rows"]["no_fopp"]["changes"] == [
      "diffusion.timestep_scheme='increasing_uniform'"]


def test_significant_differences_are_marked(tmp_path):
  config = _config("ablate.rows=('ar_diffusion', 'no_fopp')", "ablate.seeds=3",
                   "ablate.table_s=0")
  for seed, (a, b) in enumerate([(2.0, 4.0), (2.2, 4.6), (2.1, 4.3)]):
    _eval_json(tmp_path / "rows" / "ar_diffusion" / f"seed{seed}" / "eval", {0: (2.0, a)})
    _eval_json(tmp_path / "rows" / "no_fopp" / f"seed{seed}" / "eval", {0: (2.0, b)})
  table = ablate.markdown(config, ablate.summarize(config, tmp_path))
  assert "**+2.20 (p 0.00" in table  # acceleration: far beyond the seed spread
  assert "+0.00 (p –)" in table  # balls: equal and constant


def test_the_ar_vae_stages_chain_from_a_reused_frames_run(tmp_path, monkeypatch):
  """Stage 3 starts from the frames stage (or from `ablate.tokenizer_from`, which is then
  not retrained); latents come from the last stage."""
  from ardiffusion_jax.train import vae as train_vae
  trained, extracted = [], []
  monkeypatch.setattr(train_vae, "train", lambda cfg, folder, devices: trained.append(
      (folder.name, cfg.vae_train.init_from, cfg.vae.temporal_causal, devices)))
  monkeypatch.setattr(ablate.extract_lib, "extract", lambda cfg, vae, out: extracted.append(vae))
  staged = ("ablate.causal_steps=4",)
  one = ["cpu:0"]  # the devices are handed on as they are
  paths = ablate._tokenizer(_config(*staged), tmp_path, "improved", one)
  assert trained == [("frames", "", False, one),
                     ("vae", str(tmp_path / "tokenizers/improved/frames"), True, one)]
  assert paths["vae"] == extracted[-1] == tmp_path / "tokenizers/improved/vae"
  reused = ("ablate.tokenizer_from='runs/demo/vae'",)
  trained.clear()
  paths = ablate._tokenizer(_config(*staged, *reused), tmp_path, "improved")
  assert trained == [("vae", "runs/demo/vae", True, None)]
  trained.clear()
  paths = ablate._tokenizer(_config(*reused), tmp_path, "improved")  # no stage 3 (smoke)
  assert trained == [] and str(paths["vae"]) == "runs/demo/vae"
  ablate._tokenizer(_config(*staged, *reused), tmp_path, "plain")
  assert trained == [("vae", "", False, None)]  # the plain tokenizer never starts from the AR-VAE


def test_each_table3_row_is_also_set_against_the_row_above(tmp_path):
  """The step of a cumulative row is measured from the row just above it; a row whose
  row above was not run gets no step (its difference would span two changes)."""
  config = _config("ablate.rows=('ar_diffusion', 'no_fopp', 'no_improved_vae', 'no_x0', 'official')",
                   "ablate.seeds=2")
  accel = {"ar_diffusion": (2.0, 2.2), "no_fopp": (5.0, 5.4), "no_improved_vae": (6.0, 6.2),
           "no_x0": (9.0, 9.4), "official": (3.0, 3.2)}
  for row, values in accel.items():
    for seed, a in enumerate(values):
      _eval_json(tmp_path / "rows" / row / f"seed{seed}" / "eval", {0: (2.0, a), 2: (2.0, a)})
  table = ablate.summarize(config, tmp_path)
  step = lambda row: table[row]["step"]["2"]["acceleration_ratio"]
  assert step("no_fopp")["delta"] == pytest.approx(3.1)
  assert step("no_fopp")["delta"] == pytest.approx(table["no_fopp"]["difference"]["2"][
      "acceleration_ratio"]["delta"])
  assert step("no_improved_vae")["delta"] == pytest.approx(0.9)
  assert step("no_improved_vae")["p"] == pytest.approx(ablate.welch_p([6.0, 6.2], [5.0, 5.4]))
  assert table["no_improved_vae"]["difference"]["2"]["acceleration_ratio"]["delta"] == pytest.approx(4.0)
  # no_causal_attention was not run: no_x0 has no row above; the official variant is no row of Table 3.
  assert "step" not in table["no_x0"] and "step" not in table["official"]
  assert "step" not in table["ar_diffusion"]
  text = ablate.markdown(config, table)
  assert "## Each row against the row above it at s = 2" in text
  assert "| − improved VAE | +0.00 (p –) | +0.00 (p –) | +0.00 (p –) | +0.90 (p " in text
