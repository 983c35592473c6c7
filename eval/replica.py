"""Replicas of the HEAR 2021 tasks: the real folder layout, metadata, label structure, split layout, clip durations
and clip counts x ``scale``, filled with cheap seeded synthetic audio (16 kHz mono 16-bit WAV).

    python -m eval replica --list
    python -m eval replica --task maestro-v3.0.0-5h --scale 0.05 --out replicas/

Each clip is a sine tone whose frequency depends on its label, over quiet coloured noise
(``hear_embed.train.synthesize.coloured_noise``), so probes can learn something. Event clips hold 1-4 events
(tone bursts) at seeded times. Split ``s`` gets ``max(1, round(replica_clips[s] * scale))`` clips, clip ``i`` the
label ``i mod n_labels`` (multilabel scene clips also the next one), so small replicas still share labels
between splits. ``task_metadata.json`` records ``replica_scale`` so ``eval.suites.hear2021.check_task`` checks
the scaled counts. The folder is written under a temporary name and renamed when complete: an interrupted
write leaves no half folder, and a finished replica is reused as it is.
"""
from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from eval.suites.hear2021 import REPLICA_LABELS_WHEN_UNKNOWN, SAMPLE_RATE, TASKS, SuiteTask, lookup
from hear_embed.atomic_files import write_json_atomically
from hear_embed.train.synthesize import coloured_noise

REPLICA_FORMAT = 1
EVENT_SECONDS = (0.2, 3.0)  # event lengths drawn from this range


def replica_labels(entry: SuiteTask) -> tuple[str, ...]:
    """The task's label names where the registry lists them, else label000, label001, ..."""
    if entry.labels:
        return entry.labels
    count = entry.n_labels or REPLICA_LABELS_WHEN_UNKNOWN[entry.task_name]
    return tuple(f"label{i:03d}" for i in range(count))


def clip_seconds(entry: SuiteTask, index: int) -> float:
    """Length of clip ``index``: the task's sample_duration, or the registry's cycle of lengths."""
    if entry.sample_duration is not None:
        return float(entry.sample_duration)
    return entry.replica_durations[index % len(entry.replica_durations)]


def _tone_hz(label_index: int) -> float:
    return 110.0 * 2 ** ((label_index % 60) / 12)  # 60 semitones above A2, wrapping


def _scene_clip(rng: np.random.Generator, n: int, label_indices: list[int]) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    audio = 0.05 * coloured_noise(rng, n, 1.0)
    for label in label_indices:
        audio += 0.3 * np.sin(2 * np.pi * _tone_hz(label) * t + rng.uniform(0, 2 * np.pi))
    return audio


def _event_clip(rng: np.random.Generator, n: int, first_label: int, n_labels: int) -> tuple[np.ndarray, list[dict]]:
    """Audio with 1-4 tone bursts and their events (ms, as heareval's event labels)."""
    seconds = n / SAMPLE_RATE
    audio = 0.05 * coloured_noise(rng, n, 1.0)
    events = []
    for k in range(int(rng.integers(1, 5))):
        length = float(rng.uniform(*EVENT_SECONDS))
        start = float(rng.uniform(0, max(seconds - length, 0.0)))
        end = min(start + length, seconds)
        label = (first_label + k) % n_labels
        lo, hi = int(start * SAMPLE_RATE), int(end * SAMPLE_RATE)
        audio[lo:hi] += 0.3 * np.sin(2 * np.pi * _tone_hz(label) * np.arange(hi - lo) / SAMPLE_RATE)
        events.append({"label": label, "start": round(start * 1000, 1), "end": round(end * 1000, 1)})
    return audio, events


def _write_split(folder: Path, entry: SuiteTask, split: str, count: int, labels: tuple[str, ...]) -> dict:
    audio_dir = folder / str(SAMPLE_RATE) / split
    audio_dir.mkdir(parents=True, exist_ok=True)
    split_seed = entry.splits.index(split)
    split_labels = {}
    for index in range(count):
        rng = np.random.default_rng([REPLICA_FORMAT, TASKS.index(entry), split_seed, index])
        n = int(round(clip_seconds(entry, index) * SAMPLE_RATE))
        name = f"{split}_{index:06d}.wav"
        if entry.embedding_type == "event":
            audio, events = _event_clip(rng, n, index % len(labels), len(labels))
            split_labels[name] = [{**event, "label": labels[event["label"]]} for event in events]
        else:
            chosen = [index % len(labels)]
            if entry.prediction_type == "multilabel" and len(labels) > 1:
                chosen.append((index + 1) % len(labels))
            audio = _scene_clip(rng, n, chosen)
            split_labels[name] = [labels[label] for label in chosen]
        sf.write(audio_dir / name, np.clip(audio, -1, 1).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    return split_labels


def write_replica(name: str, scale: float, out_dir: str | Path) -> Path:
    """Write (or reuse) the replica of task ``name`` at ``scale`` under ``out_dir``; returns its folder."""
    entry = lookup(name)
    counts = entry.replica_counts(scale)
    folder = Path(out_dir) / entry.folder
    metadata = {**entry.metadata(), "replica_scale": scale, "replica_format": REPLICA_FORMAT}
    if (folder / "task_metadata.json").is_file():
        existing = json.loads((folder / "task_metadata.json").read_text())
        if existing == metadata:
            return folder
        raise ValueError(f"{folder} already holds a different task folder (scale {existing.get('replica_scale')}, "
                         f"format {existing.get('replica_format')}); choose another --out or remove it")
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    labels = replica_labels(entry)
    with open(partial / "labelvocabulary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["idx", "label"])
        writer.writerows(enumerate(labels))
    for split, count in counts.items():
        write_json_atomically(partial / f"{split}.json", _write_split(partial, entry, split, count, labels))
    write_json_atomically(partial / "task_metadata.json", metadata)
    partial.rename(folder)
    return folder


def add_arguments(parser) -> None:
    parser.add_argument("--list", action="store_true", help="print the 19 task folders and exit")
    parser.add_argument("--task", nargs="+", metavar="NAME", help="folder name, leaderboard column or task_name; "
                        "'all' for every task")
    parser.add_argument("--scale", type=float, default=0.01, help="clip counts x this (default 0.01)")
    parser.add_argument("--out", type=Path, help="where the task folder goes")


def run(args) -> int:
    if args.list:
        for entry in TASKS:
            counts = "/".join(str(entry.replica_clips[s]) for s in entry.splits)
            print(f"{entry.folder}\t{entry.column}\t{entry.split_mode}\t{counts} clips\t"
                  f"{entry.sample_duration or 'variable'} s")
        return 0
    if not args.task or args.out is None:
        print("error: give --task NAME... and --out DIR (or --list)", file=sys.stderr)
        return 2
    names = [entry.folder for entry in TASKS] if args.task == ["all"] else args.task
    for name in names:
        folder = write_replica(name, args.scale, args.out)
        print(folder)
    return 0
