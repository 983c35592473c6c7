"""Shared helpers of the training tests: a small set of real training clips and tiny configs."""
from __future__ import annotations

import json
from pathlib import Path

import soundfile

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"  # CI: ../shared relative to the repository
FIXTURE_AUDIO = REPO / "tests" / "fixtures" / "audio"

TINY_ENCODER = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_transformer_layers": 1,
                "dropout_probability": 0.0}
TINY_TRAIN = {"micro_batch": 4, "learning_rate": 3e-3, "warmup_steps": 1, "log_every": 1, "checkpoint_every": 2,
              "num_threads": 1, "grad_clip": 1.0}


def training_clips(count: int = 12, min_seconds: float = 0.36) -> list[Path]:
    """``count`` FSDD clips of takes 10-49 (never the mini-suite's takes 0-9) at least ``min_seconds`` long,
    or the bundled fixture clips when FSDD is absent."""
    if FSDD.is_dir():
        candidates = sorted(p for p in FSDD.glob("*.wav") if int(p.stem.rsplit("_", 1)[1]) >= 10)
        step = max(1, len(candidates) // (4 * count))
        chosen = [p for p in candidates[::step] if soundfile.info(str(p)).duration >= min_seconds]
        return chosen[:count]
    return sorted(FIXTURE_AUDIO.glob("*.wav"))


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
