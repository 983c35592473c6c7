"""Seeded synthetic audio: harmonic tones, sweeps and coloured noise, and pretraining scenes built from them.

The one synthesiser of the project: the pretraining scenes below (non-speech material — pitch, onsets,
timbre — for small runs such as the bundled ``tiny`` model) and the evaluation mini-suite
(``eval/suites/mini.py``) both draw from these functions, with distinct seeds.

    python -m hear_embed.train.synthesize --out runs/synthetic --count 1200 --seed 7
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000


def harmonic_tone(rng: np.random.Generator, frequency: float, seconds: float) -> np.ndarray:
    """(seconds * 16 kHz,) float32, unit peak: a random-timbre harmonic tone, 1-10 harmonics with random decay,
    attack/release envelope."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    harmonics = int(rng.integers(1, 11))
    tilt = rng.uniform(0.5, 2.0)
    tone = np.zeros_like(t)
    for k in range(1, harmonics + 1):
        if k * frequency < SAMPLE_RATE / 2:
            tone += rng.uniform(0.5, 1.0) / k**tilt * np.sin(2 * np.pi * k * frequency * t + rng.uniform(0, 2 * np.pi))
    attack, release = rng.uniform(0.005, 0.05), rng.uniform(0.02, 0.2)
    envelope = np.minimum(1.0, np.minimum(t / attack, (seconds - t) / release)) * np.exp(-t * rng.uniform(0, 3))
    return (tone * envelope / max(np.abs(tone).max(), 1e-9)).astype(np.float32)


def sweep(rng: np.random.Generator, seconds: float, lowest: float = 300.0, highest: float = 3000.0) -> np.ndarray:
    """(seconds * 16 kHz,) float32: a linear frequency sweep between two random frequencies in [lowest, highest)
    Hz, with 10 ms fades."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0, f1 = rng.uniform(lowest, highest, size=2)
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.01)
    return (np.sin(phase) * fade).astype(np.float32)


def coloured_noise(rng: np.random.Generator, samples: int, exponent: float = 1.0) -> np.ndarray:
    """(samples,) float32 unit-peak noise with power spectrum ~ 1 / f**exponent (1: pink, 0: white)."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    spectrum /= np.maximum(np.arange(len(spectrum)), 1) ** (exponent / 2)
    noise = np.fft.irfft(spectrum, n=samples)
    return (noise / np.abs(noise).max()).astype(np.float32)


def scene(rng: np.random.Generator) -> np.ndarray:
    """1-4 s float32: 1-4 events (tones of 55-1760 Hz, sweeps of 100-6400 Hz, noise bursts) at random onsets
    over quiet coloured noise, peak 0.9."""
    n = int(SAMPLE_RATE * rng.uniform(1, 4))
    audio = 0.05 * rng.uniform(0, 1) * coloured_noise(rng, n, rng.uniform(0, 2))
    for _ in range(int(rng.integers(1, 5))):
        seconds = rng.uniform(0.1, 1.5)
        kind = rng.integers(3)
        if kind == 0:
            event = harmonic_tone(rng, 55.0 * 2 ** rng.uniform(0, 5), seconds)
        elif kind == 1:
            event = sweep(rng, seconds, lowest=100.0, highest=6400.0)
        else:
            samples = int(seconds * SAMPLE_RATE)
            event = coloured_noise(rng, samples, rng.uniform(0, 2)) * np.hanning(samples)
        onset = int(rng.integers(0, max(1, n - len(event))))
        audio[onset: onset + len(event)] += rng.uniform(0.2, 1.0) * event[: n - onset] / (np.abs(event).max() + 1e-9)
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
