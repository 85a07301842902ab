#!/usr/bin/env bash
# TPU pod slice: run the same command on every worker; jax.distributed.initialize()
# detects the pod. Checkpoints go to a bucket every worker can write; metrics stay local
# on worker 0.
#   TPU=my-v5p-64 ZONE=us-east5-a bash launch/tpu_pod.sh configs/synthetic.py:paper gs://bucket/runs/paper --set ...
set -euo pipefail
config=${1:?usage: tpu_pod.sh CONFIG GCS_WORKDIR [--set ...]}
workdir=${2:?usage: tpu_pod.sh CONFIG GCS_WORKDIR [--set ...]}
shift 2
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}"
repo=${REPO_DIR:-ardiffusion_jax}
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  set -e; cd $repo
  JAX_EXTRA=tpu bash launch/setup.sh
  .venv/bin/ardiff train --distributed --config $config --workdir $workdir --logdir runs/logs$extra"
