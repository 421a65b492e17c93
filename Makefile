# Two commands do everything from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.installed

# Local state: the embedded PostgreSQL and the Dagster instance live under .data/.
export GPU_COST_DATA_DIR ?= $(CURDIR)/.data
export DAGSTER_HOME ?= $(CURDIR)/.data/dagster
# Example budgets and attributions for the simulated cluster (some cross their thresholds).
export GPU_COST_SPECS_DIR ?= $(CURDIR)/examples/simulated

.PHONY: setup run dev test bench bench-long lint format stop clean prometheus

setup: $(STAMP)

# The virtual environment, exactly as the lock file says (uv installs it in seconds).
# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on the CI machines)
# every process would otherwise compile Dagster from source, ~5 s per `dagster`/CLI start.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade >/dev/null
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	touch $@

# Materialize the last 60 minutes (one range run) on the simulated cluster, print the report.
# The embedded PostgreSQL is stopped afterwards unless it was already running (e.g. `make dev`).
run: setup $(DAGSTER_HOME)/dagster.yaml
	@was_running=$$($(BIN)/gpu-autoscaler db running && echo yes); \
	$(BIN)/gpu-autoscaler materialize --last 60m && $(BIN)/gpu-autoscaler cost --last 1h \
		&& $(BIN)/gpu-autoscaler budgets && $(BIN)/gpu-autoscaler attributions; \
	status=$$?; \
	[ -n "$$was_running" ] || $(BIN)/gpu-autoscaler db stop >/dev/null; \
	exit $$status

# The Dagster UI (webserver + daemon) on the same code and store: http://127.0.0.1:3000
dev: setup $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/gpu-autoscaler db start
	trap '$(BIN)/gpu-autoscaler db stop' EXIT; trap 'exit 130' INT TERM; \
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Debian's Prometheus (server and promtool): the tests start a real one on 127.0.0.1 over
# history they import. Installed once, when promtool is missing (CI runs as root).
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
prometheus:
	@command -v promtool >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

test: setup prometheus
	$(BIN)/pytest

bench: setup prometheus
	$(BIN)/python bench/run.py

# A month of 1,000 pods through dagster-postgres instance storage (tens of minutes; see
# bench/README.md). BACKFILL_ARGS="--days 1 --workers 1" for a quick look.
bench-long: setup
	$(BIN)/python -m bench.backfill_month $(BACKFILL_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

stop: setup
	$(BIN)/gpu-autoscaler db stop

clean: stop
	rm -rf .data
