"""``hear-eval`` / ``python -m eval``: run end to end on the tiny mini-suite, resume after a kill, tables, help and errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import eval.__main__ as cli
from eval.suites.mini import build_mini_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return build_mini_suite(tmp_path_factory.mktemp("suite"), size="tiny")


@pytest.fixture(scope="module")
def logmel_run(suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("logmel")
    code = cli.main(["run", "--model", "eval.baselines.logmel", "--tasks-dir", str(suite), "--out", str(out),
                     "--grid", "faster", "--no-progress"])
    assert code == 0
    return out


def test_run_writes_one_primary_score_per_task(logmel_run):
    scores = pd.read_csv(logmel_run / "scores.csv")
    assert set(scores["task"]) == {"fsdd_digits", "fsdd_events", "fsdd_speakers", "synth_pitch"}
    for column in ("model", "task", "metric", "score", "std", "split", "weights", "options", "protocol", "grid"):
        assert column in scores.columns
    rows = scores.set_index("task")
    assert rows.loc["fsdd_events", "metric"] == "event_onset_200ms_fms"
    assert rows.loc["synth_pitch", "metric"] == "pitch_acc"
    assert rows.loc["fsdd_speakers", "n_folds"] == 3 and rows.loc["fsdd_speakers", "split"] == "mean over test folds"
    folds = json.loads(rows.loc["fsdd_speakers", "all_scores"])
    assert sorted(folds) == ["fold00", "fold01", "fold02"]
    assert rows.loc["fsdd_speakers", "score"] == pytest.approx(sum(f["top1_acc"] for f in folds.values()) / 3)
    assert rows.loc["fsdd_digits", "split"] == "test" and rows.loc["fsdd_digits", "std"] == 0.0
    assert scores["score"].between(0, 1).all() and (scores["grid"] == "faster").all()


def test_finished_run_is_reused_without_recomputing(logmel_run, suite, monkeypatch):
    before = (logmel_run / "scores.csv").read_text()

    def no_probing(*args, **kwargs):
        raise AssertionError("a finished task was probed again")

    monkeypatch.setattr("eval.probe.evaluate_seeds", no_probing)
    assert cli.main(["run", "--model", "eval.baselines.logmel", "--tasks-dir", str(suite), "--out", str(logmel_run),
                     "--grid", "faster", "--no-progress"]) == 0
    assert (logmel_run / "scores.csv").read_text() == before


def test_killed_run_resumes_with_identical_scores(suite, tmp_path, fake_module):
    module = __import__(fake_module)
    args = ["run", "--model", fake_module, "--tasks-dir", str(suite), "--grid", "faster", "--no-progress",
            "--tasks", "fsdd_digits", "fsdd_speakers", "--batch-seconds", "4"]
    assert cli.main([*args, "--out", str(tmp_path / "whole")]) == 0
    uninterrupted_calls = len(module.CALLS)
    module.CALLS.clear()
    module.FAIL_AT_CALL = uninterrupted_calls - 2  # dies inside the second task's embedding
    with pytest.raises(RuntimeError, match="simulated kill"):
        cli.main([*args, "--out", str(tmp_path / "killed")])
    assert len(list((tmp_path / "killed" / "tasks" / "fsdd_digits").glob("*.json"))) == 1  # the first task was kept
    calls_before_kill = len(module.CALLS)
    module.FAIL_AT_CALL = None
    module.CALLS.clear()
    assert cli.main([*args, "--out", str(tmp_path / "killed")]) == 0
    assert len(module.CALLS) == uninterrupted_calls - calls_before_kill == 2
    whole = pd.read_csv(tmp_path / "whole" / "scores.csv").drop(columns=["embed_seconds", "probe_seconds"])
    resumed = pd.read_csv(tmp_path / "killed" / "scores.csv").drop(columns=["embed_seconds", "probe_seconds"])
    pd.testing.assert_frame_equal(whole, resumed)


def test_table_writes_stamped_markdown_csv_and_plots(logmel_run, suite, tmp_path, fake_module):
    other = tmp_path / "fake"
    assert cli.main(["run", "--model", fake_module, "--tasks-dir", str(suite), "--out", str(other), "--grid", "faster",
                     "--no-progress", "--tasks", "fsdd_digits", "synth_pitch", "--label", "fake model"]) == 0
    results = tmp_path / "results"
    (results).mkdir()
    pd.DataFrame({"model": ["fake model", "eval.baselines.logmel"], "gmacs": [0.5, 0.01]}).to_csv(
        results / "efficiency.csv", index=False)
    assert cli.main(["table", str(logmel_run), str(other), "--out", str(results)]) == 0
    markdown = (results / "comparison.md").read_text()
    for expected in ("- command: hear-eval table", "- date: ", "- machine: ", "cores", "grid: faster",
                     "| fsdd_digits | top1_acc |", "fake model", "eval.baselines.logmel"):
        assert expected in markdown
    table = pd.read_csv(results / "comparison.csv", comment="#")
    assert len(table) == 6 and set(table["label"]) == {"eval.baselines.logmel", "fake model"}
    assert (results / "comparison.csv").read_text().startswith("# command: hear-eval table")
    for plot in ("comparison_scores.png", "comparison_score_vs_gmacs.png"):
        assert (results / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_broken_task_stops_the_run_before_any_compute(suite, tmp_path, capsys):
    import shutil

    broken = tmp_path / "tasks"
    shutil.copytree(suite / "synth_pitch", broken / "synth_pitch")
    for wav in list((broken / "synth_pitch" / "16000" / "test").glob("*.wav"))[:2]:
        wav.unlink()
    code = cli.main(["run", "--model", "eval.baselines.logmel", "--tasks-dir", str(broken), "--out", str(tmp_path / "o"),
                     "--no-progress"])
    assert code == 2
    error = capsys.readouterr().err
    assert error.count("missing audio file") == 2 and "synth_pitch" in error
    assert not (tmp_path / "o" / "embeddings").exists()


@pytest.mark.parametrize("command,flag", [("run", "--model-options"), ("table", "RUN_DIR"), ("demo", "--runs-dir")])
def test_help_explains_every_subcommand(command, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0 and flag in capsys.readouterr().out


def test_missing_lazy_subcommand_is_reported(monkeypatch, capsys):
    monkeypatch.setitem(cli.LAZY_COMMANDS, "bench", ("eval.no_such_bench_module", "efficiency"))
    assert cli.main(["bench"]) == 2
    assert "eval.no_such_bench_module is not available" in capsys.readouterr().err


def test_module_entry_point_and_bad_options():
    result = subprocess.run([sys.executable, "-m", "eval", "run", "--model", "x", "--tasks-dir", ".", "--out", "o",
                             "--model-options", "[1, 2]"], capture_output=True, text=True)
    assert result.returncode == 2 and "--model-options must be a JSON object" in result.stderr


def test_gmacs_are_matched_by_label_or_by_module_of_the_same_size():
    from eval.report import gmacs_points

    scores = pd.DataFrame({"label": ["full", "small", "named"], "model": ["hear_embed", "hear_embed", "other"],
                           "params_millions": [11.446, 2.1, 5.0], "score": [0.5, 0.6, 0.7]})
    efficiency = pd.DataFrame({"model": ["hear_embed plain", "hear_embed fast", "named"], "params_M": [11.45, 11.45, 1.0],
                               "gmacs_10s": [8.2, 9.0, 3.0]})
    assert gmacs_points(scores, efficiency, "gmacs_10s") == [("full", 8.2, 0.5), ("named", 3.0, 0.7)]


def test_runs_differing_only_in_probe_seed_are_averaged(tmp_path):
    from eval.report import SCORE_COLUMNS, read_runs, write_report

    def run(name, label, seed, digits, speakers):
        rows = [{"model": "m", "label": label, "task": "digits", "metric": "top1_acc", "score": digits, "std": 0.0,
                 "n_folds": 1, "validation_score": digits, "protocol": "heareval-mlp", "grid": "fast", "seed": seed},
                {"model": "m", "label": label, "task": "speakers", "metric": "top1_acc", "score": speakers, "std": 0.05,
                 "n_folds": 5, "validation_score": speakers, "protocol": "heareval-mlp", "grid": "fast", "seed": seed}]
        (tmp_path / name).mkdir()
        pd.DataFrame(rows, columns=SCORE_COLUMNS).to_csv(tmp_path / name / "scores.csv", index=False)
        return tmp_path / name

    runs = [run("a0", "A", 0, 0.5, 0.9), run("a1", "A", 1, 0.7, 0.8), run("a2", "A", 2, 0.9, 0.7), run("b", "B", 0, 0.6, 0.6)]
    scores = read_runs(runs).set_index(["label", "task"])
    assert scores.loc[("A", "digits"), "score"] == pytest.approx(0.7)
    assert scores.loc[("A", "digits"), "std"] == pytest.approx(0.2)  # sample std over the three seeds
    assert scores.loc[("A", "speakers"), "n_seeds"] == 3 and scores.loc[("A", "speakers"), "seed"] == "0 1 2"
    assert scores.loc[("B", "speakers"), "std"] == pytest.approx(0.05)  # one run keeps its fold std
    stale_plot = tmp_path / "results" / "seeds_score_vs_gmacs.png"  # from an earlier table; no efficiency.csv now
    stale_plot.parent.mkdir()
    stale_plot.write_bytes(b"old")
    write_report(runs, tmp_path / "results", "test", name="seeds")
    assert not stale_plot.exists()
    markdown = (tmp_path / "results" / "seeds.md").read_text()
    assert "| digits | top1_acc | 0.700 ± 0.200 (3 seeds) | 0.600 |" in markdown
    assert "mean ± sample std over N probe seeds" in markdown
    with pytest.raises(ValueError, match="same model label, task and probe seed"):
        read_runs([runs[0], runs[0]])


@pytest.mark.parametrize("n_models", [1, 5])
def test_score_plot_keeps_title_and_labels_inside_and_apart(n_models, monkeypatch):
    """The demo plot's title is not clipped and its task labels do not overlap (long metric names included)."""
    from eval import report

    figures = []
    monkeypatch.setattr(report, "_stamp_and_save", lambda figure, path, stamp: figures.append(figure))
    tasks = [("fsdd_digits", "top1_acc"), ("fsdd_events", "event_onset_200ms_fms"),
             ("fsdd_speakers", "top1_acc"), ("synth_pitch", "pitch_acc")]
    scores = pd.DataFrame([{"label": f"model number {k} with a long name", "task": task, "metric": metric,
                            "score": 0.5, "std": 0.1, "n_folds": 1, "n_seeds": 3, "protocol": "heareval-mlp",
                            "grid": "fast"} for k in range(n_models) for task, metric in tasks])
    report.plot_scores(scores, None, {})
    figure = figures[0]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    inside = figure.bbox
    title = figure._suptitle.get_window_extent(renderer)
    assert inside.x0 <= title.x0 and title.x1 <= inside.x1 and title.y1 <= inside.y1
    labels = [label.get_window_extent(renderer) for label in figure.axes[0].get_xticklabels()]
    assert len(labels) == 4 and all(inside.x0 <= box.x0 and box.y0 >= inside.y0 for box in labels)
    assert not any(a.overlaps(b) for i, a in enumerate(labels) for b in labels[i + 1:])
    legend = figure.axes[0].get_legend().get_window_extent(renderer)
    assert legend.x1 <= inside.x1


