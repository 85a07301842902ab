#!/usr/bin/env bash
# Rehearse a multi-host run on one machine: N processes, each with D fake CPU devices,
# joined through jax.distributed on 127.0.0.1 (gloo collectives). Same code path as a pod.
#   NUM_PROCESSES=2 LOCAL_DEVICES=4 bash launch/train_multiprocess_cpu.sh configs/synthetic.py:smoke runs/mp --set ...
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: train_multiprocess_cpu.sh CONFIG WORKDIR [--set ...]}
workdir=${2:?usage: train_multiprocess_cpu.sh CONFIG WORKDIR [--set ...]}
shift 2
num_processes=${NUM_PROCESSES:-2}
local_devices=${LOCAL_DEVICES:-4}
port=${PORT:-$((20000 + RANDOM % 20000))}
bash launch/setup.sh
pids=()
for ((i = 0; i < num_processes; i++)); do
  .venv/bin/ardiff train --config "$config" --workdir "$workdir" "$@" \
    --coordinator "127.0.0.1:$port" --num-processes "$num_processes" --process-id "$i" \
    --local-devices "$local_devices" &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
