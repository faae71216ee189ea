#!/usr/bin/env bash
# Train with a config, in the CUDA container when a Docker engine is available, else on the host.
#   ./run_training.sh --config ablation2.py --gpu 1         # one GPU (container sees it as device 0)
#   ./run_training.sh --config distributed.py --gpus 0,1   # DDP over two GPUs with torchrun
#   ./run_training.sh --local --config tiny_cpu.py         # on the host, CPU is fine
#   ./run_training.sh --dry-run --config ablation2.py --gpu 1   # the command, then the preflight plan
#   ./run_training.sh --config distributed.py --gpus 0,1 --nnodes 2 --node_rank 0 --master_addr 10.1.2.3  # node 0 of 2
# Wrapper options: --local, --docker, --dry-run, --gpu N, --gpus 0,1 (indices), --all-gpus, --image NAME,
#   --nnodes N --node_rank R --master_addr HOST [--master_port P] (every node runs the same command but its rank).
# Every other argument goes to `python -m train.train_sft` (see train/config_loader.py for overrides).
# --dry-run prints the command and runs the preflight (train/preflight.py) on the host; PREFLIGHT=0 skips it.
set -euo pipefail
# shellcheck source=scripts/wrapper_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/wrapper_lib.sh"

help_if_asked "$@"
train_args=()
while [ $# -gt 0 ]; do
  wrapper_option "$@"
  if [ "$USED" -eq 0 ]; then train_args+=("$1"); shift; else shift "$USED"; fi
done
# A port outside 1-65535 or a GPU listed twice (two ranks on one GPU) would only fail inside torchrun.
check_launch() {
  if ! [[ "$MASTER_PORT" =~ ^[0-9]+$ ]] || [ "$MASTER_PORT" -lt 1 ] || [ "$MASTER_PORT" -gt 65535 ]; then
    echo "error: --master_port must be a port number from 1 to 65535, got '$MASTER_PORT'" >&2; exit 2
  fi
  if [ -n "$GPUS" ] && [ "$GPUS" != "all" ]; then
    if ! [[ "$GPUS" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
      echo "error: --gpu/--gpus takes GPU indexes such as 1 or 0,1 (or --all-gpus), got '$GPUS'" >&2; exit 2
    fi
    local twice
    twice=$(echo "$GPUS" | tr ',' '\n' | sed 's/^0*\([0-9]\)/\1/' | sort | uniq -d | head -n 1)
    if [ -n "$twice" ]; then
      echo "error: --gpus $GPUS lists GPU $twice twice (each process needs a GPU of its own)" >&2; exit 2
    fi
  fi
}
check_launch
resolve_mode
check_nodes
# shellcheck disable=SC2046  # the launcher is deliberately split into words
run_command $(python_launcher) -m train.train_sft "${train_args[@]}"
if [ "$DRY_RUN" = 1 ] && [ "${PREFLIGHT:-1}" != 0 ]; then run_preflight "${train_args[@]}"; fi
