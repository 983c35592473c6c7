"""Frame probabilities → event lists, heareval's post-processing done once per split layout and vectorised.

Per file (frames in timestamp order): median filter over time (width = round(median_filter_ms / mean hop),
scipy's default reflect mode, skipped when the width is 0) → threshold (p > 0.5) → runs of consecutive active
frames become events from the first to the last active frame's timestamp → events with end - start <
min_duration (ms) are dropped. Files of equal length and width are filtered in one scipy call, and the filter
is shared by every min_duration of the post-processing grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
from scipy.ndimage import median_filter

from eval.features import SplitFeatures

DEFAULT_POSTPROCESSING_GRID = {"median_filter_ms": [250], "min_duration": [125, 250]}
Postprocessing = tuple[tuple[str, float], ...]  # (("median_filter_ms", v), ("min_duration", v)), sorted keys
Events = dict[str, list[dict]]


@dataclass
class FrameLayout:
    """Where each file's frames are, in timestamp order. Built once per split and reused every validation."""

    filenames: list[str]  # (n_files,) file names as heareval keys them (the path's last part)
    order: np.ndarray  # (n_frames,) row indices sorted by (file, timestamp)
    bounds: np.ndarray  # (n_files + 1,) file f owns order[bounds[f]:bounds[f + 1]]
    timestamps_ms: list[np.ndarray]  # per file (n_frames_f,) sorted float64 timestamps
    hop_ms: np.ndarray  # (n_files,) mean timestamp step of each file


def frame_layout(features: SplitFeatures) -> FrameLayout:
    """Group the frames of an event split by file and sort them by time."""
    if features.file_index is None or features.timestamps_ms is None:
        raise ValueError(f"split {features.split!r}: event features need file_index and timestamps_ms")
    file_index = np.asarray(features.file_index)
    timestamps = np.asarray(features.timestamps_ms, dtype=np.float64)
    order = np.lexsort((timestamps, file_index))
    present, counts = np.unique(file_index, return_counts=True)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    per_file = [timestamps[order[bounds[f] : bounds[f + 1]]] for f in range(len(present))]
    hop = np.array([np.mean(np.diff(t)) if len(t) > 1 else np.nan for t in per_file])
    names = [Path(features.filenames[i]).name for i in present]
    return FrameLayout(filenames=names, order=order, bounds=bounds, timestamps_ms=per_file, hop_ms=hop)


def postprocessing_grid(grid: dict[str, list[float]]) -> list[Postprocessing]:
    """All combinations of a post-processing grid, each as a tuple of (key, value) in sorted key order."""
    unknown = set(grid) - {"median_filter_ms", "min_duration", "threshold"}
    if unknown:
        raise ValueError(f"event_postprocessing_grid has unknown keys {sorted(unknown)}")
    keys = sorted(grid)
    return [tuple(zip(keys, values)) for values in product(*(grid[k] for k in keys))]


def _filter_width(median_filter_ms: float, hop_ms: float) -> int:
    if not median_filter_ms or not np.isfinite(hop_ms):
        return 0
    return int(round(median_filter_ms / hop_ms))


def _filtered_active(probs: np.ndarray, layout: FrameLayout, median_filter_ms: float, threshold: float) -> list:
    """Per file (n_frames_f, n_labels) bool activity after median filtering and thresholding."""
    sorted_probs = probs[layout.order]
    chunks = [sorted_probs[layout.bounds[f] : layout.bounds[f + 1]] for f in range(len(layout.filenames))]
    widths = [_filter_width(median_filter_ms, h) for h in layout.hop_ms]
    active: list = [None] * len(chunks)
    groups: dict[tuple[int, int], list[int]] = {}
    for f, chunk in enumerate(chunks):
        groups.setdefault((len(chunk), widths[f]), []).append(f)
    for (_, width), files in groups.items():
        stack = np.stack([chunks[f] for f in files])  # (n_files, n_frames, n_labels)
        if width:
            stack = median_filter(stack, size=(1, width, 1))
        for f, block in zip(files, stack > threshold):
            active[f] = block
    return active


def _runs(active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of True along time. active: (n_frames, n_labels) → (label, first frame, last frame) arrays."""
    padded = np.zeros((active.shape[0] + 2, active.shape[1]), dtype=np.int8)
    padded[1:-1] = active
    step = np.diff(padded, axis=0)
    labels, starts = np.nonzero(step.T == 1)  # ordered by label, then time
    _, ends = np.nonzero(step.T == -1)
    return labels, starts, ends - 1


def frames_to_events(
    probs: np.ndarray,
    layout: FrameLayout,
    label_vocab: list[str],
    postprocessings: list[Postprocessing],
) -> dict[Postprocessing, Events]:
    """Event lists for every post-processing setting. probs: (n_frames, n_labels) in the split's row order."""
    by_filter: dict[tuple[float, float], list[Postprocessing]] = {}
    for pp in postprocessings:
        params = dict(pp)
        key = (params.get("median_filter_ms", 0), params.get("threshold", 0.5))
        by_filter.setdefault(key, []).append(pp)
    result: dict[Postprocessing, Events] = {}
    for (median_ms, threshold), pps in by_filter.items():
        active = _filtered_active(probs, layout, median_ms, threshold)
        runs = [_runs(a) for a in active]
        for pp in pps:
            min_duration = dict(pp).get("min_duration", 0)
            events: Events = {}
            for name, times, (labels, starts, ends) in zip(layout.filenames, layout.timestamps_ms, runs):
                begin, end = times[starts], times[ends]
                keep = np.nonzero(end - begin >= min_duration)[0]
                keep = keep[np.argsort(begin[keep], kind="stable")]  # by start time, as heareval
                events[name] = [
                    {"label": label_vocab[labels[i]], "start": float(begin[i]), "end": float(end[i])} for i in keep
                ]
            result[pp] = events
    return result
