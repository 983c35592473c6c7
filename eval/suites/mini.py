"""The bundled mini-suite: four small HEAR-format tasks built offline from the shipped FSDD subset
(``eval/suites/fsdd``, takes 0-9 only) and seeded synthesis (``hear_embed.train.synthesize``).

| task | type | split mode | clips | labels | metrics |
| --- | --- | --- | --- | --- | --- |
| ``fsdd_digits`` | scene | trainvaltest (takes 0-5 / 6-7 / 8-9) | 600 x 1 s | 10 digits | top1_acc |
| ``fsdd_speakers`` | scene | new_split_kfold (fold k = take k, takes 0-4) | 300 x 1 s | 6 speakers | top1_acc |
| ``fsdd_events`` | event | trainvaltest | 24/8/8 x 2 s | digits 0-2, beep, sweep | event_onset_200ms_fms, segment_1s_er |
| ``synth_pitch`` | scene | trainvaltest | 24 pitches x 12 x 1 s | MIDI 48-71 | pitch_acc, chroma_acc |

Everything is 16 kHz mono 16-bit WAV. The build is deterministic: ``manifest.json`` holds the SHA-256 of
every file and one hash over all of them; the folder name carries the suite version and a hash of this
builder's code, so an edited builder never reuses an old build.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from hear_embed.train import synthesize
from hear_embed.train.synthesize import coloured_noise, harmonic_tone, sweep

SUITE_VERSION = "1"
SAMPLE_RATE = 16000
FSDD_DIR = Path(__file__).parent / "fsdd" / "recordings"
FSDD_MAX_TAKE = 9  # takes 10-49 are reserved for pretraining: never read them here
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
EVENT_DIGITS = {"0": "zero", "1": "one", "2": "two"}
PITCHES = tuple(range(48, 72))  # MIDI C3..B4: label index % 12 is the pitch class, as chroma_acc assumes


@dataclass(frozen=True)
class SuiteSize:
    """How many clips each task gets; ``full`` is the shipped suite, ``tiny`` a fast variant for tests."""

    digit_classes: int = 10  # fsdd_digits: digits 0..n-1
    digit_speakers: int = 6  # fsdd_digits: the first n speakers (every take 0-9)
    speaker_takes: int = 5  # fsdd_speakers: takes 0..n-1, fold k = take k (needs >= 3)
    speaker_digits: int = 10  # fsdd_speakers: digits 0..n-1
    event_clips: tuple[int, int, int] = (24, 8, 8)  # fsdd_events train/valid/test (2 s clips)
    pitch_clips: tuple[int, int, int] = (8, 2, 2)  # synth_pitch clips per pitch train/valid/test


SIZES = {"full": SuiteSize(), "tiny": SuiteSize(digit_classes=2, digit_speakers=2, speaker_takes=3, speaker_digits=2,
                                                 event_clips=(6, 3, 3), pitch_clips=(1, 1, 1))}


def default_cache_dir() -> Path:
    return Path(os.environ.get("HEAR_EMBED_EVAL_CACHE", Path.home() / ".cache" / "hear_embed_eval"))


def fsdd_clip(digit: int, speaker: str, take: int) -> np.ndarray:
    """One shipped FSDD recording resampled to 16 kHz, float32."""
    if not 0 <= take <= FSDD_MAX_TAKE:
        raise ValueError(f"FSDD take {take} is reserved for pretraining; the suite uses takes 0-{FSDD_MAX_TAKE}")
    audio, rate = sf.read(str(FSDD_DIR / f"{digit}_{speaker}_{take}.wav"), dtype="float32")
    return soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Centre ``audio`` in ``samples`` samples: zero-pad both sides, or keep the middle."""
    if len(audio) >= samples:
        start = (len(audio) - samples) // 2
        return audio[start:start + samples]
    before = (samples - len(audio)) // 2
    return np.pad(audio, (before, samples - len(audio) - before))


