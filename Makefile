# Two commands a fresh machine needs: `make demo` and `make test`. Each creates
# the virtual environment (.venv) from pyproject.toml and constraints.txt when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo train test test-all lint progression parity bench docs clean

# Package __init__ files too: an editable install made before a package existed does not see it.
$(STAMP): pyproject.toml constraints.txt $(wildcard */__init__.py)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[torch,test,plot,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m jaxnets.tutorials.lenet

# LeNet on scikit-learn's handwritten digits; RUN=runs/digits by default (make train RUN=other).
RUN ?= runs/digits
train: $(STAMP)
	$(BIN)/jaxnets train --out $(RUN) --overwrite

progression: $(STAMP)
	$(BIN)/python -m jaxnets.tutorials.progression

parity: $(STAMP)
	$(BIN)/python -m parity

bench: $(STAMP)
	$(BIN)/python -m parity.bench --e2e --json bench.json --plot bench.png

# The documentation site into site/ (mkdocs.yml): --strict fails on broken links and missing references;
# the tutorial notebooks (docs/tutorials/*.py, jupytext) run at build time.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

# Tests run on two workers (pytest-xdist), a test file per worker so that a module's shared fixtures are built once.
WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile
# Most of the tests' time is compilation, so make test compiles the quick way: without LLVM's
# optimisations (about 25% faster to compile, slower to run), and with XLA:CPU's older loop emitters
# for fusions instead of its MLIR fusion emitters (the suite's compile time 494 -> 203 s, the whole
# suite 7.5 -> 4.7 minutes, measured 2026-12-05). Neither allows fast-math; the emitters may order a
# reduction's additions differently, which the tests must bear as they bear another CPU's. test-all
# runs every test at XLA's defaults, and its AVX2 pass keeps the default emitters.
UNOPTIMISED := --xla_backend_optimization_level=0
QUICK_XLA := $(UNOPTIMISED) --xla_cpu_use_fusion_emitters=false
# Two workers on two cores: each keeps to one thread (XLA's and torch's intra-op pools would otherwise
# start a thread per core in each worker and fight over the cores: a third of the suite took 117 s against 109 s).
ONE_THREAD := --xla_cpu_multi_thread_eigen=false

# The linter and every test but the long end-to-end runs (marked slow).
test: $(STAMP)
	$(BIN)/ruff check jaxnets tests $(wildcard parity)
	OMP_NUM_THREADS=1 XLA_FLAGS="$(QUICK_XLA) $(ONE_THREAD) $$XLA_FLAGS" $(PYTEST) -m "not slow"

# torchvision's own ResNet-18 sources, which the slow test in tests/test_ports.py compares the reference
# ResNet-18 with: the wheel (7.7 MB; the version parity/reference_models.py copies) into the cache that test
# reads, unless it is there. Only its Python files are used (see reference_models.torchvision_resnet).
FETCH_TORCHVISION := $(BIN)/python -c "from parity.reference_models import fetch_torchvision; fetch_torchvision()"

# What CI runs: every test at XLA's default settings with every hypothesis example (tests/budget.py), then every test but the slow ones again under
# older instruction sets (AVX2, SSE4.2), whose kernels add in another order: an exactness test that
# holds only for this CPU's summation order fails here, not on a user's machine.
test-all: $(STAMP)
	$(BIN)/ruff check jaxnets tests $(wildcard parity)
	$(FETCH_TORCHVISION)
	JAXNETS_TEST_EXAMPLES=full $(PYTEST)
	OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_max_isa=AVX2 $(UNOPTIMISED) $(ONE_THREAD) $$XLA_FLAGS" $(PYTEST) -m "not slow"
	OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_max_isa=SSE4_2 $(QUICK_XLA) $(ONE_THREAD) $$XLA_FLAGS" $(PYTEST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check jaxnets tests $(wildcard parity)
	$(BIN)/ruff format --check jaxnets tests $(wildcard parity)

clean:
	rm -rf $(VENV) build site *.egg-info
