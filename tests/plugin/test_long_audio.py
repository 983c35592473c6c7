"""Long audio (5 and 10 minutes, small fixture model): the streamed embeddings equal the plain computation, the
same audio from a block source gives identical numbers, and the peak memory they need stays bounded instead of
growing with the clip.

Each computation runs in its own process, which samples its resident size (/proc/self/statm; tracemalloc does
not see torch's allocations) every millisecond during the embedding call: peak growth = peak - size before.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = """
import json, os, sys, threading, time, torch
torch.set_num_threads(1)
from hear_embed import get_timestamp_embeddings, load_model
from hear_embed.api import timestamp_embeddings_of_blocks
checkpoint, minutes, mode, out_file = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
model = load_model(checkpoint)
BLOCK = 23_777  # samples: what the file reader yields for 65,536 frames at 44.1 kHz

def blocks():  # the clip, generated block by block (seeded per block): never whole in memory
    total = int(minutes * 60 * 16000)
    for index, start in enumerate(range(0, total, BLOCK)):
        generator = torch.Generator().manual_seed(index)
        yield torch.rand(1, min(BLOCK, total - start), generator=generator).mul_(2).sub_(1)

audio = None if mode == "blocks" else torch.cat(list(blocks()), dim=1)
get_timestamp_embeddings(torch.rand(1, 16000), model)  # warm up the allocator and kernels

def rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

peak, running = [0.0], [True]
def sample():  # the resident size, sampled every millisecond while the call runs
    while running[0]:
        peak[0] = max(peak[0], rss_mb())
        time.sleep(0.001)

before = rss_mb()
sampler = threading.Thread(target=sample)
sampler.start()
if mode == "streamed":
    hidden, _ = get_timestamp_embeddings(audio, model)
elif mode == "blocks":  # a block source, read once per pass, as hear-embed embed reads a file
    hidden, _ = timestamp_embeddings_of_blocks(blocks, model)
else:  # the plain computation: Frontend on the whole clip, then AcousticModel.forward
    with torch.no_grad():
        hidden, _ = model.acoustic_model(model.frontend(audio))
running[0] = False
sampler.join()
torch.save(hidden[0], out_file)
print(json.dumps({"peak_growth_mb": max(peak[0], rss_mb()) - before, "output_mb": hidden.numel() * 4 / 2**20}))
"""

LOG_MEL_MB_PER_MINUTE = 128 * 6000 * 4 / 2**20  # 2.9 MB; the complex STFT is 8x that


def measure(checkpoint, minutes: float, mode: str, out_file) -> dict:
    # A fixed mmap threshold makes glibc return freed large blocks to the system, so the peak RSS tracks
    # the memory actually in use rather than the allocator's history.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(checkpoint), str(minutes), mode, str(out_file)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_ten_minutes_streamed_equals_plain_in_bounded_memory(parity_dir, tmp_path):
    import torch

    checkpoint = parity_dir / "acoustic_model_small.pth"
    streamed = measure(checkpoint, 10, "streamed", tmp_path / "streamed.pt")
    shorter = measure(checkpoint, 5, "streamed", tmp_path / "shorter.pt")
    plain = measure(checkpoint, 10, "plain", tmp_path / "plain.pt")
    from_blocks = measure(checkpoint, 10, "blocks", tmp_path / "blocks.pt")
    shorter_from_blocks = measure(checkpoint, 5, "blocks", tmp_path / "shorter_blocks.pt")

    hidden = torch.load(tmp_path / "streamed.pt", weights_only=True)
    expected = torch.load(tmp_path / "plain.pt", weights_only=True)
    assert hidden.shape == expected.shape == (30_000, 64)
    np.testing.assert_allclose(hidden.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.load(tmp_path / "blocks.pt", weights_only=True), hidden)

    # From a block source the clip is never held whole (19 MB more audio for 10 minutes than for 5, counted in
    # the peak here since the blocks are made during the call): the peak grows with the output (3.7 MB) alone.
    growth = from_blocks["peak_growth_mb"] - shorter_from_blocks["peak_growth_mb"]
    allowed = from_blocks["output_mb"] - shorter_from_blocks["output_mb"] + 5 * LOG_MEL_MB_PER_MINUTE / 2
    assert growth < allowed, (shorter_from_blocks, from_blocks)
    assert from_blocks["peak_growth_mb"] < 150, from_blocks

    # Doubling the length adds the extra output (3.7 MB) and little else; materializing the clip's whole
    # log-mel (2.9 MB per minute), power spectrum (4x that) or attention (17 MB per minute) would add more.
    growth = streamed["peak_growth_mb"] - shorter["peak_growth_mb"]
    allowed = streamed["output_mb"] - shorter["output_mb"] + 5 * LOG_MEL_MB_PER_MINUTE / 2
    assert growth < allowed, (shorter, streamed)
    # The plain computation shows what the bound guards against: it holds the whole complex STFT (513 bins x
    # 60,000 frames, 235 MB) and power spectrum (117 MB) at once; the streamed one a few windows and chunks
    # besides its 7 MB output.
    assert streamed["peak_growth_mb"] < 150 and plain["peak_growth_mb"] > 300, (streamed, plain)