@pytest.mark.parametrize("kfold", [False, True])
def test_fold_progress_bar_only_when_there_are_folds_to_retrain(kfold, capsys):
    from eval import synthetic
    from eval.probe import evaluate_task

    task = synthetic.scene_task(kfold=kfold)
    evaluate_task(task, synthetic.scene_features(task), grid="faster", n_grid_points=1, progress=True)
    assert ("folds" in capsys.readouterr().err) == kfold  # no empty "folds: 0it" bar for train/valid/test


@pytest.mark.parametrize("argv, default_out", [
    (["run", "--model", "m", "--tasks-dir", "t"], "runs/m"),
    (["run", "--model", "m", "--weights", "tiny", "--tasks-dir", "t"], "runs/m_tiny"),
    (["table", "r"], "runs/tables"),
    (["demo"], "runs/demo"),
])
def test_outputs_default_to_runs_in_the_current_directory(argv, default_out):
    """Nothing goes into the repository's results/ unless asked: defaults are relative paths under runs/."""
    args = cli.build_parser(argv[0]).parse_args(argv)
    out = cli.run_spec(args).out if argv[0] == "run" else args.out
    assert out == Path(default_out) and not out.is_absolute()


@pytest.mark.parametrize("command, shown", [("run", "(default: default)"), ("demo", "(default: runs/demo)"),
                                            ("table", "(default: runs/tables)")])
def test_help_shows_defaults(command, shown, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    assert shown in " ".join(capsys.readouterr().out.split())


def test_bench_subcommand_is_still_wired(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0 and "usage: hear-eval bench" in capsys.readouterr().out
