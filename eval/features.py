"""What the embedding stage hands to the probes: frozen embeddings and targets of one split of a task."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SplitFeatures:
    """Embeddings and targets of one split (or fold) of a task.

    Scene tasks hold one row per file; event tasks one row per timestamp frame, with the file and time
    of every frame and the split's ground-truth events so that predictions can be post-processed and
    scored the way heareval does.
    """

    split: str  # split or fold name as in task_metadata.json ("train", "fold00", ...)
    filenames: list[str]  # (n_files,) audio file names, in row order for scene tasks
    x: np.ndarray  # scene: (n_files, dim); event: (n_frames, dim); float32
    y: np.ndarray  # multiclass: (n,) int64 label indices; multilabel/event: (n, n_labels) float32 multi-hot
    file_index: np.ndarray | None = None  # event: (n_frames,) int64 row -> index into filenames
    timestamps_ms: np.ndarray | None = None  # event: (n_frames,) float64 frame centre in ms
    events: dict[str, list[dict]] | None = None  # event: {filename: [{"label", "start", "end"} (ms)]}, as in <split>.json
