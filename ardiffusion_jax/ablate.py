"""`ardiff ablate`: the paper's Table 3 ablations and its Table 2 trade-off in s, at small
scale and over seeds.

Table 3's rows each drop one part of AR-Diffusion and, as in the paper, everything the
rows above them dropped:

| row | its own change |
|---|---|
| ar_diffusion | none: FoPP, the AR-VAE, causal attention, x0 prediction, t1 <= ... <= tF |
| no_fopp | diffusion.timestep_scheme = ablate.no_fopp_scheme (increasing_uniform) |
| no_improved_vae | the plain tokenizer: ablate.plain_token_dim channels a token, frames only |
| no_causal_attention | dit.temporal_attention = bidirectional (sampled in full mode only) |
| no_x0 | diffusion.parameterization = eps |
| no_nondecreasing | diffusion.timestep_scheme = independent (Diffusion Forcing's noise) |

`official` (dit.variant = official: its context tokens see every frame) is the authors'
departure, measured against the full model alone.

The AR-VAE ("improved") is the config's frames stage followed by `ablate.causal_steps`
steps of the temporal-causal decoder (`ablate.causal_vae_train`); the plain tokenizer
trains its frames stage for the same total number of steps. Every row trains the DiT
that the config's `dit` and `train` sections describe, on its tokenizer's latents, once
per seed, and `ardiff eval` (`eval/evaluate.py`) scores each at every s in
`ablate.s_values` on `ablate.videos` videos.

Workdir:
  tokenizers/improved/{frames,vae,latents}, tokenizers/plain/{vae,latents}
  rows/<row>/seed<k>/{dit,eval}
  ablations.json, ablations.md, ablations.png
  compilation_cache/ (XLA's, unless one is configured)

Re-running the command resumes: training continues from the last checkpoint, finished
latent shards and evaluations (an eval.json) are kept, and the tables are rebuilt from
whatever is finished.
"""

import json
import math
import pathlib

import numpy as np
from scipy import stats as scipy_stats

from ardiffusion_jax import config as config_lib
from ardiffusion_jax import extract as extract_lib
from ardiffusion_jax import viz
from ardiffusion_jax.errors import ArgumentError, ConfigError

TABLE3 = ("ar_diffusion", "no_fopp", "no_improved_vae", "no_causal_attention", "no_x0",
          "no_nondecreasing")
DEPARTURES = ("official",)
ROW_NAMES = {
    "ar_diffusion": "AR-Diffusion",
    "no_fopp": "− FoPP timestep scheduler",
    "no_improved_vae": "− improved VAE",
    "no_causal_attention": "− temporal causal attention",
    "no_x0": "− x0 prediction loss",
    "no_nondecreasing": "− non-decreasing constraint",
    "official": "official variant (context sees every frame)",
}
# What each table reports, read from one s of an eval.json row; None where it is missing.
STATISTICS = {
    "fvd16": ("FVD16", lambda row: row.get("fvd16")),
    "fid_img": ("FID-img", lambda row: row.get("fid_img")),
    "balls": ("balls", lambda row: row["physics"]["samples"]["balls"]),
    "count_steady": ("count steady", lambda row: row["physics"]["samples"]["count_consistency"]),
    "speed_ratio": ("speed ratio", lambda row: row["physics"]["speed_ratio"]),
    "acceleration_ratio": ("accel. ratio", lambda row: row["physics"]["acceleration_ratio"]),
    "wall_bounce_ratio": ("wall ratio", lambda row: row["physics"]["wall_bounce_ratio"]),
    "palette_ratio": ("palette ratio", lambda row: row["physics"]["palette_ratio"]),
    "seconds_per_video": ("s / video", lambda row: row.get("seconds_per_video_16f")),
}


def _own_changes(row: str, ablate) -> list:
  """The overrides a row adds to the rows above it (`key=value`, as `--set` takes)."""
  return {
      "ar_diffusion": [],
      "no_fopp": [f"diffusion.timestep_scheme={ablate.no_fopp_scheme!r}"],
      "no_improved_vae": [f"vae.token_dim={ablate.plain_token_dim}",
                          f"dit.in_channels={ablate.plain_token_dim}"],
      "no_causal_attention": ["dit.temporal_attention='bidirectional'"],
      "no_x0": ["diffusion.parameterization='eps'"],
      "no_nondecreasing": ["diffusion.timestep_scheme='independent'"],
      "official": ["dit.variant='official'"],
  }[row]


def row_changes(row: str, ablate) -> list:
  """Every override of a row: cumulative down Table 3, its own for a departure."""
  if row in TABLE3:
    return [change for above in TABLE3[:TABLE3.index(row) + 1]
            for change in _own_changes(above, ablate)]
  return _own_changes(row, ablate)


