# skiff — every target does its own setup on a fresh machine.
#   make demo   the local end-to-end run (the main job)
#   make test   the whole test suite
#   make images the container images (skiff, skiff-tfdv, skiff-gpu); make images-push REGISTRY=... pushes them
SHELL := /bin/bash
, := ,
PYTHON ?= python3
VENV := .venv
TFDV_VENV := .venv-tfdv
TOOLS := .tools
UV := $(VENV)/bin/uv

PROJECT_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
TFDV_HASH := $(shell cat requirements/tfdv.txt | sha256sum | cut -c1-16)
TOOLS_HASH := $(shell cat .ci/fetch_tools.py 2>/dev/null | sha256sum | cut -c1-16)

.PHONY: setup venv tfdv tools demo demo-image demo-recs test test-fast lint bench docs clean lock images images-push images-registry cluster-schemas

setup: venv tfdv tools

venv: $(VENV)/.stamp-$(PROJECT_HASH)
$(VENV)/.stamp-$(PROJECT_HASH): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check uv
	@echo "skiff: installing the project environment ($(VENV))"
	@$(UV) pip install -q --python $(VENV)/bin/python -e ".[dev]"
	@rm -f $(VENV)/.stamp-* && touch $@

# The validation step's environment (the hashed lock the skiff-tfdv image installs too), built once and
# reused while the lock is unchanged.
tfdv: $(TFDV_VENV)/.stamp-$(TFDV_HASH)
$(TFDV_VENV)/.stamp-$(TFDV_HASH): requirements/tfdv.txt | venv
	@test -x $(TFDV_VENV)/bin/python || $(PYTHON) -m venv $(TFDV_VENV)
	@echo "skiff: installing the TFDV environment ($(TFDV_VENV)); this takes about a minute once"
	@$(UV) pip install -q --python $(TFDV_VENV)/bin/python --require-hashes -r requirements/tfdv.txt
	@rm -f $(TFDV_VENV)/.stamp-* && touch $@

# helm, kubectl, terraform and checkov for the static checks of the cluster side.
tools: $(TOOLS)/.stamp-$(TOOLS_HASH)
$(TOOLS)/.stamp-$(TOOLS_HASH): .ci/fetch_tools.py | venv
	@$(VENV)/bin/python .ci/fetch_tools.py --dest $(TOOLS)
	@rm -f $(TOOLS)/.stamp-* && touch $@

demo: setup
	@$(VENV)/bin/skiff demo

# The image pipeline on a generated shapes data set (with broken files), on the CPU, in about a minute.
demo-image: venv
	@$(VENV)/bin/python -m pipelines.image_demo

# Recommendations: a generated shop log → the recommender pipeline → the model server → a live click.
demo-recs: venv
	@OMP_NUM_THREADS=1 $(VENV)/bin/python -m pipelines.recommender_demo

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

# The hashed locks the images (and .venv-tfdv) install, from pyproject.toml's dependencies and extras and
# requirements/*.in. Run after changing a dependency; commit the result.
LOCK := $(UV) pip compile -q --generate-hashes --universal --python-version 3.11 --custom-compile-command "make lock"
lock: venv
	@$(LOCK) pyproject.toml --extra aws --extra azure -o requirements/skiff.txt
	@$(LOCK) pyproject.toml --extra aws --extra azure --extra gpu -o requirements/skiff-gpu.txt
	@$(LOCK) requirements/tfdv.in -o requirements/tfdv.txt
	@$(LOCK) requirements/build.in -o requirements/build.txt

# The images of components/_image.py (the one place their names and tags live), one Dockerfile target each.
#   ENGINE=docker|podman  BASE_IMAGE=<a site's python 3.11 bookworm base>  EXTRA_CA=<PEM file, a build secret>
#   IMAGE_BUILD_FLAGS=<more flags, e.g. --network=host or --platform linux/amd64>
ENGINE ?= docker
BASE_IMAGE ?= python:3.11.11-slim-bookworm
EXTRA_CA ?=
IMAGE_BUILD_FLAGS ?=
REGISTRY ?=
IMAGES_ONLY ?=
images: venv
	@set -e; export DOCKER_BUILDKIT=1; \
	version=$$($(VENV)/bin/python -c 'import skiff; print(skiff.__version__)'); \
	revision=$$(git rev-parse HEAD 2>/dev/null || echo unknown); \
	$(VENV)/bin/python -m components._image | while read -r name ref; do \
	  if [ -n "$(IMAGES_ONLY)" ] && ! echo " $(IMAGES_ONLY) " | grep -q " $$name "; then continue; fi; \
	  echo "skiff: building $$ref (target $$name)"; \
	  $(ENGINE) build --target "$$name" -t "$$ref" --build-arg BASE_IMAGE="$(BASE_IMAGE)" \
	    --build-arg VERSION="$$version" --build-arg REVISION="$$revision" \
	    $(if $(EXTRA_CA),--secret id=extra_ca$(,)src="$(EXTRA_CA)") $(IMAGE_BUILD_FLAGS) . ; \
	done

# Tag the built images for REGISTRY (e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/skiff or
# myregistry.azurecr.io/skiff) and push them; compile the pipelines with SKIFF_IMAGE_REGISTRY=REGISTRY so
# their IR names the same images.
images-push: images-registry images
	@set -e; $(VENV)/bin/python -m components._image | while read -r name ref; do \
	  if [ -n "$(IMAGES_ONLY)" ] && ! echo " $(IMAGES_ONLY) " | grep -q " $$name "; then continue; fi; \
	  target="$(REGISTRY)/$${ref##*/}"; \
	  echo "skiff: pushing $$target"; \
	  $(ENGINE) tag "$$ref" "$$target" && $(ENGINE) push "$$target"; \
	done
images-registry:
	@test -n "$(REGISTRY)" || { echo "usage: make images-push REGISTRY=<registry prefix>" >&2; exit 2; }

# The pinned upstream CRDs, chart defaults and install files the cluster contract tests hold skiff's
# objects against, downloaded at the tags the platform installs (a machine with internet; into
# $$SKIFF_UPSTREAM_SCHEMAS, else ../shared/upstream).
cluster-schemas: venv
	@$(VENV)/bin/python .ci/fetch_upstream.py

clean:
	rm -rf .skiff .pytest_cache site
