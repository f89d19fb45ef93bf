# songserve — `make run` serves the embedded default; `make test` runs lint, types and the suite.
# Both set up .venv on a fresh machine (torch==2.13.0 first, so nothing later pulls a CUDA build).

PYTHON ?= python3
VENV   ?= .venv
CONFIG ?= config/local.yaml
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
TINY_ACESTEP ?= var/tiny-acestep

.PHONY: run test install install-dev install-models tiny-acestep lint typecheck unit integration \
	e2e bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[tags]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev,models,mac,tags]'
	touch $@

$(VENV)/.installed-models: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[models]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-models: $(VENV)/.installed-models

# Configs that serve the tiny ACE-Step checkpoint get it built first (no download; idempotent).
run: install $(if $(findstring acestep,$(CONFIG)),tiny-acestep)
	$(BIN)/songserve up --config $(CONFIG)

tiny-acestep: install-models
	$(BIN)/python scripts/make_tiny_acestep.py $(TINY_ACESTEP)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

unit: install-dev
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: install-dev
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

e2e: install-dev
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

bench: install
	$(BIN)/python scripts/bench_e2e.py --config $(CONFIG)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
