"""The `ardiff` command line: one entry point, one subcommand per stage of the pipeline."""

import argparse
import sys

from ardiffusion_jax.errors import CheckpointError, ConfigError, DataError

DEFAULT_CONFIG = "configs/synthetic.py:default"

# Stages whose implementation has not landed yet: the subcommand says so and exits 2
# instead of pretending. Each names the work item that brings it.
PENDING = {
    "train-vae": "the AR-VAE and its staged training (issue 4)",
    "extract": "latent extraction into ArrayRecord shards (issue 4)",
    "train": "the causal DiT training loop (issue 3)",
    "sample": "the AD sampler (issue 5)",
    "eval": "FVD / FID / physics evaluation (issue 7)",
    "convert": "checkpoint conversion and export (issue 6)",
    "plan": "AOT memory planning of the train step (issue 3)",
}


def _add_config(parser, default=DEFAULT_CONFIG):
  parser.add_argument("--config", default=default,
                      help="config file and variant, e.g. configs/synthetic.py:smoke")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="FIELD=VALUE", help="override a config field, e.g. data.num_frames=8")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="ardiff", description="AR-Diffusion in JAX: tokenizer, causal DiT, FoPP/AD schedulers.")
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  demo = commands.add_parser(
      "demo", help="run the main job on the synthetic bouncing-shapes dataset",
      description="Generate the synthetic dataset and write a preview GIF, pictures of the "
                  "FoPP and AD schedules and a report (JSON and markdown) into --workdir.")
  _add_config(demo)
  demo.add_argument("--workdir", default="runs/demo", help="output folder (default runs/demo)")

  bench = commands.add_parser(
      "bench", help="run a benchmark (same as python -m ardiffusion_jax.bench)",
      description="Run a named benchmark; it prints a table and writes JSON.")
  bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="benchmark name and options")

  descriptions = {
      "train-vae": "Train the AR-VAE tokenizer (frames, adversarial, causal finetune stages).",
      "extract": "Encode a dataset into ArrayRecord latent shards with a trained AR-VAE.",
      "train": "Train the causal DiT with FoPP timesteps, sharded over a device mesh.",
      "sample": "Generate videos with the AD scheduler (any length, continuation, CFG).",
      "eval": "Score samples with FVD, FID and the synthetic physics score.",
      "convert": "Import the authors' PyTorch checkpoints or TiTok weights; read portable exports.",
      "plan": "AOT-compile the train step on N fake devices and print per-device memory.",
  }
  for name, description in descriptions.items():
    sub = commands.add_parser(name, help=description.split(";")[0].rstrip("."),
                              description=f"{description} Not available yet: it arrives with "
                                          f"{PENDING[name]}.")
    sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.command == "demo":
      from ardiffusion_jax import config as config_lib, demo
      config = config_lib.load_config(args.config, args.overrides)
      report = demo.run(config, args.workdir)
      print(f"demo finished in {report['seconds']} s; see {args.workdir}/report.md")
      return 0
    if args.command == "bench":
      from ardiffusion_jax import bench
      return bench.main(args.bench_args)
    print(f"ardiff {args.command}: not available yet; it arrives with {PENDING[args.command]}.",
          file=sys.stderr)
    return 2
  except (ConfigError, DataError, CheckpointError) as error:
    print(f"ardiff {args.command}: error: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