def tokenizer_of(row: str) -> str:
  plain = row in TABLE3 and TABLE3.index(row) >= TABLE3.index("no_improved_vae")
  return "plain" if plain else "improved"


def row_config(config, row: str, seed: int):
  """The full config of one row's DiT at one seed (not yet validated)."""
  out = config.copy_and_resolve_references()
  config_lib.apply_overrides(out, row_changes(row, config.ablate) + [f"seed={seed}"])
  return out


def tokenizer_configs(config, name: str) -> list:
  """[(stage folder, config)] of a tokenizer, in training order."""
  ablate = config.ablate
  frames = config.copy_and_resolve_references()
  if name == "plain":
    config_lib.apply_overrides(frames, [f"vae.token_dim={ablate.plain_token_dim}"])
    frames.vae_train.steps += ablate.causal_steps  # the same budget as the AR-VAE's two stages
    return [("vae", frames)]
  if not ablate.causal_steps:
    return [("vae", frames)]
  causal = config.copy_and_resolve_references()
  causal.vae.temporal_causal = True
  causal.vae_train = ablate.causal_vae_train.copy_and_resolve_references()
  causal.vae_train.steps = ablate.causal_steps
  causal.vae_train.clip_frames = config.data.num_frames
  return [("frames", frames), ("vae", causal)]


def check(config) -> None:
  """Validates the ablate section and every config the run will train, before anything
  compiles; raises ConfigError naming the field."""
  from ardiffusion_jax.eval import evaluate
  if "ablate" not in config:
    raise ConfigError("ablate", "section is missing: use a config variant made for ablations, "
                                "e.g. configs/synthetic.py:ablate")
  ablate = config.ablate
  unknown = [row for row in ablate.rows if row not in ROW_NAMES]
  if unknown or "ar_diffusion" not in ablate.rows:
    raise ConfigError("ablate.rows", f"rows must include 'ar_diffusion' (the reference) and come "
                                     f"from {tuple(ROW_NAMES)}; got {tuple(ablate.rows)}")
  if ablate.seeds < 2:
    raise ConfigError("ablate.seeds", f"needs >= 2 seeds for a seed spread and a test of each "
                                      f"difference, got {ablate.seeds}")
  if ablate.videos < 2:
    raise ConfigError("ablate.videos", f"must be >= 2, got {ablate.videos}")
  if ablate.causal_steps < 0:
    raise ConfigError("ablate.causal_steps", f"must be >= 0, got {ablate.causal_steps}")
  if ablate.tokenizer_from and not pathlib.Path(ablate.tokenizer_from).is_dir():
    raise ConfigError("ablate.tokenizer_from", f"{ablate.tokenizer_from!r} is not a folder: name "
                                               f"a trained AR-VAE run, e.g. runs/demo/vae")
  if ablate.table_s not in ablate.s_values:
    raise ConfigError("ablate.table_s", f"{ablate.table_s} is not one of ablate.s_values "
                                        f"{tuple(ablate.s_values)}")
  try:
    evaluate.check_metrics(list(ablate.metrics), config.data.name)
    evaluate.check_s_values(list(ablate.s_values), config.diffusion.sampling_steps)
  except ArgumentError as error:  # named after the eval command's flags: metrics, s_values
    raise ConfigError(f"ablate.{error.argument}", error.reason) from error
  for name in {tokenizer_of(row) for row in ablate.rows}:
    for _, stage in tokenizer_configs(config, name):
      config_lib.validate(stage)
  for row in ablate.rows:
    _check_sampling(config_lib.validate(row_config(config, row, 0)), row)


def _check_sampling(row_cfg, row: str):
  """Each s must run on the row's DiT in the mode `ardiff eval` will pick, for the clips
  it scores (a bidirectional DiT shorter than them slides the authors' window, which
  cannot run s = 0)."""
  from ardiffusion_jax import diffusion, sampling
  from ardiffusion_jax.eval import evaluate
  from ardiffusion_jax.models import dit
  model = dit.dit_from_config(row_cfg.dit)
  diff = row_cfg.diffusion
  grid = diffusion.ddim_grid(diff.ddim_grid, diffusion.alphas_from_config(diff), diff.sampling_steps)
  for s in row_cfg.ablate.s_values:
    try:
      sampling.make_plan(model, grid, evaluate.CLIP_FRAMES, s, mode=sampling.default_mode(model))
    except ValueError as error:
      raise ConfigError("ablate.s_values", f"row {row!r} cannot sample s = {s}: {error}") from error


