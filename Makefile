# The two commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel where the machine has it on disk; GPU hosts pass e.g. TORCH_SPEC="torch==2.13.0"
# from the CUDA index, or TORCH_SPEC= to keep the torch already in the venv.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install browser prometheus run test lint unit bench bench-bulk faults demo-models clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(if $(TORCH_SPEC),$(BIN)/pip install --quiet "$(TORCH_SPEC)")
	$(BIN)/pip install --quiet -e '.[worker,dev,bench,otel]'
	touch $@

run: install
	$(BIN)/textq up

test: install lint browser prometheus
	$(BIN)/pytest

# The page's tests drive Debian's Chromium through Playwright, which never downloads a
# browser of its own; as root on Debian this installs the package, elsewhere it says how.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
		|| apt-get install -y -qq --no-install-recommends chromium >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	@command -v chromium >/dev/null 2>&1 \
		|| echo "make: no chromium: install Debian's chromium package to run tests/e2e/test_ui.py" >&2

# The deploy tests run Debian's prometheus and promtool (tests/deploy/test_prometheus_*.py);
# as root on Debian this installs the package, elsewhere it says how. The tests start their
# own server on a free loopback port: nothing depends on a service the package may start.
prometheus:
	@{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 \
		|| [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
		|| apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 \
		|| echo "make: no prometheus: install Debian's prometheus package (or put prometheus" \
			"and promtool on PATH) to run tests/deploy/test_prometheus_*.py" >&2

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The fast tests: pure logic, and the deploy files (promtool's checks and rule tests).
unit: install
	$(BIN)/pytest tests/unit tests/deploy -m 'not e2e'

# The benchmark suite against the naive seed server (about 20 minutes on 2 cores).
bench: install
	$(BIN)/python -m benchmarks.run

# A 1 M-row CSV upload: ingest, every row through a worker, the export (about 6 minutes).
bench-bulk: install
	$(BIN)/python -m benchmarks.bulk --worker

# Every fault of tests/faults (kill -9, Redis wiped, Postgres restarted, ...) with 5,000 jobs
# each, on private Postgres and Redis servers; prints the table (about an hour on 2 cores).
# CI runs the same faults with 200 jobs each (tests/faults/test_faults.py).
FAULT_JOBS ?= 5000
faults: install
	$(BIN)/python -m tests.faults --jobs $(FAULT_JOBS)

# Two tiny random-weight models for machines that cannot reach the model hub.
demo-models: install
	$(BIN)/python -m tests.model_factory .textq-dev/models

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
