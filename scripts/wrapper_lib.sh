#!/usr/bin/env bash
# shellcheck disable=SC2034  # MODE, DRY_RUN, GPUS, DOCKER_ARGS and USED are shared with the sourcing wrapper
# Shared by run_training.sh and evaluate/run_inference.sh: where to run (Docker or host), which GPUs,
# and printing or executing the final command. Source it; it defines functions only.

IMAGE="${NLI_FT_IMAGE:-nli-finetune:latest}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="auto"        # auto | docker | local
DRY_RUN=0
GPUS=""            # "" (default device), "all", or a comma list such as "1" or "0,1"
DOCKER_ARGS=()     # more `docker run` options a wrapper needs (run_serve.sh: the published port)
NNODES=1           # machines in a multi-node run (run_training.sh), this one's rank, and the rendezvous host
NODE_RANK=0
MASTER_ADDR=""
MASTER_PORT=29500

# -h / --help first: print the wrapper's usage, the comment block under its #! line, and exit.
help_if_asked() {
  if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
    exit 0
  fi
}

# Parse one wrapper option; sets USED to how many arguments it consumed (0 = not a wrapper option).
USED=0
wrapper_option() {
  USED=1
  case "$1" in
    --local) MODE="local" ;;
    --docker) MODE="docker" ;;
    --dry-run) DRY_RUN=1 ;;
    --all-gpus) GPUS="all" ;;
    --gpu|--gpus)
      if [ -z "${2:-}" ]; then echo "error: $1 needs a GPU index or list, e.g. --gpu 1 or --gpus 0,1" >&2; exit 2; fi
      check_gpu_selection "$1" "$2"; GPUS="$2"; USED=2 ;;
    --gpu=*|--gpus=*) check_gpu_selection "${1%%=*}" "${1#*=}"; GPUS="${1#*=}" ;;
    --image) IMAGE="${2:?--image needs a name}"; USED=2 ;;
    --nnodes) NNODES="${2:?--nnodes needs a number}"; USED=2 ;;
    --node_rank|--node-rank) NODE_RANK="${2:?--node_rank needs a number}"; USED=2 ;;
    --master_addr|--master-addr) MASTER_ADDR="${2:?--master_addr needs a host}"; USED=2 ;;
    --master_port|--master-port) MASTER_PORT="${2:?--master_port needs a port}"; USED=2 ;;
    *) USED=0 ;;
  esac
}

# --gpu N selects GPU index N; --gpus takes a list of indices (0,1) or "all". A lone number after --gpus
# is refused: Docker's `--gpus 2` means two GPUs, where a list of one would mean GPU 2.
check_gpu_selection() {
  if [ "$1" = "--gpus" ] && [[ "$2" =~ ^[0-9]+$ ]]; then
    echo "error: --gpus $2 is ambiguous (for Docker it is a count): use --gpu $2 for GPU $2 alone, --gpus 0,1 for" \
         "a list of GPU indices, or --all-gpus" >&2
    exit 2
  fi
}

gpu_count() {
  if [ "$GPUS" = "all" ]; then
    if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L | wc -l; else echo 1; fi
  elif [ -z "$GPUS" ]; then echo 1
  else echo "$GPUS" | tr ',' '\n' | grep -c .
  fi
}

