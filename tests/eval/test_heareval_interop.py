"""The README's heareval commands: ``hear-embed path`` names the bundled weights by file, heareval's embedding
runner takes it, and ``python -m eval.heareval_compat`` runs heareval's prediction step on torch >= 2.6."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval.suites.mini import build_mini_suite
from hear_embed.cli import main as hear_embed_main
from hear_embed.weights import PACKAGED, PACKAGED_FILES
from tests.builders.paths import REPO



def test_path_prints_the_packaged_tiny_checkpoint(capsys):
    assert hear_embed_main(["path", "tiny"]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.is_absolute() and printed == (PACKAGED / PACKAGED_FILES["acoustic_model"]).resolve()


@pytest.mark.parametrize("source, message", [("random", "have no file"), ("no/such/file.pt", "neither")])
def test_path_of_something_without_a_file_is_a_one_line_error(source, message, capsys):
    assert hear_embed_main(["path", source]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


@pytest.mark.heareval
@pytest.mark.slow
def test_documented_heareval_commands_run(tmp_path):
    """heareval's own embedding runner with --model "$(hear-embed path tiny)", then its prediction runner through
    eval.heareval_compat, as the README says, in subprocesses started outside the repository."""
    pytest.importorskip("heareval")
    suite = build_mini_suite(tmp_path / "suite", size="tiny", tasks=["fsdd_digits"])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    weights = subprocess.run([sys.executable, "-m", "hear_embed.cli", "path", "tiny"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout.strip()
    embed = subprocess.run([sys.executable, "-m", "heareval.embeddings.runner", "hear_embed", "--model", weights,
                            "--tasks-dir", str(suite), "--task", "fsdd_digits", "--embeddings-dir", "embeddings"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert embed.returncode == 0, embed.stderr[-3000:]
    task_dir = tmp_path / "embeddings" / "hear_embed" / "fsdd_digits"
    assert (task_dir / "test.embeddings.npy").is_file()
    predict = subprocess.run([sys.executable, "-m", "eval.heareval_compat", str(task_dir), "--grid", "faster",
                              "--grid-points", "1"], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=900)
    assert predict.returncode == 0, predict.stderr[-3000:]
    scores = json.loads((task_dir / "test.predicted-scores.json").read_text().replace("Infinity", "1e999"))
    assert 0.0 <= scores["test"]["test_top1_acc"] <= 1.0
