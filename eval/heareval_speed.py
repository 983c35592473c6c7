"""Wall time of our protocol vs the real heareval 2021.1.3 on the same cached embeddings (and their test scores).

    python -m eval.heareval_speed --grid default --out results/heareval_speed.md

Builds a synthetic scene task, its 3-fold variant and an event task (eval/synthetic.py), writes them in
heareval's embedding layout, runs heareval's prediction runner (patched by eval.heareval_compat) in a subprocess
and our ``evaluate_task`` in this process (batched grid, and with ``--sequential`` also the one-at-a-time
reference), with the same grid and number of grid points. heareval's time is the one it records itself in
prediction-done.json (imports excluded); ours is evaluate_task's wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from eval import synthetic
from hear_embed.atomic_files import write_text_atomically
from eval.heareval_compat import write_embedding_dir
from eval.probe import evaluate_task
from eval.provenance import markdown_header

REPO = Path(__file__).resolve().parents[1]


def _heareval(task, features, work: Path, grid: str, n_points: int, threads: int) -> tuple[float, dict]:
    """(seconds heareval reports for task_predictions, its test scores of the first test split)."""
    embedding_dir = write_embedding_dir(task.metadata, list(task.label_vocab), features, work / task.name)
    command = [sys.executable, "-m", "eval.heareval_compat", str(embedding_dir), "--grid", grid,
               "--grid-points", str(n_points)]
    done = subprocess.run(command, cwd=work, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)})
    if done.returncode != 0:
        raise RuntimeError(f"heareval failed on {task.name}:\n{done.stderr[-3000:]}")
    seconds = json.loads((embedding_dir / "prediction-done.json").read_text())["time"]
    scores = json.loads((embedding_dir / "test.predicted-scores.json").read_text().replace("Infinity", "1e999"))
    first = task.splits[0] if task.split_mode != "trainvaltest" else "test"
    return seconds, {k.removeprefix("test_"): v for k, v in scores[first].items() if k.startswith("test_")}


def _ours(task, features, grid: str, n_points: int, threads: int, batched: bool) -> tuple[float, dict]:
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch imports its compiler lazily here (~4 s): untimed
    start = time.perf_counter()
    result = evaluate_task(task, features, grid=grid, n_grid_points=n_points, progress=False, num_threads=threads,
                           batched=batched)
    first = task.splits[0] if task.split_mode != "trainvaltest" else "test"
    return time.perf_counter() - start, result.fold_scores[first]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", nargs="+", default=["default"], choices=["default", "fast", "faster"])
    parser.add_argument("--grid-points", type=int, default=8)
    parser.add_argument("--scene-clips", type=int, default=300, help="clips per split of the scene task")
    parser.add_argument("--event-files", type=int, default=20, help="files per split of the event task")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    parser.add_argument("--sequential", action="store_true", help="also time our one-at-a-time reference path")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "heareval_speed.md",
                        help="report file (default runs/heareval_speed.md; results/ only when asked)")
    args = parser.parse_args(argv)

    scene = synthetic.scene_task(evaluation=("top1_acc", "mAP"))
    kfold = synthetic.scene_task(kfold=True, evaluation=("top1_acc", "mAP"))
    event = synthetic.event_task(
        evaluation=("event_onset_offset_50ms_20perc_fms", "event_onset_200ms_fms", "segment_1s_er"))
    cases = [
        (scene, synthetic.scene_features(scene, n=args.scene_clips, noise=0.8, flip=0.1),
         f"scene, 3 labels, {args.scene_clips} clips/split, dim 16"),
        (kfold, synthetic.scene_features(kfold, n=args.scene_clips, noise=0.8, flip=0.1),
         f"k-fold scene, 3 folds × {args.scene_clips} clips, 3 labels, dim 16"),
        (event, synthetic.event_features(event, n_files=args.event_files, hop_ms=25.0, noise=3.0),
         f"event, 2 labels, {args.event_files} files/split × 160 frames (25 ms hop), dim 16"),
    ]
    load_before = os.getloadavg()
    rows, all_scores = [], []
    with tempfile.TemporaryDirectory() as work:
        for grid in args.grid:
            for index, (task, features, label) in enumerate(cases):  # one folder per case: heareval skips done ones
                theirs_s, theirs = _heareval(task, features, Path(work) / grid / str(index), grid, args.grid_points,
                                             args.threads)
                ours_s, ours = _ours(task, features, grid, args.grid_points, args.threads, batched=True)
                sequential = ""
                if args.sequential:
                    sequential_s, sequential_scores = _ours(task, features, grid, args.grid_points, args.threads,
                                                            batched=False)
                    if sequential_scores != ours:
                        raise RuntimeError(f"{task.name}: batched {ours} != sequential {sequential_scores}")
                    sequential = f" {sequential_s:.1f} |"
                primary = task.evaluation[0]
                rows.append(f"| {label} | `{grid}` | {theirs_s:.1f} |{sequential} {ours_s:.1f} | "
                            f"{theirs_s / ours_s:.1f}x | {theirs[primary]:.4f} | {ours[primary]:.4f} | {primary} |")
                all_scores.append(f"- {label}, `{grid}`: heareval "
                                  f"{ {k: round(v, 4) for k, v in theirs.items() if k in ours} }; "
                                  f"ours { {k: round(v, 4) for k, v in ours.items()} }")
                print(rows[-1], all_scores[-1], sep="\n", flush=True)
    load_after = os.getloadavg()
    command = "python -m eval.heareval_speed " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        "# Harness vs real heareval 2021.1.3: wall time on the same cached embeddings",
        "",
        *markdown_header(command)[:4],  # command, date, machine, versions
        f"- Threads: {args.threads} torch thread(s) on both sides, CPU only",
        f"- Load average (1 min) before / after: {load_before[0]:.1f} / {load_after[0]:.1f} "
        "(the machine is shared; both sides ran under the same load, one after the other)",
        f"- {args.grid_points} grid points on both sides; heareval time = its own "
        "prediction-done.json time (imports excluded); ours = `evaluate_task` wall time with the grid points "
        "trained as one batched model" + ("; ours sequential = the one-at-a-time reference path (same scores, "
                                          "checked)" if args.sequential else "") + ".",
        "- Test scores: the first test split (k-fold: fold00).",
        "",
        "| task | grid | heareval (s) |" + (" ours sequential (s) |" if args.sequential else "")
        + " ours (s) | speed-up | heareval test primary | ours test primary | metric |",
        "|---|---|---|" + ("---|" if args.sequential else "") + "---|---|---|---|---|",
        *rows,
        "",
        "All test scores (cross-check of the two implementations on the same embeddings):",
        "",
        *all_scores,
        "",
    ])
    write_text_atomically(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