def _tokenizer(config, workdir: pathlib.Path, name: str, devices=None) -> dict:
  """Trains (or resumes) a tokenizer's stages and extracts its latents; returns the paths
  {"vae": its last run, "latents": its shards}. The improved tokenizer's frames stage may
  be an existing run (`ablate.tokenizer_from`, e.g. the demo's `runs/demo/vae`)."""
  from ardiffusion_jax.train import vae as train_vae
  folder = workdir / "tokenizers" / name
  previous = None
  for stage, stage_config in tokenizer_configs(config, name):
    if previous is None and name == "improved" and config.ablate.tokenizer_from:
      previous = pathlib.Path(config.ablate.tokenizer_from)
      continue
    if previous is not None:
      stage_config.vae_train.init_from = str(previous)
    train_vae.train(stage_config, folder / stage, devices=devices)
    previous = folder / stage
  extract_lib.extract(config, previous, folder / "latents")
  return {"vae": previous, "latents": folder / "latents"}


def _eval_rows(path: pathlib.Path) -> dict:
  return json.loads(path.read_text())["results"] if path.exists() else {}


def _cache_compilations(workdir: pathlib.Path):
  """Every seed of a row trains and samples the same programs, and rows share most of
  theirs: XLA's persistent cache under the workdir compiles each once (a resumed run
  reuses them too). A cache the user configured is left alone."""
  import jax
  if jax.config.jax_compilation_cache_dir is None:
    jax.config.update("jax_compilation_cache_dir", str(workdir / "compilation_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run(config, workdir, devices=None) -> dict:
  """Trains and scores every row at every seed (resuming), then writes the tables.
  The tokenizers and DiTs train on `devices` (all of them by default), as `ardiff train`
  and `train-vae` do."""
  from ardiffusion_jax.eval import evaluate
  from ardiffusion_jax.train import dit as train_dit
  check(config)
  workdir = pathlib.Path(workdir)
  ablate = config.ablate
  _cache_compilations(workdir)
  metrics = list(ablate.metrics) + (["fid_img"] if ablate.fid_weights else [])
  tokenizers = {}
  for row in ablate.rows:
    name = tokenizer_of(row)
    if name not in tokenizers:
      tokenizers[name] = _tokenizer(config, workdir, name, devices)
    for seed in range(ablate.seeds):
      folder = workdir / "rows" / row / f"seed{seed}"
      if (folder / "eval" / "eval.json").exists():
        continue
      row_cfg = row_config(config, row, seed)
      row_cfg.train.latents_dir = str(tokenizers[name]["latents"])
      train_dit.train(row_cfg, folder / "dit", devices=devices)
      evaluate.evaluate(row_cfg, folder / "dit", folder / "eval", metrics, list(ablate.s_values),
                        ablate.videos, vae_ckpt=tokenizers[name]["vae"],
                        batch_size=ablate.batch_size, seed=seed,
                        fid_weights=ablate.fid_weights or None)
  return write_report(config, workdir)


def summarize(config, workdir) -> dict:
  """{row: {s: {statistic: {"values": [per seed], "mean", "std"}}}} from the finished
  evaluations (seeds where a statistic could not be measured are left out of it), each
  row's difference from ar_diffusion at every s with Welch's t-test over seeds
  ("difference"), and each Table 3 row's difference from the row above it ("step")."""
  workdir = pathlib.Path(workdir)
  ablate = config.ablate
  table = {}
  for row in ablate.rows:
    per_seed = [_eval_rows(workdir / "rows" / row / f"seed{seed}" / "eval" / "eval.json")
                for seed in range(ablate.seeds)]
    per_seed = [results for results in per_seed if results]
    if not per_seed:
      continue
    table[row] = {"seeds": len(per_seed), "by_s": {}}
    for s in ablate.s_values:
      cells = {}
      for key, (_, read) in STATISTICS.items():
        values = [read(results[str(s)]) for results in per_seed if str(s) in results]
        # None: not scored; NaN: not measurable (no ball tracked to take a speed from).
        values = [float(v) for v in values if v is not None and math.isfinite(v)]
        if values:
          cells[key] = {"values": values, "mean": float(np.mean(values)),
                        "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan}
      table[row]["by_s"][str(s)] = cells
  for row, entry in table.items():
    if row != "ar_diffusion" and "ar_diffusion" in table:
      entry["difference"] = _differences(entry, table["ar_diffusion"])
    # Table 3 is cumulative: a row's own change is what separates it from the row above.
    above = TABLE3[TABLE3.index(row) - 1] if row in TABLE3[1:] else None
    if above in table:
      entry["step"] = _differences(entry, table[above])
  return table


def _differences(entry, reference) -> dict:
  """{s: {statistic: {"delta", "p"}}}: entry's means less reference's, Welch's p."""
  out = {}
  for s, cells in entry["by_s"].items():
    out[s] = {key: {"delta": cell["mean"] - ref["mean"], "p": welch_p(cell["values"], ref["values"])}
              for key, cell in cells.items()
              if (ref := reference["by_s"].get(s, {}).get(key)) is not None}
  return out


def welch_p(a, b) -> float:
  """Two-sided p-value of Welch's t-test (nan with fewer than 2 values a side, or when
  neither side varies)."""
  if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
    return math.nan
  return float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)


def _cell(cell) -> str:
  if cell is None:
    return "–"
  spread = "" if math.isnan(cell["std"]) else f" ± {cell['std']:.2f}"
  return f"{cell['mean']:.2f}{spread}"


def markdown(config, table: dict) -> str:
  ablate = config.ablate
  keys = [k for k in STATISTICS if any(k in entry["by_s"].get(str(s), {})
                                       for entry in table.values() for s in ablate.s_values)]
  names = [STATISTICS[k][0] for k in keys]
  s_table = str(ablate.table_s)
  lines = [f"# Ablations: Table 3 and Table 2 at small scale ({config.data.name})", "",
           f"DiT: {config.dit.size} preset, {config.train.steps} steps, batch "
           f"{config.train.batch_size}; {ablate.seeds} seeds a row; {ablate.videos} videos per "
           f"s against as many held-out clips. Mean ± standard deviation over seeds.", "",
           f"## Table 3 at s = {s_table}", "",
           "| model | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
  for row, entry in table.items():
    cells = entry["by_s"].get(s_table, {})
    lines.append(f"| {ROW_NAMES[row]} | {entry['seeds']} | "
                 + " | ".join(_cell(cells.get(k)) for k in keys) + " |")
  lines += _difference_table(
      table, "difference", keys, names, s_table, f"## Differences from AR-Diffusion at s = {s_table}",
      "Row mean less AR-Diffusion's, with the two-sided p-value of Welch's t-test over seeds "
      "(p < 0.05 in bold; – where a side has fewer than 2 seeds).")
  lines += _difference_table(
      table, "step", keys, names, s_table, f"## Each row against the row above it at s = {s_table}",
      "Table 3's rows each drop one more part, so a row's own part is what separates it from "
      "the row above: row mean less that row's, with Welch's p as above.")
  if "ar_diffusion" in table:
    lines += ["", "## Table 2: AR-Diffusion by s", "",
              "| s | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for s in ablate.s_values:
      cells = table["ar_diffusion"]["by_s"].get(str(s), {})
      lines.append(f"| {s} | " + " | ".join(_cell(cells.get(k)) for k in keys) + " |")
  lines += ["", "Every row by s: `ablations.json` and `ablations.png`. Ratios are the samples' "
            "over the real clips' (1 is a match); seconds per video are the sampler's, without "
            "decoding."]
  return "\n".join(lines) + "\n"


def _difference_table(table, field, keys, names, s, title, explanation) -> list:
  """Markdown lines of the rows' `field` ("difference" or "step") at s; none if no row has one."""
  rows = [(row, entry[field].get(s, {})) for row, entry in table.items() if field in entry]
  if not rows:
    return []
  lines = ["", title, "", explanation, "",
           "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  for row, diffs in rows:
    cells = []
    for k in keys:
      d = diffs.get(k)
      if d is None:
        cells.append("–")
        continue
      p = "–" if math.isnan(d["p"]) else f"{d['p']:.3f}"
      text = f"{d['delta']:+.2f} (p {p})"
      cells.append(f"**{text}**" if not math.isnan(d["p"]) and d["p"] < 0.05 else text)
    lines.append(f"| {ROW_NAMES[row]} | " + " | ".join(cells) + " |")
  return lines


def write_report(config, workdir) -> dict:
  """ablations.json, ablations.md and ablations.png from whatever is finished."""
  workdir = pathlib.Path(workdir)
  table = summarize(config, workdir)
  report = {"rows": {row: {"name": ROW_NAMES[row], "changes": row_changes(row, config.ablate),
                           "tokenizer": tokenizer_of(row), **entry}
                     for row, entry in table.items()},
            "s_values": list(config.ablate.s_values), "table_s": config.ablate.table_s,
            "seeds": config.ablate.seeds, "videos": config.ablate.videos}
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "ablations.json").write_text(json.dumps(report, indent=2))
  (workdir / "ablations.md").write_text(markdown(config, table))
  series = {ROW_NAMES[row]: {key: [entry["by_s"].get(str(s), {}).get(key) for s in
                                   config.ablate.s_values] for key in STATISTICS}
            for row, entry in table.items()}
  viz.plot_ablations(workdir / "ablations.png", list(config.ablate.s_values), series,
                     {key: label for key, (label, _) in STATISTICS.items()})
  return report
