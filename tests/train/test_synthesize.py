"""hear_embed.train.synthesize, the one synthesiser of pretraining scenes and the mini-suite: seeded, bounded,
and each sound has the spectrum it is described with."""
from __future__ import annotations

import numpy as np
import pytest

from hear_embed.train.synthesize import SAMPLE_RATE, coloured_noise, scene, sweep


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_coloured_noise_has_the_requested_spectral_slope(exponent):
    noise = coloured_noise(np.random.default_rng(0), 1 << 16, exponent)
    assert noise.dtype == np.float32 and np.abs(noise).max() == pytest.approx(1.0)
    power = np.abs(np.fft.rfft(noise)) ** 2
    bands = [power[lo:2 * lo].mean() for lo in (64, 128, 256, 512, 1024, 2048)]  # octave bands
    slope = np.polyfit(np.log2([64, 128, 256, 512, 1024, 2048]), np.log2(bands), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.15)


@pytest.mark.parametrize("lowest, highest", [(300.0, 3000.0), (100.0, 6400.0)])
def test_sweep_stays_in_its_frequency_range(lowest, highest):
    tone = sweep(np.random.default_rng(3), 0.5, lowest=lowest, highest=highest)
    assert len(tone) == SAMPLE_RATE // 2
    spectrum = np.abs(np.fft.rfft(tone)) ** 2
    frequencies = np.fft.rfftfreq(len(tone), 1 / SAMPLE_RATE)
    inside = spectrum[(frequencies >= 0.9 * lowest) & (frequencies <= 1.1 * highest)].sum()
    assert inside > 0.95 * spectrum.sum()


def test_scenes_are_seeded_and_bounded():
    first = [scene(np.random.default_rng(7)) for _ in range(2)]
    assert np.array_equal(*first)
    scenes = [scene(np.random.default_rng(seed)) for seed in range(20)]
    assert not np.array_equal(scenes[0], scenes[1])
    assert all(SAMPLE_RATE <= len(audio) < 4 * SAMPLE_RATE for audio in scenes)
    assert all(audio.dtype == np.float32 and np.abs(audio).max() == pytest.approx(0.9) for audio in scenes)
