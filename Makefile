# nni-dpap: `make demo` and `make test` set everything up on a fresh machine.
# The virtual environment is created once and reinstalled only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-1thread test-all install clean lint bench bench-core ci

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,spikingjelly,snntorch]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/digits_snn.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the same suite on one thread: float kernels differ with the thread count (and between CPUs)
test-1thread: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

lint: $(STAMP)
	$(BIN)/ruff check nni_dpap tests examples benchmarks
	$(BIN)/mypy

# what CI runs (.ci/run): lint, the suite, the suite on one thread
ci: lint test test-1thread

# benchmarks (not part of `make test`): about 11 hours on 2 CPU cores (the frontier alone about 8.5 h: 10 seeds on every net; the controls about 65 minutes); results in benchmarks/results/
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_quality.py
	$(BIN)/python benchmarks/bench_speedup.py
	$(BIN)/python benchmarks/bench_training_time.py
	$(BIN)/python benchmarks/bench_overhead.py
	$(BIN)/python benchmarks/bench_neurons.py
	$(BIN)/python benchmarks/bench_docs_client.py
	$(BIN)/python benchmarks/bench_long_runs.py
	$(BIN)/python benchmarks/bench_frontier.py
	$(BIN)/python benchmarks/bench_controls.py
	$(BIN)/python benchmarks/bench_controls.py --nets mnist5k_snn --controls magnitude@fc1.neurons magnitude@fc1.synapses magnitude@conv2

# the quality issue's own frontier (the library's ranking at every point, L1 + fine-tuning, Taylor and Movement on
# single weights, seeds 0-4): about 75 minutes on one core; results in benchmarks/results/core/
bench-core: $(STAMP)
	$(BIN)/python benchmarks/bench_frontier.py --core --results-dir benchmarks/results/core
