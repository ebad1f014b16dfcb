# The README's two commands: `make demo` and `make test`. Both set up first; set-up is idempotent.
PYTHON_BOOTSTRAP ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On this machine these two wheels lie on local disk; override for another platform or CUDA version.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
CUDA_HOME ?= /usr/local/cuda
export CUDA_HOME

# Two stamps: what the library, `make demo` and the op's build need (requirement.txt), and what the tests, lint and
# the ONNX path add (requirement-dev.txt); the demo installs only the first.
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEPS_STAMP := $(VENV)/.deps-installed

.PHONY: setup setup-demo demo lint test test-all bench op clean-op gpu-wheels gpu-check

# Tests compile the CUDA kernels too wherever nvcc exists. The demo builds the op itself, and only when its experiment
# has deformable convolutions (tools/main_demo.py: the default experiment has none).
setup: $(DEPS_STAMP)
	@echo "[setup] dependencies installed in $(VENV)"
	@PYTHON=$(PY) tools/build_op.sh full

setup-demo: $(RUNTIME_STAMP)
	@echo "[setup] runtime dependencies installed in $(VENV)"

$(PY):
	@echo "[setup] creating $(VENV)"
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): requirement.txt | $(PY)
	@echo "[setup] installing the runtime dependencies into $(VENV)"
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -r requirement.txt
	@touch $@

# order-only on the runtime stamp: installed first, but a newer runtime stamp (a venv set up before the split, or a
# `make demo` in between) does not reinstall the test tools
$(DEPS_STAMP): requirement.txt requirement-dev.txt | $(RUNTIME_STAMP)
	@echo "[setup] installing the test, lint and ONNX dependencies into $(VENV)"
	$(PY) -m pip install --quiet -r requirement-dev.txt
	@touch $@

op: setup

clean-op:
	rm -rf assets/ops/dcn/build assets/ops/dcn/_dcn_ext*.so assets/ops/dcn/.built-*

# The set-up's seconds go into the run's figures (demo_results/figures.json); DEMO_ARGS e.g. --seed 1 --record docs/demo_runs
DEMO_ARGS ?=
# (three recipe lines, so that `make -n demo` only prints: a line naming $(MAKE) would run even then)
DEMO_START := .demo-start
demo:
	@date +%s > $(DEMO_START)
	@$(MAKE) --no-print-directory setup-demo
	@$(PY) -m tools.main_demo --setup_seconds $$(( $$(date +%s) - $$(cat $(DEMO_START)) )) $(DEMO_ARGS); \
		status=$$?; rm -f $(DEMO_START); exit $$status

# The checks a maintainer relies on, before the tests: lint (ruff.toml) and types (mypy.ini).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

test: setup lint
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

bench: setup
	$(PY) -m benchmarks

# Benchmark-only dependencies (RapidOCR's detector for benchmarks/bench_deploy.py); --no-deps: see requirement-bench.txt.
.PHONY: bench-deps
bench-deps: | $(PY)
	$(PY) -m pip install --quiet --no-deps -r requirement-bench.txt

# The GPU check (docs/benchmarks.md): `make gpu-wheels` here fetches the wheels the device image lacks into .whl/
# (carry it), then `tools/gpu_check.sh` runs on the device with its own python3.
GPU_PYTHON_VERSION ?= 3.12
GPU_WHEELS ?= shapely==2.2.0 pyclipper==1.4.0

gpu-wheels: | $(PY)
	$(PY) -m pip download --no-deps --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(GPU_WHEELS)

gpu-check:
	tools/gpu_check.sh