# Decide docker vs local once; a host without a Docker engine runs locally and says so.
resolve_mode() {
  if [ "$MODE" = "auto" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then MODE="docker"
    else
      echo "note: no Docker engine available; running on the host (use --docker to force the container)" >&2
      MODE="local"
    fi
  fi
}

# The python launcher: torchrun with one process per GPU when several are selected; across machines,
# torchrun with the rendezvous every node names the same way (node 0's address and port).
python_launcher() {
  local n; n=$(gpu_count)
  if [ "$NNODES" -gt 1 ]; then
    echo "torchrun --nnodes $NNODES --node_rank $NODE_RANK --master_addr $MASTER_ADDR --master_port $MASTER_PORT --nproc_per_node $n"
  elif [ "$n" -gt 1 ]; then echo "torchrun --standalone --nproc_per_node $n"
  else echo "python"
  fi
}

# Multi-node options belong to run_training.sh; the other wrappers refuse them rather than ignore them.
single_node_only() {
  if [ "$NNODES" != 1 ] || [ -n "$MASTER_ADDR" ]; then
    echo "error: --nnodes / --master_addr are for run_training.sh (this wrapper runs on one machine)" >&2; exit 2
  fi
}

# Refuse a multi-node run that cannot meet: every node needs the count, its own rank and node 0's address.
check_nodes() {
  local number='^[0-9]+$'
  if ! [[ "$NNODES" =~ $number && "$NODE_RANK" =~ $number && "$MASTER_PORT" =~ $number ]] || [ "$NNODES" -lt 1 ]; then
    echo "error: --nnodes, --node_rank and --master_port take whole numbers (got $NNODES, $NODE_RANK, $MASTER_PORT)" >&2; exit 2
  fi
  if [ "$NODE_RANK" -ge "$NNODES" ]; then
    echo "error: --node_rank $NODE_RANK must be below --nnodes $NNODES (ranks count from 0)" >&2; exit 2
  fi
  if [ "$NNODES" -gt 1 ] && [ -z "$MASTER_ADDR" ]; then
    echo "error: --nnodes $NNODES needs --master_addr HOST (node 0's address, the same on every node)" >&2; exit 2
  fi
  if [ "$NNODES" -gt 1 ]; then DOCKER_ARGS+=(--network host); fi  # torchrun's rendezvous and NCCL need the host's network
}

# The python of the backend's environment: vLLM pins its own torch and transformers, so it has one of its
# own (/opt/vllm-venv in the image, .venv-vllm from `make test-vllm` on the host).
backend_python() {
  if [ "$1" != "vllm" ]; then echo "python"
  elif [ "$MODE" = "docker" ]; then echo "/opt/vllm-venv/bin/python"
  else
    if [ -x "$REPO_DIR/.venv-vllm/bin/python" ]; then echo ".venv-vllm/bin/python"
    elif [ -x /opt/vllm-venv/bin/python ]; then echo "/opt/vllm-venv/bin/python"  # --local inside the image
    else
      echo "note: no .venv-vllm here (make test-vllm builds it); trying the current python" >&2
      echo "python"
    fi
  fi
}

# The training preflight (plan, data check, memory estimate; nothing loaded) with the host's project
# environment, as many processes as GPUs selected; its exit status is the wrapper's.
run_preflight() {
  local python="python"
  if [ -x "$REPO_DIR/.venv/bin/python" ]; then python="$REPO_DIR/.venv/bin/python"; fi
  if ! (cd "$REPO_DIR" && "$python" -c "import train.preflight" >/dev/null 2>&1); then
    echo "note: preflight skipped: no Python with requirements.txt on this host (make demo / make test builds .venv);" \
         "in the image: docker run --rm $IMAGE python -m train.train_sft $* --dry_run" >&2
    return 0
  fi
  (cd "$REPO_DIR" && WORLD_SIZE="$(( $(gpu_count) * NNODES ))" exec "$python" -m train.train_sft "$@" --dry_run)
}

# An argument as a shell would need it typed: bare when safe, else single-quoted.
quote_arg() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s' "$1"
  elif [[ "$1" != *"'"* ]]; then printf "'%s'" "$1"
  else printf '%q' "$1"
  fi
}

# The folders of this checkout a container sees; train/configs too, so a config added on the host needs no rebuild.
MOUNTED=(data models results train/configs)

