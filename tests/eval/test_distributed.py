"""``torchrun --nproc_per_node 2 -m eval run`` (gloo, CPU): the same scores.csv as one process, and a rank killed
mid-embedding leaves only whole cache batches; the rerun completes with the same scores."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import eval.__main__ as cli
from eval.distributed import Ranks, check_device
from eval.suites.mini import build_mini_suite
from tests.builders.paths import REPO

TASKS = ["fsdd_digits", "fsdd_events", "fsdd_speakers"]  # scene, event, k-fold
TIMING_COLUMNS = ["embed_seconds", "probe_seconds"]
# log-mel, except that rank 1 dies (no cleanup, like SIGKILL) at its DIE_AT_CALL-th embedding call
KILLABLE_MODULE = textwrap.dedent('''
    import os
    from eval.baselines import logmel
    from eval.baselines.logmel import load_model

    CALLS = [0]


    def _count():
        CALLS[0] += 1
        if os.environ.get("RANK") == "1" and CALLS[0] == int(os.environ.get("DIE_AT_CALL", "0")):
            os._exit(17)


    def get_timestamp_embeddings(audio, model):
        _count()
        return logmel.get_timestamp_embeddings(audio, model)


    def get_scene_embeddings(audio, model):
        _count()
        return logmel.get_scene_embeddings(audio, model)
''')


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(suite, module folder, scores of a single-process run)."""
    root = tmp_path_factory.mktemp("distributed")
    suite = build_mini_suite(root / "suite", size="tiny")
    (root / "modules").mkdir()
    (root / "modules" / "killable_logmel.py").write_text(KILLABLE_MODULE)
    sys.path.insert(0, str(root / "modules"))
    try:
        assert cli.main(run_args(suite, root / "single")) == 0
    finally:
        sys.path.remove(str(root / "modules"))
        sys.modules.pop("killable_logmel", None)
    return suite, root / "modules", read_scores(root / "single")


def run_args(suite: Path, out: Path) -> list[str]:
    return ["run", "--model", "killable_logmel", "--tasks-dir", str(suite), "--tasks", *TASKS, "--out", str(out),
            "--grid", "faster", "--no-progress", "--batch-seconds", "0.5"]


def read_scores(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "scores.csv").drop(columns=TIMING_COLUMNS)


def torchrun(suite: Path, modules: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "-m", "eval", *run_args(suite, out)]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(modules)]), "OMP_NUM_THREADS": "1",
                   **env}
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_ranks_give_the_single_process_scores(setup, tmp_path):
    suite, modules, single = setup
    done = torchrun(suite, modules, tmp_path / "run")
    assert done.returncode == 0, done.stderr[-3000:]
    pd.testing.assert_frame_equal(read_scores(tmp_path / "run"), single)


@pytest.mark.slow
def test_a_rank_killed_mid_embedding_then_rerun_completes_with_the_same_scores(setup, tmp_path):
    suite, modules, single = setup
    killed = torchrun(suite, modules, tmp_path / "run", DIE_AT_CALL="3")
    assert killed.returncode != 0 and not (tmp_path / "run" / "scores.csv").exists()
    batches = sorted((tmp_path / "run" / "embeddings").rglob("batch_*.npz"))
    assert batches, "rank 0 committed none of its batches before the kill"
    for batch in batches:  # every committed batch is whole
        with np.load(batch) as data:
            assert data["embeddings"].size > 0
    rerun = torchrun(suite, modules, tmp_path / "run")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    pd.testing.assert_frame_equal(read_scores(tmp_path / "run"), single)


def test_ranks_split_items_round_robin():
    ranks = [Ranks(rank=r, world_size=3) for r in range(3)]
    assert [[i for i in range(7) if r.owns(i)] for r in ranks] == [[0, 3, 6], [1, 4], [2, 5]]
    assert Ranks().owns(5) and Ranks().is_main and not ranks[1].is_main


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        check_device("cuda")
    check_device("cpu")
