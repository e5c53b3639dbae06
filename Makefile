# Two entry points, each installing what it needs into .venv first:
#   make smoke   the main job end to end on the embedded default (no downloads)
#   make test    the test suite (CI runs this through .ci/run)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

.PHONY: install smoke test
install: $(VENV)/.installed

smoke: $(VENV)/.installed
	$(PY) recipes/train_imagenet.py --smoke

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)
