# The README's two commands: `make demo` and `make test`. Both set up first; set-up is idempotent.
PYTHON_BOOTSTRAP ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On this machine these two wheels lie on local disk; override for another platform or CUDA version.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
CUDA_HOME ?= /usr/local/cuda
export CUDA_HOME

DEPS_STAMP := $(VENV)/.deps-installed

.PHONY: setup setup-demo demo test test-all bench op clean-op

# Tests compile the CUDA kernels too wherever nvcc exists; the demo needs them only with a GPU.
setup: $(DEPS_STAMP)
	@echo "[setup] dependencies installed in $(VENV)"
	@PYTHON=$(PY) tools/build_op.sh full

setup-demo: $(DEPS_STAMP)
	@echo "[setup] dependencies installed in $(VENV)"
	@PYTHON=$(PY) tools/build_op.sh auto

$(PY):
	@echo "[setup] creating $(VENV)"
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEPS_STAMP): requirement.txt requirement-dev.txt | $(PY)
	@echo "[setup] installing dependencies into $(VENV)"
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -r requirement.txt -r requirement-dev.txt
	@touch $@

op: setup

clean-op:
	rm -rf assets/ops/dcn/build assets/ops/dcn/_dcn_ext*.so assets/ops/dcn/.built-*

demo: setup-demo
	$(PY) -m tools.main_demo

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

bench: setup
	$(PY) -m benchmarks
