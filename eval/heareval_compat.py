"""Run the real heareval 2021.1.3 downstream runner on this stack, patched at import time (nothing edited on disk).

Usage (the cross-check test and eval/heareval_speed.py do this in a subprocess):
    python -m eval.heareval_compat <embedding task dir> --grid fast

Fixes, each needed on Python 3.11 / torch 2.13 / numpy 2.4 / pytorch-lightning 1.9.5:
1. torch >= 2.6 loads checkpoints weights-only; heareval's checkpoints hold pickled objects
   → TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1.
2. numpy 2 removed ``np.Inf``, which Lightning 1.9's EarlyStopping and ModelCheckpoint use → alias to np.inf.
3. heareval sets ``trainer.fit_loop.current_epoch`` before testing so that event tasks use the best epoch's
   post-processing; Lightning >= 1.6 has no such setter (the assignment is silently lost and the test fails
   with a KeyError) → a ``FitLoop.current_epoch`` property that reads and writes
   ``epoch_progress.current.completed``, which is what ``trainer.current_epoch`` reads.
``setuptools<82`` must be installed for dcase_util's ``pkg_resources`` import (not patchable here).
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np

from eval.features import SplitFeatures


def apply_patches() -> None:
    """Make heareval 2021.1.3 importable and correct here. Idempotent."""
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import numpy as np

    if not hasattr(np, "Inf"):
        np.Inf = np.inf  # type: ignore[attr-defined]
    from pytorch_lightning.loops.fit_loop import FitLoop

    def get_epoch(loop: FitLoop) -> int:
        return loop.epoch_progress.current.completed

    def set_epoch(loop: FitLoop, epoch: int) -> None:
        loop.epoch_progress.current.completed = epoch

    FitLoop.current_epoch = property(get_epoch, set_epoch)


def write_embedding_dir(
    metadata: dict, label_vocab: list[str], features: dict[str, SplitFeatures], out_dir: Path
) -> Path:
    """Write features in the layout heareval's embedding stage produces and its prediction stage reads.

    Per split: ``<split>.embeddings.npy`` (a raw float32 memmap, no .npy header), ``<split>.embedding-dimensions.json``,
    ``<split>.target-labels.pkl`` (labels per row); events also ``<split>.filename-timestamps.json`` and
    ``<split>.json`` (ground-truth events). Rows keep the order of ``features``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "task_metadata.json").write_text(json.dumps(metadata, indent=2))
    rows = ["idx,label"] + [f"{i},{label}" for i, label in enumerate(label_vocab)]
    (out_dir / "labelvocabulary.csv").write_text("\n".join(rows) + "\n")
    for split in metadata["splits"]:
        part = features[split]
        x = np.ascontiguousarray(part.x, dtype=np.float32)
        memmap = np.memmap(out_dir / f"{split}.embeddings.npy", dtype=np.float32, mode="w+", shape=x.shape)
        memmap[:] = x
        memmap.flush()
        (out_dir / f"{split}.embedding-dimensions.json").write_text(json.dumps(list(x.shape)))
        if part.y.ndim == 1:
            labels = [[label_vocab[i]] for i in part.y]
        else:
            labels = [[label_vocab[i] for i in np.nonzero(row)[0]] for row in part.y]
        with open(out_dir / f"{split}.target-labels.pkl", "wb") as handle:
            pickle.dump(labels, handle)
        if metadata["embedding_type"] == "event":
            pairs = [[part.filenames[f], float(t)] for f, t in zip(part.file_index, part.timestamps_ms)]
            (out_dir / f"{split}.filename-timestamps.json").write_text(json.dumps(pairs))
            (out_dir / f"{split}.json").write_text(json.dumps(part.events))
    return out_dir


def main() -> None:
    apply_patches()
    from heareval.predictions.runner import runner

    runner()


if __name__ == "__main__":
    main()
