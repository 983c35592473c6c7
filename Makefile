# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole test suite).
# Both build .venv first: torch from the CPU wheel, hear_embed with its extras, and the real
# HEAR validator / heareval stack (they pin numpy 1.19, so they go in with --no-deps).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,eval,onnx,baselines,safetensors]"
	$(PY) -m pip install -q tensorflow-cpu==2.21.0 "pytorch-lightning==1.9.5" "setuptools<82" \
		intervaltree more-itertools python-slugify torchinfo click
	$(PY) -m pip install -q --no-deps heareval==2021.1.3 hearvalidator==2021.0.2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m eval demo

test: $(STAMP)
	$(PY) -m pytest -q -rs

clean:
	rm -rf $(VENV)