def write_wav(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")


def write_task(folder: Path, metadata: dict, vocab: list[str], splits: dict[str, dict[str, tuple[np.ndarray, list]]]):
    """Write one task folder: metadata, vocabulary, ``<split>.json`` and ``16000/<split>/*.wav``."""
    folder.mkdir(parents=True)
    (folder / "task_metadata.json").write_text(json.dumps({**metadata, "splits": list(splits)}, indent=2))
    with open(folder / "labelvocabulary.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["idx", "label"])
        writer.writerows(enumerate(vocab))
    for split, clips in splits.items():
        (folder / f"{split}.json").write_text(json.dumps({name: labels for name, (_, labels) in clips.items()}, indent=1))
        for name, (audio, _) in clips.items():
            write_wav(folder / str(SAMPLE_RATE) / split / name, audio)


def scene_metadata(name: str, split_mode: str, evaluation: list[str]) -> dict:
    return {"task_name": name, "version": SUITE_VERSION, "embedding_type": "scene", "prediction_type": "multiclass",
            "split_mode": split_mode, "sample_duration": 1.0, "evaluation": evaluation}


def build_fsdd_digits(folder: Path, size: SuiteSize) -> None:
    """Spoken digit classification; take-disjoint splits (train takes 0-5, valid 6-7, test 8-9)."""
    split_of = {take: "train" if take <= 5 else "valid" if take <= 7 else "test" for take in range(FSDD_MAX_TAKE + 1)}
    splits: dict[str, dict] = {"train": {}, "valid": {}, "test": {}}
    for digit in range(size.digit_classes):
        for speaker in SPEAKERS[:size.digit_speakers]:
            for take, split in split_of.items():
                splits[split][f"{digit}_{speaker}_{take}.wav"] = (fit_length(fsdd_clip(digit, speaker, take), SAMPLE_RATE), [str(digit)])
    write_task(folder, scene_metadata("fsdd_digits", "trainvaltest", ["top1_acc"]), [str(d) for d in range(size.digit_classes)], splits)


def build_fsdd_speakers(folder: Path, size: SuiteSize) -> None:
    """Speaker identification, 5-fold (fold k holds take k of every digit and speaker)."""
    splits = {f"fold{take:02d}": {} for take in range(size.speaker_takes)}
    for take in range(size.speaker_takes):
        for digit in range(size.speaker_digits):
            for speaker in SPEAKERS:
                audio = fit_length(fsdd_clip(digit, speaker, take), SAMPLE_RATE)
                splits[f"fold{take:02d}"][f"{digit}_{speaker}_{take}.wav"] = (audio, [speaker])
    write_task(folder, scene_metadata("fsdd_speakers", "new_split_kfold", ["top1_acc"]), list(SPEAKERS), splits)


def event_scene(rng: np.random.Generator, utterances: list[tuple[str, np.ndarray]], seconds: float = 2.0):
    """One clip: pink noise plus 1-2 non-overlapping events at random onsets; events in ms."""
    samples = int(seconds * SAMPLE_RATE)
    audio = coloured_noise(rng, samples) * rng.uniform(0.02, 0.08)
    events, cursor = [], int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
    for _ in range(int(rng.integers(1, 3))):
        kind = ["digit", "digit", "beep", "sweep"][int(rng.integers(0, 4))]
        if kind == "digit":
            label, sound = utterances[int(rng.integers(0, len(utterances)))]
            sound = sound / max(np.abs(sound).max(), 1e-9)
        elif kind == "beep":
            label, sound = "beep", harmonic_tone(rng, rng.uniform(300, 1500), rng.uniform(0.2, 0.6))
        else:
            label, sound = "sweep", sweep(rng, rng.uniform(0.2, 0.6))
        if cursor + len(sound) > samples:
            break
        audio[cursor:cursor + len(sound)] += sound * rng.uniform(0.3, 0.9)
        events.append({"label": label, "start": 1000.0 * cursor / SAMPLE_RATE,
                       "end": 1000.0 * (cursor + len(sound)) / SAMPLE_RATE})
        cursor += len(sound) + int(rng.uniform(0.1, 0.5) * SAMPLE_RATE)
    return audio, events


def build_fsdd_events(folder: Path, size: SuiteSize) -> None:
    """DCASE 2016 task 2 style detection: digits 0-2, beeps and sweeps over noise (rng seed 2016)."""
    rng = np.random.default_rng(2016)
    utterances = [(word, fsdd_clip(int(digit), speaker, take)) for digit, word in EVENT_DIGITS.items()
                  for speaker in SPEAKERS for take in range(FSDD_MAX_TAKE + 1)]
    splits = {}
    for split, count in zip(("train", "valid", "test"), size.event_clips):
        splits[split] = {f"{split}_{i:03d}.wav": event_scene(rng, utterances) for i in range(count)}
    metadata = {"task_name": "fsdd_events", "version": SUITE_VERSION, "embedding_type": "event",
                "prediction_type": "multilabel", "split_mode": "trainvaltest", "sample_duration": 2.0,
                "evaluation": ["event_onset_200ms_fms", "segment_1s_er"]}
    write_task(folder, metadata, [*EVENT_DIGITS.values(), "beep", "sweep"], splits)


def build_synth_pitch(folder: Path, size: SuiteSize) -> None:
    """Pitch of random-timbre harmonic tones (+-20 cents detune, noise), rng seed 440."""
    rng = np.random.default_rng(440)
    splits: dict[str, dict] = {"train": {}, "valid": {}, "test": {}}
    for pitch in PITCHES:
        for split, count in zip(splits, size.pitch_clips):
            for i in range(count):
                frequency = 440.0 * 2 ** ((pitch - 69 + rng.uniform(-0.2, 0.2)) / 12)
                audio = harmonic_tone(rng, frequency, 1.0) * rng.uniform(0.3, 0.9)
                audio += coloured_noise(rng, len(audio)) * rng.uniform(0.0, 0.05)
                splits[split][f"{pitch}_{split}_{i:02d}.wav"] = (audio, [str(pitch)])
    metadata = {**scene_metadata("synth_pitch", "trainvaltest", ["pitch_acc", "chroma_acc"])}
    write_task(folder, metadata, [str(p) for p in PITCHES], splits)


BUILDERS = {"fsdd_digits": build_fsdd_digits, "fsdd_speakers": build_fsdd_speakers,
            "fsdd_events": build_fsdd_events, "synth_pitch": build_synth_pitch}


def builder_hash() -> str:
    """Short hash of this builder's code, the synthesiser's and the shipped FSDD file list: a changed builder never
    reuses an old build."""
    digest = hashlib.sha256(Path(__file__).read_bytes() + Path(synthesize.__file__).read_bytes())
    digest.update("\n".join(sorted(p.name for p in FSDD_DIR.glob("*.wav"))).encode())
    return digest.hexdigest()[:10]


def manifest(folder: Path) -> dict:
    """SHA-256 of every file under ``folder`` (except manifest.json) and one hash over all of them."""
    files = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    overall = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"suite_version": SUITE_VERSION, "hash": overall, "files": files}


def build_mini_suite(cache_dir: str | Path | None = None, size: str = "full", tasks: list[str] | None = None) -> Path:
    """Build the suite (or reuse a finished build) under ``cache_dir/mini-suite-v<version>-<size>-<builder hash>``; return
    the folder holding one task folder per task. The build goes to a temp folder renamed when complete."""
    if size not in SIZES:
        raise ValueError(f"unknown suite size {size!r}; choose from {list(SIZES)}")
    unknown = sorted(set(tasks or ()) - set(BUILDERS))
    if unknown:
        raise ValueError(f"unknown mini-suite task(s) {unknown}; tasks: {list(BUILDERS)}")
    names = [name for name in BUILDERS if not tasks or name in tasks]
    suffix = "" if names == list(BUILDERS) else "-" + "-".join(names)
    target = Path(cache_dir or default_cache_dir()) / f"mini-suite-v{SUITE_VERSION}-{size}{suffix}-{builder_hash()}"
    if (target / "manifest.json").is_file():
        return target
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    for name in names:
        BUILDERS[name](temp / name, SIZES[size])
    (temp / "manifest.json").write_text(json.dumps(manifest(temp), indent=1))
    if target.exists():
        shutil.rmtree(target)
    os.replace(temp, target)
    return target
