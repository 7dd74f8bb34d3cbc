# The few commands a newcomer needs. Everything runs from the project's own virtualenv (.venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help demo up down dashboard venv test test-fast test-integration test-docker lint format security base-image bench clean

help:
	@echo "make demo        the seed's quick start end to end through MCP (embedded Redis when none is configured)"
	@echo "make up          start Redis (embedded if needed), the deploy worker and the dashboard; print its address"
	@echo "make down        stop exactly what make up started"
	@echo "make dashboard   serve the web dashboard and /metrics (MCS_DASHBOARD_HOST, MCS_DASHBOARD_PORT: 127.0.0.1:8765)"
	@echo "make test        all tiers: unit, integration (private Redis), docker (needs a daemon)"
	@echo "make test-fast   unit tier only: no services"
	@echo "make lint        ruff check + format check"
	@echo "make security    ./security_check.sh (secrets scan)"
	@echo "make base-image  build the worker base image locally (no registry needed)"

# Install the pins of pyproject.toml ([project.dependencies] + the dev extra) into .venv; redone when it changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))' > $(VENV)/pins.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(VENV)/pins.txt
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m mcs.demo $(DEMO_ARGS)

up: $(STAMP)
	$(PY) -m mcs.stack up

down: $(STAMP)
	$(PY) -m mcs.stack down

dashboard: $(STAMP)
	$(PY) -m mcs.dashboard

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m unit

test-integration: $(STAMP)
	$(PY) -m pytest -m integration

test-docker: $(STAMP)
	$(PY) -m pytest -m docker

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

security: $(STAMP)
	./security_check.sh

base-image: $(STAMP)
	$(PY) -m deploy_mcp.docker.base_image

bench: $(STAMP)
	$(PY) bench/bench_mcp.py
	$(PY) bench/bench_scale.py

clean:
	rm -rf .pytest_cache .ruff_cache
