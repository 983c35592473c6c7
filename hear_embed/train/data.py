"""Training audio: file lists from folders or manifests, deterministic random crops, padded batches.

Which clip and which crop a training step sees is a pure function of (seed, step, position in the global
batch), so a run resumed at step ``s`` sees exactly the batches an uninterrupted run would, and a
``torchrun`` run with N processes sees the same global batches as a single process.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hear_embed.audio_io import AUDIO_EXTENSIONS, AudioReadError, read_audio
from hear_embed.train.seeds import mixed_seed


@dataclass(frozen=True)
class DataConfig:
    """Where the audio is and how it is cut."""

    sources: tuple[str, ...] = ()  # folders (searched recursively) or manifest files (one path per line)
    exclude_patterns: tuple[str, ...] = ()  # glob patterns matched against file names, e.g. "*_[0-9].wav"
    sample_rate: int = 16000  # audio is resampled to this rate with soxr
    crop_seconds: float = 6.0  # longest crop; shorter clips are kept whole and padded in the batch
    num_workers: int = 0  # DataLoader worker processes
    cache_audio: bool = False  # keep decoded audio in memory (small corpora, num_workers=0)


def _manifest_files(manifest: Path) -> list[Path]:
    """One path per line (relative paths are relative to the manifest); blank lines and '#' comments skipped."""
    files = []
    for line in manifest.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line)
            files.append(path if path.is_absolute() else manifest.parent / path)
    return files


def list_audio_files(config: DataConfig) -> list[Path]:
    """Sorted, de-duplicated audio files of all ``config.sources`` minus ``exclude_patterns``."""
    files: set[Path] = set()
    for source in map(Path, config.sources):
        if source.is_dir():
            files.update(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        elif source.is_file() and source.suffix.lower() in AUDIO_EXTENSIONS:
            files.add(source)
        elif source.is_file():
            files.update(_manifest_files(source))
        else:
            raise FileNotFoundError(f"training data source not found: {source}")
    kept = sorted(p for p in files if not any(p.match(pattern) for pattern in config.exclude_patterns))
    if not kept:
        raise ValueError(f"no audio files found in {list(config.sources)} (after excluding {list(config.exclude_patterns)})")
    return kept


class CroppedAudio(Dataset):
    """Item ``(file_index, sample_seed)`` -> ((samples,) float32 crop of at most ``crop_seconds``, sample_seed),
    or a string naming the file and the error when it cannot be read."""

    def __init__(self, files: list[Path], config: DataConfig):
        self.files = files
        self.config = config
        self.max_samples = int(round(config.crop_seconds * config.sample_rate))
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, index: int) -> np.ndarray:
        if index in self._cache:
            return self._cache[index]
        audio = read_audio(self.files[index], self.config.sample_rate)
        if self.config.cache_audio:
            self._cache[index] = audio
        return audio

    def __getitem__(self, item: tuple[int, int]) -> tuple[np.ndarray, int] | str:
        index, sample_seed = item
        try:
            audio = self._read(index)
        except (AudioReadError, OSError, ValueError, RuntimeError) as error:
            return f"{self.files[index]} ({error})"
        if len(audio) > self.max_samples:
            start = np.random.default_rng(sample_seed).integers(0, len(audio) - self.max_samples + 1)
            audio = audio[start: start + self.max_samples]
        return audio, sample_seed


class StepSampler(Sampler):
    """Yields this process's micro-batches of ``(file_index, crop_seed)`` items, step by step from ``start_step``.

    Global sample position p = step * global_batch + (micro * world_size + rank) * micro_batch + k walks
    through one seeded permutation of the files per epoch, so the global batch of a step does not depend
    on how it is split over processes and accumulation micro-batches of equal total.
    """

    def __init__(self, num_files: int, micro_batch: int, accumulation: int, rank: int, world_size: int,
                 seed: int, start_step: int = 0):
        self.num_files, self.micro_batch, self.accumulation = num_files, micro_batch, accumulation
        self.rank, self.world_size, self.seed, self.start_step = rank, world_size, seed, start_step
        self.global_batch = micro_batch * accumulation * world_size
        self._permutation: tuple[int, np.ndarray] | None = None

    def _file_at(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_files)
        if self._permutation is None or self._permutation[0] != epoch:
            self._permutation = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_files))
        return int(self._permutation[1][offset])

    def items(self, step: int, micro: int) -> list[tuple[int, int]]:
        first = step * self.global_batch + (micro * self.world_size + self.rank) * self.micro_batch
        return [(self._file_at(p), mixed_seed(self.seed, p)) for p in range(first, first + self.micro_batch)]

    def __iter__(self):
        step = self.start_step
        while True:
            for micro in range(self.accumulation):
                yield self.items(step, micro)
            step += 1


def pad_clips(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips of any lengths -> zero-padded (batch, longest) float32 waveform and (batch,) lengths."""
    waveform = torch.zeros(len(clips), max((len(clip) for clip in clips), default=0))
    for row, clip in enumerate(clips):
        waveform[row, : len(clip)] = torch.from_numpy(np.ascontiguousarray(clip))
    return waveform, torch.tensor([len(clip) for clip in clips], dtype=torch.long)


def collate(items: list[tuple[np.ndarray, int] | str]) -> dict:
    """Pad crops to the longest: {"waveform": (batch, samples), "lengths": (batch,), "seeds": (batch,) per-sample
    seeds for any randomness that must not depend on batch layout, "skipped": [unreadable files]}."""
    waveform, lengths = pad_clips([item[0] for item in items if not isinstance(item, str)])
    seeds = [item[1] for item in items if not isinstance(item, str)]
    skipped = [item for item in items if isinstance(item, str)]
    return {"waveform": waveform, "lengths": lengths, "seeds": torch.tensor(seeds, dtype=torch.long),
            "skipped": skipped}


def make_loader(config: DataConfig, micro_batch: int, accumulation: int, rank: int, world_size: int, seed: int,
                start_step: int = 0) -> DataLoader:
    """An endless loader of this process's micro-batches (``accumulation`` per step), from ``start_step``."""
    files = list_audio_files(config)
    sampler = StepSampler(len(files), micro_batch, accumulation, rank, world_size, seed, start_step)
    return DataLoader(CroppedAudio(files, config), batch_sampler=sampler, collate_fn=collate,
                      num_workers=config.num_workers, persistent_workers=config.num_workers > 0)


class SkipCounter:
    """Warns once per unreadable file and counts every skip."""

    def __init__(self):
        self.count = 0
        self._warned: set[str] = set()

    def update(self, skipped: list[str]) -> None:
        self.count += len(skipped)
        for description in skipped:
            if description not in self._warned:
                self._warned.add(description)
                warnings.warn(f"skipping unreadable training file: {description}", stacklevel=2)
