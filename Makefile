# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean results

setup: $(STAMP)

# torch is pinned and installed first: the machines here carry the 2.13.0 CPU wheel locally,
# and an unpinned torch would pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/radiogenomics demo --config configs/joint_phantom_2d.yaml --out demo_out

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

lint: $(STAMP)
	$(BIN)/ruff check radiogenomics tests benchmarks scripts
	$(BIN)/ruff format --check radiogenomics tests benchmarks scripts

# docs/results.md and README's numbers from docs/results/*/metrics.json (standard library only)
results:
	$(PYTHON) scripts/results.py

# The benchmark suite (docs/benchmarks.md) into $(BENCH_JSON): smoke size without a GPU, full
# with one; BENCH_SIZE=smoke|full chooses. scripts/throughput.py turns the JSON into
# docs/results/throughput/ for `make results`.
BENCH_JSON ?= .benchmarks/throughput.json
BENCH_SIZE ?=
bench: $(STAMP)
	mkdir -p $(dir $(BENCH_JSON))
	$(BIN)/python -m pytest benchmarks --benchmark-only $(if $(BENCH_SIZE),--bench-size $(BENCH_SIZE)) \
		--benchmark-json=$(BENCH_JSON)

clean:
	rm -rf $(VENV) demo_out .pytest_cache .benchmarks
