"""Write seeded synthetic pretraining audio: harmonic tones, chirps and coloured-noise bursts over noise.

Adds non-speech material (pitch, onsets, timbre) to small pretraining runs such as the bundled ``tiny``
model. Seeds are distinct from those of the evaluation mini-suite (``eval/suites/mini.py``).

    python -m hear_embed.train.synthesize --out runs/synthetic --count 1200 --seed 7
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000


def coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """(n,) noise with power spectrum ~ 1 / f**exponent, unit peak."""
    spectrum = rng.normal(size=n // 2 + 1) + 1j * rng.normal(size=n // 2 + 1)
    spectrum /= np.maximum(np.arange(n // 2 + 1), 1) ** (exponent / 2)
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.abs(noise).max() + 1e-9)


def harmonic_tone(rng: np.random.Generator, n: int) -> np.ndarray:
    """A tone with random f0 (55-1760 Hz, log-uniform), 1-12 harmonics, slow vibrato and an attack/decay envelope."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = 55.0 * 2 ** rng.uniform(0, 5)
    vibrato = 1 + rng.uniform(0, 0.01) * np.sin(2 * np.pi * rng.uniform(3, 7) * t)
    phase = 2 * np.pi * np.cumsum(f0 * vibrato) / SAMPLE_RATE
    tone = sum(rng.uniform(0.2, 1.0) / k ** rng.uniform(0.5, 2) * np.sin(k * phase)
               for k in range(1, int(rng.integers(1, 13)) + 1) if k * f0 < SAMPLE_RATE / 2)
    envelope = np.minimum(1, t / rng.uniform(0.005, 0.1)) * np.exp(-t * rng.uniform(0, 3))
    return tone * envelope


def chirp(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    start, stop = 100 * 2 ** rng.uniform(0, 6, size=2)
    frequency = start * (stop / start) ** (t / t[-1])
    return np.sin(2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE)


def scene(rng: np.random.Generator) -> np.ndarray:
    """1-4 s: 1-4 events (tones, chirps, noise bursts) at random onsets over quiet coloured noise."""
    n = int(SAMPLE_RATE * rng.uniform(1, 4))
    audio = 0.05 * rng.uniform(0, 1) * coloured_noise(rng, n, rng.uniform(0, 2))
    for _ in range(int(rng.integers(1, 5))):
        length = int(SAMPLE_RATE * rng.uniform(0.1, 1.5))
        onset = int(rng.integers(0, max(1, n - length)))
        kind = rng.integers(3)
        event = (harmonic_tone(rng, length) if kind == 0 else chirp(rng, length) if kind == 1
                 else coloured_noise(rng, length, rng.uniform(0, 2)) * np.hanning(length))
        audio[onset: onset + length] += rng.uniform(0.2, 1.0) * event[: n - onset] / (np.abs(event).max() + 1e-9)
    return (0.9 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the .wav files")
    parser.add_argument("--count", type=int, default=1200, help="number of files")
    parser.add_argument("--seed", type=int, default=7, help="numpy seed (the mini-suite uses 440 and 2016)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for index in range(args.count):
        sf.write(args.out / f"synthetic_{index:05d}.wav", scene(rng), SAMPLE_RATE)
    print(f"wrote {args.count} files to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