# In Docker, refuse a path the container could not see: one outside this checkout (absolute, or ../) that is
# not under a mounted folder. Paths inside the checkout are the image's copy; /app and /opt are the container's.
check_mounted_paths() {
  local arg path dir
  for arg in "$@"; do
    path="${arg#--*=}"
    if [[ "$path" == /app/* || "$path" == /opt/* ]]; then continue; fi
    if [[ "$path" != /* && "$path" != ../* ]]; then continue; fi
    [[ "$path" == /* ]] || path="$REPO_DIR/$path"
    path="$(realpath -m "$path")"
    for dir in "${MOUNTED[@]}"; do
      if [[ "$path" == "$REPO_DIR/$dir" || "$path" == "$REPO_DIR/$dir"/* ]]; then continue 2; fi
    done
    echo "error: $arg is outside ${MOUNTED[*]/%//}, the folders the container sees; move it under one of" \
         "them, or run on the host with --local" >&2
    exit 2
  done
}

# The container runs as the calling user (`--user`): every volume is a folder of the host, which the image's
# own uid 1000 cannot write when the host user is root or another uid. HOME=/tmp, writable by any uid
# (caches under ~ such as triton's); the Hugging Face cache is the mounted folder.
CONTAINER_HF_HOME=/home/app/.cache/huggingface

# Before `docker run`: create the folders it mounts (Docker would create a missing one owned by root, and the
# first write into it fails), and stop with one line on a folder this user cannot write.
prepare_mounts() {
  local dir
  for dir in "$@"; do
    mkdir -p "$dir" 2>/dev/null || true
    if [ ! -d "$dir" ] || [ ! -w "$dir" ]; then
      echo "error: $dir is not writable by uid $(id -u), whom the container runs as (an earlier container may" \
           "have made it as root): sudo chown -R $(id -u):$(id -g) $dir" >&2
      exit 2
    fi
  done
}

# Print (dry run) or run the command given as arguments, with Docker or on the host.
run_command() {
  local cmd=()
  if [ "$MODE" = "docker" ]; then
    check_mounted_paths "$@"
    local hf_cache="${HF_HOME:-$HOME/.cache/huggingface}"
    if [ "$DRY_RUN" != 1 ]; then prepare_mounts "$REPO_DIR/data" "$REPO_DIR/models" "$REPO_DIR/results" "$hf_cache"; fi
    cmd=(docker run --rm --ipc=host --user "$(id -u):$(id -g)" -e HOME=/tmp -e "HF_HOME=$CONTAINER_HF_HOME"
         "${DOCKER_ARGS[@]}")
    if [ "$GPUS" = "all" ]; then cmd+=(--gpus all)
    elif [[ "$GPUS" == *,* ]]; then cmd+=(--gpus "\"device=$GPUS\"")  # docker's syntax for a list
    elif [ -n "$GPUS" ]; then cmd+=(--gpus "device=$GPUS")  # inside the container it is device 0
    fi
    cmd+=(-v "$REPO_DIR/data:/app/data" -v "$REPO_DIR/models:/app/models" -v "$REPO_DIR/results:/app/results"
          -v "$REPO_DIR/train/configs:/app/train/configs:ro" -v "$hf_cache:$CONTAINER_HF_HOME")
    if [ -f "$REPO_DIR/.env" ]; then cmd+=(--env-file "$REPO_DIR/.env"); fi
    # NCCL's and torch's network settings of the caller (NCCL_SOCKET_IFNAME=eth0 on a multi-NIC node, NCCL_DEBUG,
    # NCCL_IB_DISABLE, GLOO_SOCKET_IFNAME, TORCH_NCCL_*): `-e NAME` passes the caller's value in, unchanged
    local name
    while IFS= read -r name; do cmd+=(-e "$name"); done < <(compgen -e | grep -E '^(NCCL_|TORCH_NCCL_|GLOO_SOCKET_IFNAME$)' | sort)
    cmd+=("$IMAGE" "$@")
  else
    if [ -n "$GPUS" ] && [ "$GPUS" != "all" ]; then cmd=(env "CUDA_VISIBLE_DEVICES=$GPUS"); fi
    cmd+=("$@")
  fi
  if [ "$DRY_RUN" = 1 ]; then
    local out=() arg
    for arg in "${cmd[@]}"; do out+=("$(quote_arg "$arg")"); done
    echo "${out[*]}"
    return 0
  fi
  cd "$REPO_DIR" || exit 1
  # On the host, prefer the project's venv (made by `make demo` / `make test`) when it exists.
  PATH="$REPO_DIR/.venv/bin:$PATH" exec "${cmd[@]}"
}
