# The README's two commands: `make demo` and `make test`. Both set up first; set-up is idempotent.
PYTHON_BOOTSTRAP ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On this machine these two wheels lie on local disk; override for another platform or CUDA version.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
CUDA_HOME ?= /usr/local/cuda
export CUDA_HOME

DEPS_STAMP := $(VENV)/.deps-installed
OP_STAMP := assets/ops/dcn/.built
OP_SOURCES := $(wildcard assets/ops/dcn/csrc/*.cpp assets/ops/dcn/csrc/*.h assets/ops/dcn/csrc/*.cu assets/ops/dcn/csrc/*/*) assets/ops/dcn/setup.py

.PHONY: setup demo test test-all bench op clean-op

setup: $(DEPS_STAMP) $(OP_STAMP)

$(PY):
	@echo "[setup] creating $(VENV)"
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEPS_STAMP): requirement.txt requirement-dev.txt | $(PY)
	@echo "[setup] installing dependencies into $(VENV)"
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -r requirement.txt -r requirement-dev.txt
	@touch $@

$(OP_STAMP): $(DEPS_STAMP) $(OP_SOURCES)
	@echo "[setup] building the deformable convolution extension in place (assets/ops/dcn)"
	cd assets/ops/dcn && ../../../$(PY) setup.py build_ext --inplace > build.log 2>&1 \
		|| { tail -n 40 build.log; echo "[setup] the extension did not build: see assets/ops/dcn/build.log"; exit 1; }
	@touch $@

op: $(OP_STAMP)

clean-op:
	rm -rf assets/ops/dcn/build assets/ops/dcn/*.so $(OP_STAMP)

demo: setup
	$(PY) -m tools.main_demo

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

bench: setup
	$(PY) -m benchmarks
