"""Acoustic Model outputs for audio of any length, in bounded memory: long audio, window group by window group.

The audio comes as a *block source*: a callable that returns, on each call, the clips' 16 kHz samples as an
iterable of (batch, n_i) float32 blocks, in order and the same every call (:func:`tensor_blocks` wraps a tensor;
``hear-embed embed`` re-reads the file). The source is read in full passes, never held whole:

1. :func:`summarize`: the length, per-clip peak (overflow rescaling), sum (DC offset) and finiteness;
2. the per-clip log-mel mean and population std, over chunks of spectrogram frames (:class:`RunningStats`);
3. groups of the model's sliding windows (``windows_per_group`` windows, default 4): the normalized log-mel
   frames they cover, their conv features, then :meth:`AcousticModel.encode_windows` into one overlap-add.

Clips of at most ``max_length`` encoder frames (6 s) skip 2 and 3: their samples are joined and go through
``AcousticModel(Frontend(audio))`` directly. Long clips give the same numbers as that plain computation without
ever holding the whole audio, log-mel, conv features or attention of a clip; a tensor and a re-read file with the
same samples give identical numbers, whatever their block sizes (sums run over fixed chunks of samples).
All clips of one call have the same length, so they share one window plan and every window is used.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from hear_embed.acoustic_model import AcousticModel
from hear_embed.frontend import (Frontend, RunningStats, encoder_frame_count, num_frames, overflow_scale,
                                 reflect_padded_index)
from hear_embed.layers import full_lengths
from hear_embed.windowing import OverlapAdd

BlockSource = Callable[[], Iterable[torch.Tensor | np.ndarray]]  # each call: (batch, n_i) float32 blocks in order
STATS_CHUNK_FRAMES = 4096  # spectrogram frames (41 s) per chunk of the statistics pass
SUM_CHUNK_SAMPLES = 1 << 20  # samples per partial sum of the DC offset (fixed, so any blocking sums the same)
TENSOR_BLOCK_SAMPLES = 1 << 20  # samples per block of :func:`tensor_blocks`


def tensor_blocks(audio: torch.Tensor, block_samples: int = TENSOR_BLOCK_SAMPLES) -> BlockSource:
    """A block source over ``audio`` (batch, samples): views of ``block_samples`` samples, no copy."""
    return lambda: audio.split(block_samples, dim=-1)


def _as_block(block, device: torch.device | None, batch: int | None, index: int) -> torch.Tensor:
    """A source's block as a (batch, n) float32 tensor on ``device``, or a ValueError naming what is wrong."""
    if isinstance(block, np.ndarray):
        block = torch.from_numpy(block)
    if not isinstance(block, torch.Tensor) or block.dim() != 2 or block.dtype != torch.float32:
        described = (f"{tuple(block.shape)} {block.dtype}" if isinstance(block, (torch.Tensor, np.ndarray))
                     else type(block).__name__)
        raise ValueError(f"audio block {index} must be a (n_sounds, n_samples) float32 tensor, got {described}")
    if batch is not None and block.shape[0] != batch:
        raise ValueError(f"audio block {index} holds {block.shape[0]} clips, the first block {batch}")
    return block if device is None else block.to(device)


class SampleStream:
    """One pass over a block source, read forward: :meth:`samples` returns any range whose start does not go
    back before an earlier one's, holding only the blocks it needs."""

    def __init__(self, source: BlockSource, num_samples: int, scale: torch.Tensor | None = None,
                 device: torch.device | None = None):
        self.blocks: Iterator = iter(source())
        self.num_samples, self.scale, self.device = num_samples, scale, device
        self.buffer: torch.Tensor | None = None  # samples offset .. end of the clips
        self.offset = self.end = self.count = 0

    def _pull(self) -> bool:
        block = next(self.blocks, None)
        if block is None:
            return False
        block = _as_block(block, self.device, None if self.buffer is None else self.buffer.shape[0], self.count)
        if self.scale is not None:
            block = block * self.scale[:, None]
        self.buffer = block if self.buffer is None else torch.cat([self.buffer, block], dim=-1)
        self.end += block.shape[-1]
        self.count += 1
        if self.end > self.num_samples:
            self._mismatch(f"more than {self.num_samples}")
        return True

    def _mismatch(self, got: str) -> None:
        raise ValueError(f"the audio source gave {got} samples on a later pass but {self.num_samples} on the "
                         "first (did the file change while it was read?)")

    def samples(self, start: int, stop: int) -> torch.Tensor:
        """(batch, stop - start): samples ``start:stop`` of the clips (0 <= start, nondecreasing; stop <= length)."""
        if start < self.offset:
            raise ValueError(f"samples {start}:{stop} requested after {self.offset}: a stream only reads forward")
        while self.end < stop:
            if not self._pull():
                self._mismatch(str(self.end))
        self.buffer = self.buffer[:, start - self.offset:]  # drop what no later range needs
        self.offset = start
        return self.buffer[:, : stop - start]

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """Consecutive (batch, size) ranges from the start to the end of the source (the last one shorter)."""
        start = self.offset
        while True:
            while self.end < start + size and self._pull():
                pass
            stop = min(start + size, self.end)
            if stop == start:
                return
            yield self.samples(start, stop)
            start = stop

    def finish(self) -> None:
        """Check that the source ends where the first pass ended."""
        while self._pull():
            pass
        if self.end != self.num_samples:
            self._mismatch(str(self.end))


