# Two commands a fresh machine needs: `make demo` and `make test`. Each creates
# the virtual environment (.venv) from pyproject.toml and constraints.txt when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo train test lint progression parity bench clean

# Package __init__ files too: an editable install made before a package existed does not see it.
$(STAMP): pyproject.toml constraints.txt $(wildcard */__init__.py)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[torch,test,plot]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m jaxnets.tutorial

# LeNet on scikit-learn's handwritten digits; RUN=runs/digits by default (make train RUN=other).
RUN ?= runs/digits
train: $(STAMP)
	$(BIN)/jaxnets train --out $(RUN) --overwrite

progression: $(STAMP)
	$(BIN)/python -m jaxnets.progression

parity: $(STAMP)
	$(BIN)/python -m parity

bench: $(STAMP)
	$(BIN)/python -m parity.bench --json bench.json --plot bench.png

test: $(STAMP)
	$(BIN)/ruff check jaxnets tests $(wildcard parity)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check jaxnets tests $(wildcard parity)
	$(BIN)/ruff format --check jaxnets tests $(wildcard parity)

clean:
	rm -rf $(VENV) build *.egg-info
