"""Adversarial checks of the harness command line (issue 14 items 6 and 8): two runs into one --out folder,
an unwritable --out, --device cuda without CUDA. Each fails on the code before the fix."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import eval.__main__ as cli
from eval.run import LOCK_FILE, RunFolderBusy, RunSpec, locked_run_folder, run
from eval.suites.mini import build_mini_suite
from tests.builders.paths import REPO

# another HEAR module (log-mel under another name); with $HEAR_TEST_GATE set, load_model blocks until that file
# exists, so a run of it holds its folder as long as the test wants
GATED_MODULE = '''
import os, time
from pathlib import Path
from eval.baselines import logmel

def load_model(*args, **options):
    while "HEAR_TEST_GATE" in os.environ and not Path(os.environ["HEAR_TEST_GATE"]).exists():
        time.sleep(0.05)
    return logmel.load_model(*args, **options)

get_scene_embeddings = logmel.get_scene_embeddings
get_timestamp_embeddings = logmel.get_timestamp_embeddings
'''


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return build_mini_suite(tmp_path_factory.mktemp("suite"), size="tiny", tasks=["fsdd_digits"])


def _run_args(model: str, suite: Path, out: Path) -> list[str]:
    return ["run", "--model", model, "--tasks-dir", str(suite), "--out", str(out), "--grid", "faster",
            "--no-progress"]


def _wait_for(condition, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.1)


@pytest.mark.slow
def test_second_process_into_a_busy_folder_fails_fast_naming_the_holder(suite, tmp_path):
    (tmp_path / "gated_module.py").write_text(GATED_MODULE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
           "HEAR_TEST_GATE": str(tmp_path / "gate"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "shared_run"
    first = subprocess.Popen([sys.executable, "-m", "eval", *_run_args("gated_module", suite, out)], env=env,
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (out / LOCK_FILE).is_file() and (out / LOCK_FILE).read_text().strip())
        second = subprocess.run([sys.executable, "-m", "eval", *_run_args("eval.baselines.logmel", suite, out)],
                                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        assert f"in use by another run (pid {first.pid}" in second.stderr and "gated_module" in second.stderr
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
        (tmp_path / "gate").touch()
        assert first.wait(timeout=300) == 0, first.communicate()[1]
    finally:
        (tmp_path / "gate").touch()
        first.kill() if first.poll() is None else None
    again = subprocess.run([sys.executable, "-m", "eval", *_run_args("eval.baselines.logmel", suite, out)],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    scores = pd.read_csv(out / "scores.csv")
    assert sorted(scores["model"]) == ["eval.baselines.logmel", "gated_module"]  # both models' rows kept


def test_sequential_runs_of_two_models_into_one_folder_keep_both(suite, tmp_path, monkeypatch):
    (tmp_path / "other_model.py").write_text(GATED_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("HEAR_TEST_GATE", raising=False)
    out = tmp_path / "run"
    spec = RunSpec(model="eval.baselines.logmel", tasks_dir=suite, out=out, grid="faster", progress=False)
    first = run(spec)
    second = run(spec.replace(model="other_model"))
    other_seed = run(spec.replace(seed=1))
    scores = pd.read_csv(out / "scores.csv")
    assert sorted(zip(scores["model"], scores["seed"])) == [("eval.baselines.logmel", 0), ("eval.baselines.logmel", 1),
                                                            ("other_model", 0)]
    assert second[0].score == first[0].score  # the same features under two names: two rows, one score
    rerun = run(spec)
    assert rerun == first and len(pd.read_csv(out / "scores.csv")) == 3  # its own row replaced, not duplicated
    assert pd.read_csv(out / "scores.csv").set_index(["model", "seed"]).loc[("eval.baselines.logmel", 1), "score"] \
        == pytest.approx(other_seed[0].score)


def test_lock_is_released_after_a_failed_run(tmp_path):
    with pytest.raises(RuntimeError):
        with locked_run_folder(tmp_path / "run", holder="test"):
            raise RuntimeError("boom")
    with locked_run_folder(tmp_path / "run", holder="again"):
        assert "again" in (tmp_path / "run" / LOCK_FILE).read_text()


def test_lock_held_in_this_process_is_refused_too(tmp_path):
    with locked_run_folder(tmp_path / "run", holder="first holder"):
        with pytest.raises(RunFolderBusy, match="first holder"):
            with locked_run_folder(tmp_path / "run", holder="second"):
                pass


def _read_only_by_chmod(tmp_path: Path, monkeypatch) -> Path:
    parent = tmp_path / "read_only"
    parent.mkdir()
    parent.chmod(0o555)
    if os.access(parent, os.W_OK):  # root ignores permissions
        parent.chmod(0o755)
        pytest.skip("this user can write a mode 0555 folder (root)")
    return parent / "out"


def _read_only_filesystem(tmp_path: Path, monkeypatch) -> Path:
    original = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name == "out":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return tmp_path / "out"


@pytest.mark.parametrize("make_out", [_read_only_by_chmod, _read_only_filesystem])
def test_unwritable_out_is_a_one_line_error(make_out, suite, tmp_path, monkeypatch, capsys):
    out = make_out(tmp_path, monkeypatch)
    try:
        assert cli.main(_run_args("eval.baselines.logmel", suite, out)) == 2
    finally:
        out.parent.chmod(0o755)
    error = capsys.readouterr().err.strip()
    assert error.startswith("hear-eval: error: cannot write the run folder") and str(out) in error
    assert len(error.splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["run", "demo"])
def test_cuda_without_cuda_is_a_one_line_error(command, suite, tmp_path):
    args = _run_args("eval.baselines.logmel", suite, tmp_path / "out") if command == "run" else [
        "demo", "--out", str(tmp_path / "demo"), "--runs-dir", str(tmp_path / "runs"), "--size", "tiny"]
    done = subprocess.run([sys.executable, "-m", "eval", *args, "--device", "cuda"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "sees no CUDA device" in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "demo").exists()
