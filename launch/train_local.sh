#!/usr/bin/env bash
# Train the DiT on this machine, on all its devices.
#   bash launch/train_local.sh configs/synthetic.py:default runs/dit --set train.latents_dir=runs/latents
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: train_local.sh CONFIG WORKDIR [--set field=value ...]}
workdir=${2:?usage: train_local.sh CONFIG WORKDIR [--set field=value ...]}
shift 2
bash launch/setup.sh
exec .venv/bin/ardiff train --config "$config" --workdir "$workdir" "$@"
