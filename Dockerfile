# The CUDA image that run_training.sh and run_inference.sh use.
#   docker build -t nli-finetune:latest .
# data/, models/, results/ and the Hugging Face cache are volumes; secrets come from --env-file .env
# at run time and are never baked into a layer.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/home/app/.cache/huggingface

# The base image is pinned; its distro packages are left to the archive's current (security-patched)
# versions, since an exact pin breaks the build as soon as the archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev git \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv

WORKDIR /app
COPY requirements.txt requirements-gpu.txt ./
# torch (and flash-attn's build tools) first so flash-attn builds against it; then the rest and the GPU extras.
RUN pip install --no-cache-dir "$(grep '^torch==' requirements.txt)" ninja==1.13.2 wheel==0.48.0 \
    && pip install --no-cache-dir -r requirements.txt \
    && pip install --no-cache-dir --no-build-isolation -r requirements-gpu.txt

# Ubuntu 24.04 images ship a user "ubuntu" with uid 1000; the app user takes that uid so files written
# to the mounted volumes belong to the usual first user of the host.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --create-home --uid 1000 app \
    && mkdir -p /app/data /app/models /app/results /home/app/.cache/huggingface \
    && chown -R app:app /app /home/app
COPY --chown=app:app . /app
USER 1000:1000

VOLUME ["/app/data", "/app/models", "/app/results", "/home/app/.cache/huggingface"]
CMD ["python", "-m", "train.train_sft", "--help"]
