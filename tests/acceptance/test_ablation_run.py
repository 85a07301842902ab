"""`ardiff ablate` end to end at smoke size: every Table 3 row and the official variant
trained at two seeds and scored, the tables written, and a resumed run that redoes only
what is missing. (`ardiff ablate` is `ablate.run`; test_cli checks its wiring.)"""

import json

import jax

from ardiffusion_jax import ablate
from ardiffusion_jax import config as config_lib


def test_the_ablation_smoke_run_scores_every_row_and_resumes(tmp_path):
  config = config_lib.load_config("configs/synthetic.py:ablate_smoke", [])
  # One device: the sharded steps are tested elsewhere, and on the 8 fake CPU devices
  # every one of the 16 trainings compiles and runs 8 partitions (two rows took 397 s
  # there against 266 s on one, 2026-12-07).
  run = lambda: ablate.run(config, tmp_path, devices=jax.devices()[:1])
  run()
  report = json.loads((tmp_path / "ablations.json").read_text())
  assert list(report["rows"]) == list(ablate.TABLE3 + ablate.DEPARTURES)
  for name, row in report["rows"].items():
    assert row["seeds"] == 2, name
    for s in ("0", "2"):
      cells = row["by_s"][s]
      # (At smoke size the samples hold no ball to take a speed from: those are left out.)
      assert len(cells["balls"]["values"]) == 2 and cells["balls"]["mean"] >= 0
      assert 0 <= cells["count_steady"]["mean"] <= 1 and cells["seconds_per_video"]["mean"] > 0
    if name != "ar_diffusion":
      assert "p" in row["difference"]["2"]["balls"]
  # The bidirectional rows sample in full mode; the causal ones with the KV cache.
  mode = lambda row: json.loads((tmp_path / "rows" / row / "seed0" / "eval" / "eval.json")
                                .read_text())["sampling_mode"]
  assert [mode(r) for r in ("ar_diffusion", "no_causal_attention", "no_x0", "official")] == [
      "cached", "full", "full", "full"]
  latents_info = json.loads((tmp_path / "tokenizers" / "plain" / "latents" / "latents_info.json")
                            .read_text())
  # The plain tokenizer's latents (their 12 channels are checked against the DiT's
  # in_channels when its training reads them).
  assert "tokenizers/plain/vae" in latents_info["vae_checkpoint"]
  table = (tmp_path / "ablations.md").read_text()
  assert "## Table 3 at s = 2" in table and "## Table 2: AR-Diffusion by s" in table
  assert "| − temporal causal attention | 2 |" in table
  assert (tmp_path / "ablations.png").stat().st_size > 1000

  # Interrupted after one evaluation was lost: the rerun redoes that one alone.
  lost = tmp_path / "rows" / "no_x0" / "seed1" / "eval" / "eval.json"
  kept = tmp_path / "rows" / "no_fopp" / "seed0" / "eval" / "eval.json"
  kept_mtime = kept.stat().st_mtime_ns
  lost.unlink()
  run()
  assert lost.exists() and kept.stat().st_mtime_ns == kept_mtime
  assert json.loads((tmp_path / "ablations.json").read_text())["rows"]["no_x0"]["seeds"] == 2
