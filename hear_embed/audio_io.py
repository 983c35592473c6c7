"""Reading audio files for the command line: any format soundfile reads, mixed to mono, resampled with soxr."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr

AUDIO_EXTENSIONS = frozenset({
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64",
    ".rf64", ".nist", ".sph", ".voc", ".htk", ".mat", ".paf", ".pvf", ".sd2", ".sds", ".svx", ".xi", ".avr",
    ".ircam", ".sf", ".wve", ".mpc",
})


class AudioReadError(Exception):
    """A file could not be read as audio; the message names the file."""


def find_audio_files(paths: list[str | Path]) -> list[tuple[Path, Path]]:
    """Files given directly, plus audio files (by extension) found recursively in given folders.

    Returns sorted (file, name) pairs: ``name`` is the path relative to the folder it was found in
    (just the file name for files given directly), used to name the outputs.
    """
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in AUDIO_EXTENSIONS:
                    found.setdefault(file, file.relative_to(path))
        elif path.is_file():
            found.setdefault(path, Path(path.name))
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    by_name: dict[Path, Path] = {}
    for file, name in found.items():
        if by_name.setdefault(name, file) != file:
            raise ValueError(f"two inputs would write the same output {name}: {by_name[name]} and {file}")
    return sorted(found.items(), key=lambda item: str(item[1]))


def read_audio(path: str | Path, sample_rate: int = 16000, quality: str = "VHQ") -> np.ndarray:
    """(samples,) float32 mono at ``sample_rate``: channels averaged, resampled with soxr."""
    try:
        data, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError or TypeError by format
        raise AudioReadError(f"cannot read audio file {path}: {error}") from error
    if data.shape[0] == 0:
        raise AudioReadError(f"audio file {path} has no samples")
    mono = data.mean(axis=1)
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality=quality)
    return np.ascontiguousarray(mono, dtype=np.float32)
