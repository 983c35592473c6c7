"""The frontend's chunked STFT (used for long audio) equals the whole-clip STFT, edges included."""
from __future__ import annotations

import pytest
import torch

from hear_embed.frontend import Frontend, mono_without_dc, num_frames


@pytest.mark.parametrize("samples", [513, 16000, 16161, 48000])
@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_power_frames_in_chunks_equal_the_whole_clip(samples, chunk):
    frontend = Frontend()
    audio = torch.randn(2, samples, generator=torch.Generator().manual_seed(samples)) + 0.3
    dc = audio.mean(dim=-1, keepdim=True)
    whole = frontend.power(mono_without_dc(audio))
    total = num_frames(samples)
    assert whole.shape[-1] == total
    pieces = torch.cat([frontend.power_frames(audio, start, start + chunk, dc) for start in range(0, total, chunk)], -1)
    torch.testing.assert_close(pieces, whole, atol=1e-4, rtol=1e-5)


def test_reflect_padding_needs_more_than_half_a_window():
    with pytest.raises(ValueError, match="needs more than 512 samples"):
        Frontend().power_frames(torch.zeros(1, 512), 0, 1)
