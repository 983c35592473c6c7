"""Shared helpers of the training tests: a small set of real training clips and tiny configs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.builders.paths import FIXTURES, REPO

TRAIN_AUDIO = FIXTURES / "train_audio"  # 16 FSDD clips of takes 10-49

TINY_ENCODER = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_transformer_layers": 1,
                "dropout_probability": 0.0}
TINY_TRAIN = {"micro_batch": 4, "learning_rate": 3e-3, "warmup_steps": 1, "log_every": 1, "checkpoint_every": 2,
              "num_threads": 1, "grad_clip": 1.0}


def training_clips(count: int = 12) -> list[Path]:
    """The first ``count`` (at most 16) of the shipped real training clips: FSDD takes 10-49, each >= 0.36 s."""
    clips = sorted(TRAIN_AUDIO.glob("*.wav"))
    assert len(clips) >= count, f"only {len(clips)} clips in {TRAIN_AUDIO}"
    return clips[:count]


def write_manifest(folder: Path, files: list[Path]) -> Path:
    manifest = folder / "manifest.txt"
    manifest.write_text("\n".join(str(p) for p in files) + "\n")
    return manifest


def write_config(folder: Path, name: str, sections: dict) -> Path:
    path = folder / name
    path.write_text(json.dumps(sections))
    return path


def tokenizer_sections(manifest: Path, crop_seconds: float = 0.35, **train) -> dict:
    return {"data": {"sources": [str(manifest)], "crop_seconds": crop_seconds, "cache_audio": True},
            "train": {**TINY_TRAIN, **train},
            "tokenizer": {**TINY_ENCODER, "num_codebooks": 16},
            "decoder": {**TINY_ENCODER, "code_vector_size": 8, "knowledge_hidden_size": 8},
            "loss": {"distillation_weight": 0.0, "temperature_decay": 0.9}}


def mam_sections(manifest: Path, crop_seconds: float = 0.35, **train) -> dict:
    return {"data": {"sources": [str(manifest)], "crop_seconds": crop_seconds, "cache_audio": True},
            "train": {**TINY_TRAIN, **train},
            "acoustic_model": TINY_ENCODER,
            "mask": {"rate": 0.4, "mode": "exact"}}


def kill_after_logged_steps(command: list[str], log: Path, steps: int, timeout: float = 120.0) -> None:
    """Run ``command`` from the repository root and SIGKILL it as soon as its ``log.csv`` holds ``steps`` rows
    (so the checkpoint of step ``steps - 1`` is written), the way a crash would stop it."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 1 + steps:
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
