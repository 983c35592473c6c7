"""``eval table`` with baselines: efficiency columns from a bench table, a GMACs point per benchmarked model,
the published scores in their own labelled block, and every baseline without a pretrained run named with why."""
from __future__ import annotations

import pandas as pd

from eval.report import SCORE_COLUMNS, gmacs_points, write_report


def _run(folder, label, model, weights, score):
    rows = [{"model": model, "weights": weights, "label": label, "task": "digits", "metric": "top1_acc", "score": score,
             "std": 0.0, "n_folds": 1, "validation_score": score, "protocol": "heareval-mlp", "grid": "faster", "seed": 0}]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=SCORE_COLUMNS).to_csv(folder / "scores.csv", index=False)
    return folder


def _efficiency(path):
    rows = [{"model": "hear_embed fast", "threads": 1, "clip_s": 10.0, "rtf_median": 0.01, "params_M": 11.45,
             "gmacs_10s": 8.2},
            {"model": "beats-iter3", "threads": 1, "clip_s": 10.0, "rtf_median": 0.2, "params_M": 90.31, "gmacs_10s": 95.0},
            {"model": "beats-iter3", "threads": 2, "clip_s": 10.0, "rtf_median": 0.1, "params_M": 90.31, "gmacs_10s": 95.0}]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_table_with_baselines_efficiency_and_published_blocks(tmp_path):
    runs = [_run(tmp_path / "h", "hear_embed (tiny)", "hear_embed", "tiny", 0.8),
            _run(tmp_path / "b", "beats (random)", "eval.baselines.beats", "random", 0.6),
            _run(tmp_path / "l", "log-mel", "eval.baselines.logmel", "", 0.5)]
    efficiency = _efficiency(tmp_path / "bench.csv")
    written = write_report(runs, tmp_path / "out", "test", name="t", efficiency_path=efficiency, published=True)
    markdown = (tmp_path / "out" / "t.md").read_text()
    assert "| beats (random) | 90.31 | 95.00 | 0.2000 |" in markdown  # one thread, not the 2-thread row
    assert "| log-mel | not benchmarked" in markdown
    assert "`eval.baselines.beats`: random weights only" in markdown
    assert "`eval.baselines.wav2vec2`: not run (pretrained weights not available offline" in markdown
    published = markdown.split("## Published scores (NOT measured here")[1]
    assert "CP-JKU PaSST base (86M)" in published and "ESC-50" in published
    assert "beats (random)" not in published  # measured rows never mix with published ones
    assert any(path.name == "t_score_vs_gmacs.png" for path in written)


def test_baseline_modules_find_their_bench_rows():
    scores = pd.DataFrame({"label": ["w", "x"], "model": ["eval.baselines.wav2vec2", "eval.baselines.ast"],
                           "params_millions": [None, None], "score": [0.5, 0.6]})
    efficiency = pd.DataFrame({"model": ["wav2vec2-base"], "params_M": [94.4], "gmacs_10s": [70.0]})
    assert gmacs_points(scores, efficiency, "gmacs_10s") == [("w", 70.0, 0.5)]
