#!/usr/bin/env bash
# Batch inference + metrics, in the CUDA container when a Docker engine is available, else on the host.
#   ./evaluate/run_inference.sh --model models/X --data data/dev.csv --gpu 1
#   ./evaluate/run_inference.sh --local --model models/tiny-mistral --data data/sample/sample.csv
#   ./evaluate/run_inference.sh --dry-run --docker --model models/X --data data/dev.csv --gpus 0,1
# Options: --model DIR, --data FILE, --output FILE, --batch_size N, --max_new_tokens N, --backend hf|vllm|openai,
#          --gpu N, --gpus 0,1 (indices), --all-gpus, --local, --docker, --dry-run, --image NAME, --help.
# Any other argument goes to `python -m evaluate.sample_model`. Rerunning the same command resumes.
# --backend vllm runs in the vLLM environment: /opt/vllm-venv in the image, .venv-vllm on the host.
set -euo pipefail
# shellcheck source=scripts/wrapper_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/wrapper_lib.sh"

help_if_asked "$@"
args=()
backend="hf"
while [ $# -gt 0 ]; do
  wrapper_option "$@"
  if [ "$USED" -gt 0 ]; then shift "$USED"; continue; fi
  case "$1" in
    --model) args+=(--model_id "${2:?--model needs a dir}"); shift 2 ;;
    --data) args+=(--test_file "${2:?--data needs a file}"); shift 2 ;;
    --output) args+=(--output_file "${2:?--output needs a file}"); shift 2 ;;
    --backend) backend="${2:-}"; args+=("$1" "${2:-}"); shift 2 ;;
    --backend=*) backend="${1#*=}"; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
resolve_mode
single_node_only
if [ "$backend" = "openai" ]; then
  # In the container: the host's network, so --api_base http://127.0.0.1:PORT/v1 is the host's server (Docker
  # Desktop: use http://host.docker.internal:PORT/v1), and the key variables exported in this shell, passed by
  # name (-e NAME: the value never appears on a command line).
  DOCKER_ARGS+=(--network host)
  for key_var in MISTRAL_API_KEY OPENAI_API_KEY DEEPSEEK_API_KEY API_KEY SERVE_API_KEY; do
    if [ -n "${!key_var:-}" ]; then DOCKER_ARGS+=(-e "$key_var"); fi
  done
fi
if [ "$GPUS" = "all" ] || [[ "$GPUS" == *,* ]]; then
  echo "note: inference uses one process; for several GPUs run one shard each (--shard i/n) or --backend vllm" >&2
fi
run_command "$(backend_python "$backend")" -m evaluate.sample_model "${args[@]}"
