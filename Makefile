# skiff — every target does its own setup on a fresh machine.
#   make demo   the local end-to-end run (the main job)
#   make test   the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
TFDV_VENV := .venv-tfdv
TOOLS := .tools
UV := $(VENV)/bin/uv

PROJECT_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
TFDV_HASH := $(shell cat components/validate/requirements.txt | sha256sum | cut -c1-16)
TOOLS_HASH := $(shell cat .ci/fetch_tools.py 2>/dev/null | sha256sum | cut -c1-16)

.PHONY: setup venv tfdv tools demo test test-fast lint bench docs clean

setup: venv tfdv tools

venv: $(VENV)/.stamp-$(PROJECT_HASH)
$(VENV)/.stamp-$(PROJECT_HASH): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check uv
	@echo "skiff: installing the project environment ($(VENV))"
	@$(UV) pip install -q --python $(VENV)/bin/python -e ".[dev]"
	@rm -f $(VENV)/.stamp-* && touch $@

# The validation step's environment, built once and reused while its requirements are unchanged.
tfdv: $(TFDV_VENV)/.stamp-$(TFDV_HASH)
$(TFDV_VENV)/.stamp-$(TFDV_HASH): components/validate/requirements.txt | venv
	@test -x $(TFDV_VENV)/bin/python || $(PYTHON) -m venv $(TFDV_VENV)
	@echo "skiff: installing the TFDV environment ($(TFDV_VENV)); this takes about a minute once"
	@$(UV) pip install -q --python $(TFDV_VENV)/bin/python -r components/validate/requirements.txt
	@rm -f $(TFDV_VENV)/.stamp-* && touch $@

# helm, kubectl, terraform and checkov for the static checks of the cluster side.
tools: $(TOOLS)/.stamp-$(TOOLS_HASH)
$(TOOLS)/.stamp-$(TOOLS_HASH): .ci/fetch_tools.py | venv
	@$(VENV)/bin/python .ci/fetch_tools.py --dest $(TOOLS)
	@rm -f $(TOOLS)/.stamp-* && touch $@

demo: setup
	@$(VENV)/bin/skiff demo

test: setup lint
	@PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	@$(VENV)/bin/python -m pytest -m "not integration and not tfdv and not slow" $(PYTEST_ARGS)

# ruff, the layering contracts of .importlinter (core < steps < pipelines < faces; serving on core), and
# mypy --strict on the core package and serving/runtime ([tool.mypy] in pyproject.toml).
lint: venv
	@$(VENV)/bin/ruff check skiff components pipelines serving tests bench
	@$(VENV)/bin/lint-imports --no-logo --no-cache
	@$(VENV)/bin/mypy

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

# The documentation site (offline, strict: a broken link or reference fails) into site/.
docs: venv
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

clean:
	rm -rf .skiff .pytest_cache site
