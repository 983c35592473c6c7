"""The real HEAR 2021 validator (hearvalidator 2021.0.6) accepts the plugin.

``hear-validator hear_embed --model <checkpoint>`` imports the module, calls ``load_model(path)``, moves the
model to the device, and checks ``sample_rate``, the two embedding sizes, float32 outputs of the right
shapes for 16 x 2 s and 8 x 3.74 s of white noise, and evenly spaced timestamps; it prints "Looks good!".

Compatibility notes (checked against its source): it imports TensorFlow at start-up (tensorflow-cpu 2.21
works with numpy 2); it never calls ``torch.load`` itself, and our loader reads checkpoints with
``weights_only=True``, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is not needed and is removed here to prove it.
No shim is needed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VALIDATOR = Path(sys.executable).with_name("hear-validator")


@pytest.mark.heareval
@pytest.mark.skipif(not VALIDATOR.exists() and shutil.which("hear-validator") is None,
                    reason="hear-validator is not installed (make venv installs it)")
def test_hear_validator_accepts_the_plugin(parity_dir, tmp_path):
    command = str(VALIDATOR) if VALIDATOR.exists() else shutil.which("hear-validator")
    env = {key: value for key, value in os.environ.items() if key != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"  # quieter TensorFlow start-up; no effect on the checks
    done = subprocess.run(
        [command, "hear_embed", "--model", str(parity_dir / "acoustic_model_small.pth"), "--device", "cpu"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Looks good!" in done.stdout, output[-4000:]
    assert "Received embedding of shape: torch.Size([16, 100, 64])" in done.stdout
    assert "Interval between timestamps is 20.0ms" in done.stdout
