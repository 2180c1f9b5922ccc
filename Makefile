# nni-dpap: `make demo` and `make test` set everything up on a fresh machine.
# The virtual environment is created once and reinstalled only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all install clean lint bench

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,spikingjelly,snntorch]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/digits_snn.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

lint: $(STAMP)
	$(BIN)/ruff check nni_dpap tests examples

# benchmarks (not part of `make test`): about 30 minutes on 2 CPU cores; results in benchmarks/results/
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_quality.py
	$(BIN)/python benchmarks/bench_speedup.py
	$(BIN)/python benchmarks/bench_training_time.py
	$(BIN)/python benchmarks/bench_overhead.py
