"""Small, valid heareval task folders (0.1 s clips at 16 kHz), optionally filled with noise of varied lengths."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000


def make_task(root: Path, name: str = "task", embedding_type: str = "scene", prediction_type: str = "multiclass",
              split_mode: str = "trainvaltest", vocab=("a", "b", "c"), files_per_split: int = 2,
              evaluation=("top1_acc",)) -> Path:
    """A small, valid task folder of 0.1 s clips."""
    folder = root / name
    splits = ["train", "valid", "test"] if split_mode == "trainvaltest" else [f"fold{i:02d}" for i in range(4)]
    metadata = {"task_name": name, "embedding_type": embedding_type, "prediction_type": prediction_type,
                "split_mode": split_mode, "splits": splits, "sample_duration": 0.1, "evaluation": list(evaluation)}
    folder.mkdir(parents=True)
    (folder / "task_metadata.json").write_text(json.dumps(metadata))
    with open(folder / "labelvocabulary.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["idx", "label"], *enumerate(vocab)])
    for s, split in enumerate(splits):
        labels = {}
        for i in range(files_per_split):
            name_i = f"{split}_{i}.wav"
            label = vocab[(s + i) % len(vocab)]
            if embedding_type == "event":
                labels[name_i] = [{"label": label, "start": 10.0, "end": 50.0}]
            elif prediction_type == "multilabel":
                labels[name_i] = [label, vocab[0]] if i % 2 else []
            else:
                labels[name_i] = [label]
            audio_path = folder / str(RATE) / split / name_i
            audio_path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(audio_path), np.zeros(RATE // 10, dtype=np.float32), RATE)
        (folder / f"{split}.json").write_text(json.dumps(labels))
    return folder


def add_noise_audio(folder, seconds=(0.1, 0.2, 0.3)):
    """Give every clip of a task folder random audio of one of several lengths (varied batching)."""
    rng = np.random.default_rng(0)
    for k, path in enumerate(sorted(folder.glob("16000/*/*.wav"))):
        sf.write(str(path), rng.uniform(-0.5, 0.5, int(seconds[k % len(seconds)] * RATE)).astype(np.float32), RATE)
