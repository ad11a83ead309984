# make run: the gateway with in-process emulators. make test: the whole suite.
# Each target installs only what it needs, pinned by constraints.txt (see make constraints).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
HOST   ?= 127.0.0.1
PORT   ?= 8080

CONSTRAINTS := constraints.txt
PIP_INSTALL := $(BIN)/python -m pip install -q -c $(CONSTRAINTS)
INPUTS      := setup.cfg pyproject.toml $(CONSTRAINTS)
# One stamp per set of extras: make run never waits for playwright, mypy or hypothesis.
STAMP_RUN   := $(VENV)/.installed-run
STAMP_TEST  := $(VENV)/.installed-test
STAMP_LINT  := $(VENV)/.installed-lint
TEST_EXTRAS := test,browser,client
LINT_EXTRAS := lint
ALL_EXTRAS  := speed,client,test,browser,lint

.PHONY: install run test lint bench soak chromium wrk constraints clean cluster

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP_RUN): $(INPUTS) | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(STAMP_TEST): $(INPUTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[$(TEST_EXTRAS)]'
	touch $@

$(STAMP_LINT): $(INPUTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[$(LINT_EXTRAS)]'
	touch $@

# Everything a developer uses: the test and lint tools.
install: $(STAMP_TEST) $(STAMP_LINT)

run: $(STAMP_RUN)
	$(BIN)/sms-gateway --config config.yaml --emulate --host $(HOST) --port $(PORT)

# Debian's chromium for the dashboard test (Playwright's own browser download cannot work here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing wrk"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null || \
	  echo "wrk unavailable: the built-in load generator will be used"; }

test: $(STAMP_TEST) chromium
	$(BIN)/python -m pytest

# mypy reads the modules it checks and what they import, tests included: both sets of tools.
lint: $(STAMP_TEST) $(STAMP_LINT)
	$(BIN)/ruff check gateway providers web tests bench
	$(BIN)/mypy

bench: $(STAMP_RUN) wrk
	$(BIN)/python -m bench

soak: $(STAMP_RUN)
	$(BIN)/python -m bench.soak

# Two replicas on the local PostgreSQL (database sms_gateway_cluster, created if missing) behind
# a small aiohttp round-robin balancer on $(PORT) (bench/cluster.py); Ctrl-C stops them.
cluster: $(STAMP_RUN)
	$(BIN)/python -m bench.cluster --host $(HOST) --port $(PORT)

# Re-resolve every dependency (all extras) in a throwaway venv and pin what it got. Run it after
# changing a requirement in setup.cfg, or to take upgrades; commit constraints.txt with it.
constraints:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp" && \
	"$$tmp/bin/python" -m pip install -q --upgrade pip && \
	"$$tmp/bin/python" -m pip install -q '.[$(ALL_EXTRAS)]' && \
	{ echo "# Pinned versions of everything 'pip install .[$(ALL_EXTRAS)]' installs, for CI, make"; \
	  echo "# and the Dockerfile (pip install -c $(CONSTRAINTS)). Regenerate with: make constraints"; \
	  echo "# (Python $$("$$tmp/bin/python" -c 'import platform; print(platform.python_version())'))"; \
	  "$$tmp/bin/python" -m pip freeze --exclude sms-gateway; } > $(CONSTRAINTS).new && \
	mv $(CONSTRAINTS).new $(CONSTRAINTS) && echo "wrote $(CONSTRAINTS)"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache logs
