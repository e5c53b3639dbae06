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
	# The Grad-CAM anchor of tests/test_explain.py, without its torchvision
	# requirement (see setup.cfg's dev extra).
	$(PY) -m pip install -q --no-deps grad-cam==1.5.7
	touch $@

.PHONY: install smoke test
install: $(VENV)/.installed

# Train (2 CPU replicas), evaluate with the paper's protocols, then export the
# result to a versioned SavedModel + ONNX: the whole product, about 2 minutes.
SMOKE_DIR ?= /tmp/keras_vgg_smoke
smoke: $(VENV)/.installed
	$(PY) recipes/train_imagenet.py --smoke --model_dir=$(SMOKE_DIR)
	$(PY) export/export_vgg.py --model=$(SMOKE_DIR)/model.keras --output=$(SMOKE_DIR)/export --name=vgg11_bn_digits

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)