@dataclass(frozen=True)
class SourceSummary:
    """What the first pass over a block source learns: length, and per clip (batch,) peak, sum and finiteness."""

    num_samples: int
    peak: torch.Tensor  # (batch,) largest sample magnitude (of the finite samples)
    total: torch.Tensor  # (batch,) float64 sum of the samples
    finite: torch.Tensor  # (batch,) bool: no NaN or Inf


def summarize(source: BlockSource, device: torch.device | None = None) -> SourceSummary:
    """First pass: length, peak, sum (over fixed chunks of ``SUM_CHUNK_SAMPLES``) and finiteness of each clip."""
    stream = SampleStream(source, num_samples=np.iinfo(np.int64).max, device=device)
    peak = total = finite = None
    for chunk in stream.chunks(SUM_CHUNK_SAMPLES):
        if peak is None:
            peak = torch.zeros(chunk.shape[0], dtype=chunk.dtype, device=chunk.device)
            total = torch.zeros(chunk.shape[0], dtype=torch.float64, device=chunk.device)
            finite = torch.ones(chunk.shape[0], dtype=torch.bool, device=chunk.device)
        finite &= torch.isfinite(chunk).all(dim=1)
        peak = torch.maximum(peak, chunk.nan_to_num(0.0, 0.0, 0.0).abs().amax(dim=1))
        total += chunk.double().sum(dim=1)
    if peak is None:
        raise ValueError("the audio source gave no samples")
    return SourceSummary(num_samples=stream.end, peak=peak, total=total, finite=finite)


def stream_power_frames(frontend: Frontend, stream: SampleStream, start: int, stop: int,
                        dc: torch.Tensor) -> torch.Tensor:
    """Frames ``start:stop`` of the power spectrogram of the stream's clips less ``dc`` (batch, 1), the numbers of
    :meth:`Frontend.power_frames` on the whole clips: (batch, n_freqs, frames)."""
    cfg = frontend.config
    stop = min(stop, num_frames(stream.num_samples, cfg.hop_length))
    index = reflect_padded_index(start * cfg.hop_length, (stop - 1) * cfg.hop_length + cfg.n_fft, cfg.n_fft // 2,
                                 stream.num_samples)
    first, last = int(index.min()), int(index.max()) + 1
    samples = stream.samples(first, last)
    if last - first != len(index) or int(index[0]) != first:  # reflected at an edge: gather
        samples = samples[:, (index - first).to(samples.device)]
    return frontend.padded_power(samples, dc)


def log_mel_statistics(frontend: Frontend, stream: SampleStream, dc: torch.Tensor,
                       chunk_frames: int = STATS_CHUNK_FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip mean and population std (batch,) of the un-normalized log-mel over all frames and bins."""
    stats = RunningStats(dc.shape[0], dc.device)
    for start in range(0, num_frames(stream.num_samples, frontend.config.hop_length), chunk_frames):
        stats.update(frontend.log_mel(stream_power_frames(frontend, stream, start, start + chunk_frames, dc)))
    stream.finish()
    return stats.mean_std()


@torch.no_grad()
def windowed_hidden(frontend: Frontend, model: AcousticModel, source: BlockSource, summary: SourceSummary,
                    num_layers: int | None = None, windows_per_group: int = 4,
                    stats_chunk_frames: int = STATS_CHUNK_FRAMES) -> torch.Tensor:
    """Sliding-window Acoustic Model output of equal-length clips: (batch, frames, hidden)."""
    device = frontend.window.device
    scale = overflow_scale(summary.peak.to(device))
    scale = scale if bool((scale != 1).any()) else None
    n = summary.num_samples
    dc = (summary.total.to(device) * (1.0 if scale is None else scale.double()) / n).float()[:, None]
    mean, std = log_mel_statistics(frontend, SampleStream(source, n, scale, device), dc, stats_chunk_frames)
    plan = model.window_plan
    total = encoder_frame_count(n, frontend.config.hop_length)
    batch = dc.shape[0]
    lengths = torch.full((batch,), total, device=device)
    overlap_add = OverlapAdd(plan, batch, total, model.config.hidden_size, like=dc)
    stream = SampleStream(source, n, scale, device)
    for group in plan.starts(total).split(windows_per_group):
        first, last = int(group[0]), min(int(group[-1]) + plan.max_length, total)
        power = stream_power_frames(frontend, stream, 2 * first, 2 * last, dc)
        log_mel = frontend.normalize(frontend.log_mel(power), mean, std)
        hidden, _ = model.feature_extractor(log_mel, full_lengths(log_mel))  # (batch, last - first, hidden)
        model.encode_windows(hidden, lengths, group, overlap_add, num_layers, offset=first)
    stream.finish()
    return overlap_add.result()


@torch.no_grad()
def acoustic_hidden(frontend: Frontend, model: AcousticModel, source: BlockSource, summary: SourceSummary,
                    num_layers: int | None = None, windows_per_group: int = 4) -> torch.Tensor:
    """Acoustic Model output of equal-length clips, (batch, frames, hidden): the plain computation for clips of up
    to ``max_length`` encoder frames (their blocks joined), :func:`windowed_hidden` beyond."""
    if encoder_frame_count(summary.num_samples, frontend.config.hop_length) <= model.config.max_length:
        stream = SampleStream(source, summary.num_samples, device=frontend.window.device)
        audio = stream.samples(0, summary.num_samples)
        stream.finish()
        hidden, _ = model(frontend(audio), num_layers=num_layers)
        return hidden
    return windowed_hidden(frontend, model, source, summary, num_layers, windows_per_group)
