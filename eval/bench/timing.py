"""Real-time factor (interleaved timing) and multiply-accumulates of the candidates.

Per thread count and clip length: one warm-up call per model, then ``repeats`` rounds that call every model once
in turn (interleaved, so a burst of load hits all models alike); RTF = median seconds per call / clip seconds.
GMACs: ``torch.utils.flop_counter.FlopCounterMode`` total / 2 on a 10 s clip (torch's counter; other tools count
differently).
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from eval.bench.candidates import COLUMNS, REFERENCE, SAMPLE_RATE, Candidate


def clip(seconds: float) -> torch.Tensor:
    """(1, samples) seeded noise at 16 kHz."""
    generator = torch.Generator().manual_seed(int(seconds * 1000))
    return 0.1 * torch.randn(1, int(seconds * SAMPLE_RATE), generator=generator)


def gmacs(candidate: Candidate, waveform: torch.Tensor) -> float | None:
    """Multiply-accumulates (torch's flop counter / 2) of one call, in billions."""
    if not candidate.countable:
        return None
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        candidate.call(waveform)
    return counter.get_total_flops() / 2 / 1e9


def time_models(candidates: list[Candidate], threads: int, seconds: float, repeats: int) -> list[dict]:
    """Interleaved timing on ``threads`` threads: one row per model; progress on stderr."""
    torch.set_num_threads(threads)
    for candidate in candidates:
        if candidate.set_threads is not None:
            candidate.set_threads(threads)
    waveform = clip(seconds)
    print(f"timing {len(candidates)} models: {threads} thread(s), {seconds:g} s clip, {repeats} repeat(s)",
          file=sys.stderr, flush=True)
    times: dict[str, list[float]] = {c.name: [] for c in candidates}
    loads: dict[str, list[float]] = {c.name: [] for c in candidates}
    with torch.no_grad():
        for candidate in candidates:  # warm-up
            print(f"  warm-up {candidate.name}", file=sys.stderr, flush=True)
            candidate.call(waveform)
        for round_index in range(repeats):
            for candidate in candidates:
                start = time.perf_counter()
                candidate.call(waveform)
                times[candidate.name].append(time.perf_counter() - start)
                loads[candidate.name].append(os.getloadavg()[0])
            print(f"  round {round_index + 1}/{repeats} done", file=sys.stderr, flush=True)
    return [{"model": c.name, "threads": threads, "clip_s": seconds,
             "rtf_median": statistics.median(times[c.name]) / seconds, "rtf_min": min(times[c.name]) / seconds,
             "load_1min": statistics.mean(loads[c.name]), "repeats": repeats, "note": c.note} for c in candidates]


def benchmark(candidates: list[Candidate], thread_counts: list[int], durations: list[float], repeats: int,
              memory: Callable[[str], float | None] | None = None) -> pd.DataFrame:
    """The results table (one row per model, thread count and clip length; columns ``COLUMNS``)."""
    rows = []
    for threads in thread_counts:
        for seconds in durations:
            rows += time_models(candidates, threads, seconds, repeats)
    table = pd.DataFrame(rows)
    torch.set_num_threads(thread_counts[0])
    ten_seconds = clip(10.0)
    print("counting GMACs on a 10 s clip", file=sys.stderr, flush=True)
    table["params_M"] = table["model"].map({c.name: c.parameters / 1e6 for c in candidates})
    table["gmacs_10s"] = table["model"].map({c.name: gmacs(c, ten_seconds) for c in candidates})
    table["peak_rss_mb"] = table["model"].map({c.name: memory(c.name) for c in candidates} if memory else {})
    reference = table[table["model"] == REFERENCE].set_index(["threads", "clip_s"])["rtf_median"]
    keys = list(zip(table["threads"], table["clip_s"]))
    table["ratio_to_wav2vec2"] = [row / reference.get(key, np.nan) for row, key in zip(table["rtf_median"], keys)]
    return table[COLUMNS]
