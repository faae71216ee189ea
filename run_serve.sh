#!/usr/bin/env bash
# Serve a model, LoRA adapter or .gguf file behind an OpenAI-compatible API (vLLM), in the CUDA container
# when a Docker engine is available, else on the host with .venv-vllm (vLLM's CPU build, `make test-vllm`).
#   ./run_serve.sh --model models/my-adapter --gpu 1              # http://127.0.0.1:8000/v1, model "my-adapter"
#   ./run_serve.sh --local --model models/my-adapter --port 8001  # on this machine
#   ./run_serve.sh --dry-run --docker --model models/X --gpus 0,1 # print the command only
# Options: --model PATH, --port N (8000), --host ADDR (127.0.0.1; ::1 for IPv6), --gpu N (GPU index N),
#          --gpus 0,1 (indices, tensor parallel; not a count), --all-gpus,
#          --local, --docker, --dry-run, --image NAME, --help. Others go to scripts/serve.py and vLLM.
# SERVE_API_KEY (environment or .env) makes the server require that bearer key. Ctrl-C / SIGTERM stop it.
set -euo pipefail
# shellcheck source=scripts/wrapper_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/wrapper_lib.sh"

help_if_asked "$@"
model="" port="8000" host="127.0.0.1" args=()
while [ $# -gt 0 ]; do
  wrapper_option "$@"
  if [ "$USED" -gt 0 ]; then shift "$USED"; continue; fi
  case "$1" in
    --model) model="${2:?--model needs a model dir, adapter dir or .gguf file}"; shift 2 ;;
    --port) port="${2:?--port needs a number}"; shift 2 ;;
    --host) host="${2:?--host needs an address}"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$model" ]; then echo "error: --model is required (a model dir, LoRA adapter dir or .gguf file)" >&2; exit 2; fi
resolve_mode
single_node_only
bind="$host"
url_host=()
if [ "$MODE" = "docker" ]; then
  # inside the container vLLM listens on all its interfaces; the host side of the port stays on --host,
  # which is also the address serve.py prints and judges (an open 0.0.0.0 inside is not open outside)
  bind="0.0.0.0"
  url_host=(--url_host "$host")
  published="$host"
  if [[ "$host" == *:* && "$host" != \[* ]]; then published="[$host]"; fi  # IPv6: docker wants [::1]:8000:8000
  DOCKER_ARGS=(-p "$published:$port:$port")
  if [ -n "${SERVE_API_KEY:-}" ]; then DOCKER_ARGS+=(-e SERVE_API_KEY); fi  # by name: the value stays off the command line
fi
run_command "$(backend_python vllm)" scripts/serve.py --model "$model" --host "$bind" --port "$port" \
  "${url_host[@]}" --gpus "$(gpu_count)" "${args[@]}"
