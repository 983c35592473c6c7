"""Which scene pooling (mean, max, mean+max, mean+std) makes the best scene embedding?

Spoken-digit recognition on FSDD with a logistic-regression probe, once per set of weights: every file's
timestamp embeddings are computed once through the HEAR API and pooled each way (``hear_embed.api.pool_frames``,
what ``get_scene_embeddings`` does with the ``scene_pooling`` option). Files of takes 0..``--takes``-1 of every
speaker and digit are used (10 takes: 600 files), split by take (the lower half is test, as in FSDD's own
split) or by speaker (``--test-speakers`` are test).

    python -m eval.pooling_study --fsdd ../shared/data/fsdd/recordings \
        --weights tests/fixtures/official_parity/acoustic_model_small.pth random
    python -m eval.pooling_study --fsdd ../shared/data/fsdd/recordings --split speaker --weights random
    python -m eval.pooling_study --fsdd FSDD/recordings --weights authors   # once the released weights are cached
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hear_embed.api import SCENE_POOLINGS, get_timestamp_embeddings, load_model, pool_frames
from hear_embed.atomic_files import write_json_atomically
from hear_embed.audio_io import read_audio


def fsdd_split(folder: Path, takes: int, test_speakers: list[str] | None) -> dict[str, list[tuple[Path, int]]]:
    """{"train": [(file, digit)], "test": [...]} of files ``{digit}_{speaker}_{take}.wav`` with take < ``takes``:
    test = ``test_speakers`` if given, else takes below ``takes // 2``."""
    split: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for file in sorted(folder.glob("*.wav")):
        digit, speaker, take = file.stem.split("_")
        if int(take) >= takes:
            continue
        is_test = speaker in test_speakers if test_speakers else int(take) < takes // 2
        split["test" if is_test else "train"].append((file, int(digit)))
    if not split["train"] or not split["test"]:
        raise ValueError(f"no FSDD files named {{digit}}_{{speaker}}_{{take}}.wav in {folder}")
    return split


def pooled_embeddings(model, files: list[Path]) -> dict[str, np.ndarray]:
    """{pooling: (n_files, dim)} scene embeddings of ``files`` for every pooling."""
    pooled: dict[str, list[np.ndarray]] = {pooling: [] for pooling in SCENE_POOLINGS}
    for file in files:
        frames, _ = get_timestamp_embeddings(torch.from_numpy(read_audio(file))[None], model)
        for pooling in SCENE_POOLINGS:
            pooled[pooling].append(pool_frames(frames, pooling)[0].numpy())
    return {pooling: np.stack(rows) for pooling, rows in pooled.items()}


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0))
    probe.fit(train_x, train_y)
    return float((probe.predict(test_x) == test_y).mean())


def study(weights: str, split: dict[str, list[tuple[Path, int]]]) -> dict:
    model = load_model(weights)
    started = time.time()
    features = {name: pooled_embeddings(model, [file for file, _ in rows]) for name, rows in split.items()}
    labels = {name: np.array([digit for _, digit in rows]) for name, rows in split.items()}
    accuracy = {pooling: probe_accuracy(features["train"][pooling], labels["train"],
                                        features["test"][pooling], labels["test"]) for pooling in SCENE_POOLINGS}
    return {"weights": weights, "layout": model.weights_info.layout, "accuracy": accuracy,
            "embed_seconds": round(time.time() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["random"], help="weights sources for load_model")
    parser.add_argument("--fsdd", type=Path, required=True,
                        help="folder of FSDD recordings, e.g. ../shared/data/fsdd/recordings")
    parser.add_argument("--takes", type=int, default=10, help="use takes 0..N-1 of every speaker and digit")
    parser.add_argument("--split", choices=["take", "speaker"], default="take",
                        help="take: the lower half of the takes is test; speaker: --test-speakers are test")
    parser.add_argument("--test-speakers", default="nicolas,theo", help="comma-separated, for --split speaker")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    test_speakers = args.test_speakers.split(",") if args.split == "speaker" else None
    try:
        split = fsdd_split(args.fsdd, args.takes, test_speakers)
    except ValueError as error:
        parser.error(str(error))
    print(f"FSDD: {len(split['train'])} train, {len(split['test'])} test files ({args.split}-disjoint)")
    results = []
    for weights in args.weights:
        result = study(weights, split)
        results.append(result)
        scores = "  ".join(f"{pooling} {value:.3f}" for pooling, value in result["accuracy"].items())
        print(f"{weights}: {scores}  ({result['embed_seconds']} s embedding)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(args.out, {"split": args.split, "test_speakers": test_speakers,
                                         "files": {name: len(rows) for name, rows in split.items()},
                                         "results": results}, indent=2)


if __name__ == "__main__":
    main()
