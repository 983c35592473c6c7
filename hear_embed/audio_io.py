"""The one audio reader of hear_embed and eval: any format soundfile reads, mixed to mono, resampled with soxr.

Files are decoded and resampled block by block (soxr's streaming resampler gives the same samples as a
one-shot resample): :func:`read_audio_blocks` yields the 16 kHz mono blocks (what ``hear-embed embed`` feeds the
long-audio path, so memory holds a few blocks), :func:`read_audio` joins them into one array (memory holds only
that result, never the whole file at its own rate).
Problems are named with the file: unreadable or non-finite audio always raises :class:`AudioReadError`;
a file shorter than its header says (truncated) gives an :class:`AudioWarning`, or an error in ``strict``
mode (the harness's), which also refuses a file with several channels; a file at another rate is refused when
``resample`` is False.
"""
from __future__ import annotations

import errno
import os
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
import soxr

RESAMPLE_QUALITY = "VHQ"  # soxr quality of every resample in the project
BLOCK_FRAMES = 1 << 16  # frames decoded per block
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64",
    ".rf64", ".nist", ".sph", ".voc", ".htk", ".mat", ".paf", ".pvf", ".sd2", ".sds", ".svx", ".xi", ".avr",
    ".ircam", ".sf", ".wve", ".mpc",
})


class AudioReadError(ValueError):
    """A file could not be read as audio; the message names the file."""


class AudioWarning(UserWarning):
    """Something odd about an input (truncated file, skipped path); the message names it."""


def wav_header_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE header declares (data chunk size / block align), None if not a plain WAV or unknown.

    libsndfile quietly shortens a truncated WAV to what is present, so the header is read here."""
    with open(path, "rb") as file:
        head = file.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while len(chunk := file.read(8)) == 8:
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                fmt = file.read(size + size % 2)
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
            elif name == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):  # streamed WAVs leave the size open
                    return None
                return size // block_align
            else:
                file.seek(size + size % 2, os.SEEK_CUR)
    return None


def _warn(message: str) -> None:
    warnings.warn(AudioWarning(message), stacklevel=3)


def _problem(message: str, strict: bool) -> None:
    """An error in ``strict`` mode, else a warning."""
    if strict:
        raise AudioReadError(message)
    _warn(message)


def _expected_samples(path: Path, sample_rate: int) -> int:
    """Samples at ``sample_rate`` that a readable file's header declares (plus soxr's slack), to size one buffer."""
    info = soundfile.info(str(path))
    declared = max(info.frames, wav_header_frames(Path(path)) or 0)
    return int(np.ceil(declared * sample_rate / info.samplerate)) + 64


def read_audio_blocks(path: str | Path, sample_rate: int = 16000, *, strict: bool = False, resample: bool = True,
                      warn: bool = True) -> Iterator[np.ndarray]:
    """The samples :func:`read_audio` returns, as consecutive (n_i,) float32 blocks: a file is decoded, mixed and
    resampled ``BLOCK_FRAMES`` frames at a time, so memory holds one block. Problems raise or warn as in
    :func:`read_audio`, when the block they concern is reached; ``warn=False`` leaves out the truncation warning
    (for a second reading of the same file)."""
    path = Path(path)
    try:
        sound = soundfile.SoundFile(str(path))
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError or TypeError by format
        raise AudioReadError(f"cannot read audio file {path}: {error}") from error
    with sound:
        rate, declared = sound.samplerate, sound.frames
        if strict and sound.channels != 1:
            raise AudioReadError(f"audio file {path} has {sound.channels} channels, expected mono")
        if rate != sample_rate and not resample:
            raise AudioReadError(f"audio file {path} is at {rate} Hz, expected {sample_rate} Hz")
        header = wav_header_frames(path)
        declared = max(declared, header or 0)
        stream = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY) \
            if rate != sample_rate else None
        read = 0
        stopped = ""
        while True:
            try:
                block = sound.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            except Exception as error:  # libsndfile gives up on damaged data: keep what was decoded
                stopped = f" (decoding stopped: {error})"
                block = np.zeros((0, sound.channels), dtype=np.float32)
            last = len(block) < BLOCK_FRAMES
            read += len(block)
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            if not np.isfinite(mono).all():
                raise AudioReadError(f"audio file {path} holds NaN or Inf samples near frame {read - len(block)}")
            if stream is not None:
                mono = stream.resample_chunk(mono, last=last)
            if last:
                break
            yield mono
    if read == 0:
        raise AudioReadError(f"audio file {path} has no samples{stopped}")
    if read < declared and (strict or warn):
        _problem(f"audio file {path} is truncated: {read} of the {declared} frames its header declares{stopped}",
                 strict)
    yield mono


def read_audio(path: str | Path, sample_rate: int = 16000, *, strict: bool = False,
               resample: bool = True) -> np.ndarray:
    """(samples,) float32 mono at ``sample_rate``: channels averaged, resampled with soxr (``RESAMPLE_QUALITY``).

    ``strict`` (the harness): a truncated or multi-channel file is an error, not a warning or a mix.
    ``resample=False``: a file at another rate is an error. Non-finite samples and unreadable files always raise
    :class:`AudioReadError`. The blocks of :func:`read_audio_blocks` are written into one buffer sized from the
    header, so memory holds only the result and one block."""
    out = np.empty(0, dtype=np.float32)
    filled = 0
    for mono in read_audio_blocks(path, sample_rate, strict=strict, resample=resample):
        if filled + len(mono) > len(out):
            if filled == 0:
                out = np.empty(_expected_samples(path, sample_rate) + len(mono), dtype=np.float32)
            else:
                out = np.concatenate([out[:filled], np.empty(len(mono) + BLOCK_FRAMES, dtype=np.float32)])
        out[filled: filled + len(mono)] = mono
        filled += len(mono)
    return out[:filled]


def _walk_audio(folder: Path) -> list[Path]:
    """Audio files (by extension) under ``folder``, following folder symlinks once; unreadable folders,
    dangling and looping symlinks are reported as :class:`AudioWarning`, not skipped silently."""
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True,
                                     onerror=lambda error: _warn(f"cannot read folder {error.filename}: "
                                                                 f"{error.strerror}")):
        real = os.path.realpath(root)
        if real in seen:
            _warn(f"skipped {root}: a symlink loop or second link to {real}, which is read once")
            dirs[:] = []
            continue
        seen.add(real)
        for name in sorted(dirs + files):
            entry = Path(root) / name
            if not entry.is_symlink():
                continue
            try:
                entry.stat()
            except OSError as error:
                reason = "a symlink loop" if error.errno == errno.ELOOP else "a dangling symlink"
                _warn(f"skipped {entry}: {reason} ({os.readlink(entry)})")
        found.extend(Path(root) / name for name in files
                     if Path(name).suffix.lower() in AUDIO_EXTENSIONS and (Path(root) / name).is_file())
    return sorted(found)


def find_audio_files(paths: list[str | Path]) -> list[tuple[Path, Path]]:
    """Files given directly, plus audio files (by extension) found recursively in given folders.

    Returns sorted (file, name) pairs: ``name`` is the path relative to the folder it was found in
    (just the file name for files given directly), used to name the outputs. A folder without audio files,
    an unreadable folder and dangling or looping symlinks give an :class:`AudioWarning` naming them.
    """
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        if path.is_dir():
            files = _walk_audio(path)
            if not files:
                _warn(f"no audio files in folder {path} (extensions: .wav, .flac, .mp3, ...)")
            for file in files:
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
