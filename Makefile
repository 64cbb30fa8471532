# The two commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel where the machine has it on disk; GPU hosts pass e.g. TORCH_SPEC="torch==2.13.0"
# from the CUDA index, or TORCH_SPEC= to keep the torch already in the venv.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install browser prometheus jq run test lint unit bench bench-bulk bench-gpu gpu-pack faults demo-models clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(if $(TORCH_SPEC),$(BIN)/pip install --quiet "$(TORCH_SPEC)")
	$(BIN)/pip install --quiet -e '.[worker,dev,bench,otel]'
	touch $@

run: install
	$(BIN)/textq up

# The test files spread over this many processes (pytest-xdist), a whole file to each at a
# time so that a module's services start once, in the order tests/conftest.py sorts them (not
# by their number of tests); most tests wait on processes they started.
# TEST_PROCESSES=0 runs them all in this one.
TEST_PROCESSES ?= 2

test: install lint browser prometheus jq
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder

# $(call debian_tool,COMMANDS,PACKAGE,TESTS): the tests drive a few Debian programs for real.
# As root on Debian, install PACKAGE with apt unless all of COMMANDS are on PATH; elsewhere say
# which tests need it.
define debian_tool
	@{ $(foreach c,$(1),command -v $(c) &&) true; } >/dev/null 2>&1 \
		|| [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
		|| apt-get install -y -qq --no-install-recommends $(2) >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(2) >/dev/null; }
	@{ $(foreach c,$(1),command -v $(c) &&) true; } >/dev/null 2>&1 \
		|| echo "make: no $(1): install Debian's $(2) package to run $(3)" >&2
endef

# Playwright drives Debian's Chromium and never downloads a browser of its own.
browser:
	$(call debian_tool,chromium,chromium,tests/e2e/test_ui.py)

# The deploy tests start their own prometheus on a free loopback port: nothing depends on a
# service the package may start.
prometheus:
	$(call debian_tool,prometheus promtool,prometheus,tests/deploy/test_prometheus_*.py)

# The README's examples keep ids in shell variables with jq; tests/test_readme.py runs them.
jq:
	$(call debian_tool,jq,jq,tests/test_readme.py)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The fast tests: pure logic (each beside the tests of its layer), and the deploy files
# (promtool's checks and rule tests).
UNIT_TESTS = tests/shared/test_blank.py tests/shared/test_logs.py tests/shared/test_schemas.py \
	tests/shared/test_states.py tests/shared/jobs/test_insights.py tests/shared/webhooks \
	tests/worker/test_chunking.py tests/worker/test_chunking_properties.py \
	tests/worker/test_plan_batches.py tests/api/test_cursors.py tests/api/test_ratelimit.py \
	tests/api/test_uploads.py tests/api/test_uploads_properties.py tests/textq \
	tests/test_readme_receiver.py
unit: install
	$(BIN)/pytest $(UNIT_TESTS) tests/deploy -m 'not e2e'

# The benchmark suite against the naive seed server (about 20 minutes on 2 cores).
bench: install
	$(BIN)/python -m benchmarks.run

# On a CUDA machine: the full-size models alone, then through `textq up` on the GPU (8 minutes).
bench-gpu: install
	$(BIN)/python -m benchmarks.gpu --device cuda:0

# What that run needs on a GPU machine without network, in .gpu/: wheels, corpora, tokenizer.
gpu-pack: install
	$(BIN)/python -m benchmarks.gpu_pack .gpu

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
