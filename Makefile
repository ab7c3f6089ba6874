# Fresh-machine entry points: `make demo` and `make test` do all set-up themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test test-slow bench perf-bench clean

$(BIN)/medsweep: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/medsweep

demo: install
	$(BIN)/medsweep demo

# Starts a throwaway PostgreSQL 15 on 127.0.0.1 for the run and stops it afterwards.
# Also installs Debian's chromium when missing (as root) for the dashboard browser test and PNGs.
# `make test` runs every test not marked slow (under 10 minutes on two idle cores);
# `make test-slow` runs the long training, fault-injection and end-to-end tests. CI runs both.
test: install
	scripts/ensure-chromium.sh
	scripts/with-postgres.sh $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install
	scripts/ensure-chromium.sh
	scripts/with-postgres.sh $(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# The performance benchmarks of docs/performance.md's Measurements table (need ../shared/data and
# ../shared/weights); each prints a table and ends with one line of JSON.
perf-bench: install
	$(BIN)/python -m bench.cache
	$(BIN)/python -m bench.pruning
	$(BIN)/python -m bench.study
	$(BIN)/python -m bench.pipeline
	scripts/with-postgres.sh $(BIN)/python -m bench.storage

clean:
	rm -rf $(VENV) medsweep-demo *.egg-info
