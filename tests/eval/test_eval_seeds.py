"""``python -m eval run --seeds``: the seeds train in one batched model, each seed's row equals a --seed run,
and tables report mean ± std over them."""
from __future__ import annotations

import pandas as pd
import pytest

import eval.__main__ as cli
from eval.report import read_runs
from eval.suites.mini import build_mini_suite

TASKS = ["fsdd_digits", "fsdd_events"]  # a scene and an event task


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return build_mini_suite(tmp_path_factory.mktemp("suite"), size="tiny")


def run(suite, out, cache, *seed_args: str) -> pd.DataFrame:
    assert cli.main(["run", "--model", "eval.baselines.logmel", "--tasks-dir", str(suite), "--tasks", *TASKS,
                     "--out", str(out), "--cache-dir", str(cache), "--grid", "faster", "--no-progress",
                     *seed_args]) == 0
    return pd.read_csv(out / "scores.csv")


def test_seeds_give_one_row_each_equal_to_single_seed_runs(suite, tmp_path):
    together = run(suite, tmp_path / "seeds", tmp_path / "cache", "--seeds", "0", "2")
    assert sorted(zip(together["task"], together["seed"])) == [(t, s) for t in sorted(TASKS) for s in (0, 2)]
    alone = run(suite, tmp_path / "seed2", tmp_path / "cache", "--seed", "2")
    columns = ["task", "score", "std", "validation_score", "all_scores"]
    pd.testing.assert_frame_equal(together[together["seed"] == 2][columns].reset_index(drop=True),
                                  alone[columns].reset_index(drop=True))
    merged = read_runs([tmp_path / "seeds"]).set_index("task")
    for task in TASKS:
        scores = together[together["task"] == task]["score"]
        assert merged.loc[task, "n_seeds"] == 2
        assert merged.loc[task, "score"] == pytest.approx(scores.mean())
        assert merged.loc[task, "std"] == pytest.approx(scores.std(ddof=1), nan_ok=True)
