#!/usr/bin/env bash
# Every documented install path, each in a FRESH virtualenv from the BUILT wheel, run from outside the repository:
#   plugin   torch, then the wheel: load "tiny", embed a file with hear-embed, hear-validator accepts the plugin
#   harness  torch, then the wheel's [eval] extra: a scene and an event task of the mini-suite, --grid faster
#   onnx     torch, then the wheel's [onnx] extra: hear-embed export --onnx, and the export runs in onnxruntime
# Usage: .ci/install_paths.sh [plugin|harness|onnx ...]   (default: all three)
# PYTHON (default python3) makes the virtualenvs; TORCH_INDEX is where torch's CPU wheel comes from.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
AUDIO="$REPO/tests/fixtures/audio/0_george_2.wav"
TORCH_INDEX_OPTION=(--extra-index-url "$TORCH_INDEX")
if ! "$PYTHON" -c "import sys, urllib.request as r; r.urlopen(sys.argv[1], timeout=5)" "$TORCH_INDEX" 2>/dev/null; then
    echo "== install paths: $TORCH_INDEX unreachable: torch from pip's configured indexes" >&2
    TORCH_INDEX_OPTION=()
fi

step() { echo "== install paths: $*" >&2; }

fresh_venv() {  # fresh_venv NAME: a new virtualenv with torch from the CPU index; prints its bin folder
    "$PYTHON" -m venv "$WORK/$1"
    "$WORK/$1/bin/python" -m pip install -q --upgrade pip >&2
    "$WORK/$1/bin/python" -m pip install -q torch==2.13.0 "${TORCH_INDEX_OPTION[@]}" >&2
    echo "$WORK/$1/bin"
}

step "building the wheel"
"$PYTHON" -m venv "$WORK/build"
"$WORK/build/bin/python" -m pip wheel -q --no-deps -w "$WORK/dist" "$REPO"
WHEEL="$(ls "$WORK"/dist/hear_embed-*.whl)"
mkdir "$WORK/outside"
cd "$WORK/outside"  # nothing below may depend on the repository being the working directory

plugin() {
    step "plugin alone"
    local bin
    bin="$(fresh_venv plugin)"
    "$bin/python" -m pip install -q "$WHEEL"
    "$bin/python" -c "
import torch, hear_embed
model = hear_embed.load_model('tiny')
embedding, timestamps = hear_embed.get_timestamp_embeddings(torch.zeros(1, 16000), model)
assert embedding.shape[:2] == timestamps.shape and embedding.shape[0] == 1, embedding.shape
print('plugin: tiny loads;', tuple(embedding.shape))"
    "$bin/hear-embed" embed "$AUDIO" --weights tiny --out embedded
    "$bin/python" -c "
import numpy as np
arrays = np.load('embedded/0_george_2.wav.npz')
assert arrays['embedding'].ndim == 2 and np.isfinite(arrays['embedding']).all()
print('plugin: hear-embed embed wrote', arrays['embedding'].shape)"
    "$bin/python" -m pip install -q tensorflow-cpu==2.21.0
    "$bin/python" -m pip install -q --no-deps hearvalidator==2021.0.2
    "$bin/hear-validator" hear_embed --model "$("$bin/hear-embed" path tiny)" --device cpu
}

harness() {
    step "harness ([eval])"
    local bin
    bin="$(fresh_venv harness)"
    "$bin/python" -m pip install -q "$WHEEL[eval]"
    local suite
    suite="$("$bin/python" -c "
from eval.suites.mini import build_mini_suite
print(build_mini_suite('suite', size='tiny', tasks=['fsdd_digits', 'fsdd_events']))")"
    "$bin/hear-eval" run --model hear_embed --weights tiny --tasks-dir "$suite" --tasks fsdd_digits fsdd_events \
        --out run --grid faster --no-progress
    "$bin/python" -c "
import pandas as pd
scores = pd.read_csv('run/scores.csv').set_index('task')
assert sorted(scores.index) == ['fsdd_digits', 'fsdd_events'], scores.index
assert scores['score'].between(0, 1).all(), scores['score']
print('harness:', scores['score'].to_dict())"
}

onnx() {
    step "export ([onnx])"
    local bin
    bin="$(fresh_venv onnx)"
    "$bin/python" -m pip install -q "$WHEEL[onnx]"
    "$bin/hear-embed" export --weights tiny --out exported --onnx
    "$bin/python" -c "
import numpy as np, torch
from hear_embed.export import load_onnx
from hear_embed.frontend import Frontend
from hear_embed.weights import load_acoustic_model
audio = np.random.default_rng(0).standard_normal((1, 16000 * 8)).astype(np.float32) * 0.1  # two windows
exported = load_onnx('exported')(audio)
model, _ = load_acoustic_model('tiny')
with torch.no_grad():
    expected = model(Frontend()(torch.from_numpy(audio)))[0].numpy()
error = float(np.abs(exported - expected).max())
assert exported.shape == expected.shape and error < 1e-4, (exported.shape, expected.shape, error)
print('onnx: export matches torch, max abs error', error)"
}

for path in "${@:-plugin harness onnx}"; do
    for name in $path; do
        "$name"
    done
done
step "all passed"
