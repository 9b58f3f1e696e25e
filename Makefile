# The three commands a newcomer needs: make serve, make test, make install.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SLIMSERVE := $(VENV)/bin/slimserve
PROFILE ?= quick
export SLIMSERVE_STORE ?= $(CURDIR)/model_store
export SLIMSERVE_DATA_DIR ?= $(abspath $(CURDIR)/../shared/data)
export HF_HUB_OFFLINE ?= 1
DEFAULT_MODELS := sentiment intent ner

.PHONY: install install-serve sysdeps serve models test lint typecheck clean

install: $(VENV)/.installed  ## a local .venv with build + serve + dev

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[build,dev]'
	touch $@

install-serve:  ## serving only: no torch (onnxruntime, tokenizers, fastapi)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e .

# prometheus + promtool: the Prometheus integration test and `promtool check`; docker-compose (Debian's
# Python implementation): validates docker-compose.yml without a Docker engine; buildah + debootstrap:
# build and run the images without a Docker engine or registry (tests/deploy/buildah.py).
SYSDEPS := prometheus:prometheus promtool:prometheus docker-compose:docker-compose buildah:buildah \
	debootstrap:debootstrap

sysdeps:  ## Debian packages the deployment tests use (prometheus, docker-compose, buildah, debootstrap)
	@missing=""; for pair in $(SYSDEPS); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "== installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

models: install  ## build each default model the store lacks
	@for m in $(DEFAULT_MODELS); do \
	  if [ -z "$$(ls -A $(SLIMSERVE_STORE)/$$m 2>/dev/null | grep -E '^[0-9]+$$')" ]; then \
	    echo "== building $$m ($(PROFILE) profile)"; \
	    $(SLIMSERVE) build build/recipes/$$m.yaml --profile $(PROFILE) || exit 1; \
	  fi; \
	done

serve: models  ## install, build the default models when missing, serve on :8000
	$(SLIMSERVE) serve

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

test: install sysdeps lint typecheck  ## what .ci/run runs
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
