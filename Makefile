# Two entry points, both idempotent: `make results` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env data results study test test-fast lint bench bench-tfmot-env bench-tfmot bench-pquant-env bench-fit-pruning mutation

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

env: $(STAMP)

data: env
	$(BIN)/python -m prunelib.data fetch all

# The challenge's part (the notebook's default preset): minutes on 2 cores, published into results/
# beside whatever other parts are there.
results: data
	$(BIN)/python -m prunelib run --part challenge --results results
	$(BIN)/papermill --execution-timeout 7200 pruning_challenge.ipynb pruning_challenge.ipynb
	$(BIN)/ruff format -q pruning_challenge.ipynb
	@echo "results/ holds the challenge; the whole study (recipes, recovery, sensitivity, ...): make study"

# The whole study (every table kind; about 72 min on a 2-core bf16 CPU, 3-4 h on a 2-core AVX2 CPU),
# one part after another (prunelib.study.registry.PARTS, the challenge first), each published into
# results/ as it finishes; a killed run started again recomputes only what no cell had finished.
PARTS = $(shell $(BIN)/python -c "from prunelib.study.registry import PARTS; print(*PARTS)")
study: data
	for part in $(PARTS); do $(BIN)/python -m prunelib run --part $$part --results results || exit 1; done
	$(BIN)/papermill --execution-timeout 14400 -p preset full pruning_challenge.ipynb pruning_challenge.ipynb
	$(BIN)/ruff format -q pruning_challenge.ipynb  # papermill's injected parameters cell

# The suite runs on JOBS pytest-xdist workers (one per core by default; JOBS=0: in this process),
# each test file's tests on one worker, then the tests that start Ray on their own (tests/conftest.py).
JOBS ?= auto
PYTEST := $(BIN)/python -m pytest -q

# Import contracts, lint and format, then whether results/ matches the checked-out code (reads
# hashes, runs nothing), then the whole suite; `make test-fast` skips the slow end-to-end tests.
test: data
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m prunelib report --check
	$(PYTEST) -n $(JOBS) --dist loadgroup -m "not ray"
	$(PYTEST) -m ray

# Format and fix what ruff can, in place.
lint: env
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test-fast: env
	$(PYTEST) -n $(JOBS) --dist loadgroup -m "not slow and not ray"
	$(PYTEST) -m "ray and not slow"

bench: data
	$(BIN)/python benchmarks/pipeline.py

# The tfmot peer for benchmarks/compare_tfmot.py, kept out of prunelib's environment.
bench-tfmot-env: env
	$(BIN)/python -m pip install -q --no-deps --target .venv-tfmot -r benchmarks/requirements.txt

bench-tfmot: data bench-tfmot-env
	$(BIN)/python benchmarks/compare_tfmot.py

# The pquant-ml peer for benchmarks/fit_pruning.py, kept out of prunelib's environment like tfmot's.
bench-pquant-env: env
	$(BIN)/python -m pip install -q --no-deps --target .venv-pquant -r benchmarks/requirements-pquant.txt

# Pruning while training, prunelib vs tfmot vs pquant-ml (issue 35): the whole grid (about 4.5 h on 2
# cores), resumable (the (tool, model, dataset, seed) already in the CSV are kept), then its docs table.
# `$(BIN)/python benchmarks/fit_pruning.py --smoke` checks all three tools end to end in minutes.
bench-fit-pruning: data bench-tfmot-env bench-pquant-env
	$(BIN)/python benchmarks/fit_pruning.py
	$(BIN)/python benchmarks/fit_pruning.py --docs

# Mutation testing of the numpy core with mutmut (configured in pyproject.toml [tool.mutmut]; long,
# not part of `make test`). MUTATE narrows it to some modules, e.g. MUTATE=prunelib/core/pruning.py.
MUTATE ?=
mutation: env
	rm -rf mutants
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH= \
		nice -n 15 $(BIN)/mutmut run --max-children 2 $(foreach m,$(MUTATE),'$(subst /,.,$(m:.py=)).*')
	$(BIN)/mutmut results --all true > mutation-results.txt || true
	$(BIN)/python -c "import collections; s=collections.Counter(l.rsplit(': ', 1)[1].strip() for l in open('mutation-results.txt') if ': ' in l and 'not checked' not in l); n=sum(s.values()); print(dict(s), f'mutation score {s[\"killed\"]}/{n} = {100 * s[\"killed\"] / max(n, 1):.1f} %')"
