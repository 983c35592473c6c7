"""A HEAR leaderboard submission from a run folder of ``python -m eval run``.

    python -m eval submission RUN_DIR --out DIR [--model-name NAME] [--team ...]

writes
- ``DIR/<task folder>/test.predicted-scores.json``: heareval 2021's score file (its keys and their order: per fold
  ``test_loss``, ``test_score``, ``test_<metric>``..., ``validation_score``, ``epoch``, ``time_in_min``;
  ``aggregated_scores`` (``<key>_mean`` / ``<key>_std``) for k-fold; ``hparams``, ``postprocessing``,
  ``score_mode``, ``embedding_path``), filled from RUN_DIR/tasks/<folder>/<run id>.json;
- ``DIR/leaderboard_row.csv``: the official leaderboard header and one row, every score with 10 significant
  digits as the published file writes them, blank where a task was not run;
- ``DIR/pull_request.md``: the fields of the leaderboard pull-request template (hearbenchmark/hearbenchmark.com
  ``.github/PULL_REQUEST_TEMPLATE.md``), parameters and embedding sizes measured on the model;
- ``DIR/normalised.{csv,md,png}``: per task the rank among the published rows and the z-score against them.

The published rows are read from ``--leaderboard`` (default: the official leaderboard.csv shipped unchanged as
``eval/suites/hear2021_leaderboard.csv``).
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from eval.run import slug
from eval.suites.hear2021 import BY_NAME, TASKS
from hear_embed.atomic_files import write_text_atomically

# the official HEAR leaderboard table, shipped unchanged: hearbenchmark/hearbenchmark.com
# docs/assets/leaderboard.csv at commit fd18a123bbcbe1a2f7bb4b392482f7407523bce6
LEADERBOARD = Path(__file__).resolve().parent / "suites" / "hear2021_leaderboard.csv"
SCORE_DIGITS = 10  # significant digits of the published leaderboard.csv cells
# hparams heareval records beside the grid keys; this harness's MLP is fixed to these (eval/probe.py)
HEAREVAL_FIXED_HPARAMS = {
    "embedding_norm": "<class 'torch.nn.modules.linear.Identity'>",
    "hidden_norm": "<class 'torch.nn.modules.batchnorm.BatchNorm1d'>",
    "norm_after_activation": False,
    "optim": "<class 'torch.optim.adam.Adam'>",
}
INITIALIZATION_NAMES = {"xavier_uniform": "<function xavier_uniform_>", "xavier_normal": "<function xavier_normal_>"}
PRETRAINING_DATA = ("speech", "broad-domain", "music")


def read_run(run_dir: str | Path, label: str | None = None) -> dict[str, dict]:
    """Task folder name → the task result ``python -m eval run`` wrote (RUN_DIR/tasks/<folder>/<run id>.json).

    A run folder may hold several runs (models, seeds); ``label`` picks one, and is needed when there are several."""
    tasks_dir = Path(run_dir) / "tasks"
    files = sorted(tasks_dir.glob("*/*.json"))
    if label is not None:
        files = [path for path in files if path.stem.startswith(slug(label)[:60] + "-")]
    if not files:
        raise ValueError(f"{run_dir} holds no task results{'' if label is None else f' of run label {label!r}'} "
                         f"(expected {tasks_dir}/<task folder>/<run id>.json from python -m eval run)")
    runs = sorted({path.stem for path in files})
    if len(runs) > 1:
        raise ValueError(f"{run_dir} holds the results of several runs ({', '.join(runs)}); choose one with "
                         "--run-label LABEL (the --label of python -m eval run)")
    results = {}
    for path in files:
        try:
            results[path.parent.name] = json.loads(path.read_text())["result"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a task result of python -m eval run ({error})") from error
    return results


def _hparams(best_params: dict) -> dict:
    """heareval's ``hparams`` (its grid keys plus the fixed MLP settings), sorted by key as heareval writes them."""
    hparams = {key: value for key, value in best_params.items() if key != "grid"}
    hparams["initialization"] = INITIALIZATION_NAMES.get(hparams.get("initialization"), hparams.get("initialization"))
    return dict(sorted({**hparams, **HEAREVAL_FIXED_HPARAMS}.items()))


def _test_scores(fold_scores: dict[str, float], evaluation: tuple[str, ...]) -> dict[str, float]:
    """``test_<key>`` in heareval's order: metrics as the task lists them, each followed by its sub-scores; an event
    metric's own value appears again under its first sub-score's name (``_f_measure`` / ``_error_rate``), as
    heareval logs the first element of a score tuple twice."""
    from eval.score import EVENT_METRICS

    out = {}
    for metric in evaluation:
        out[f"test_{metric}"] = fold_scores[metric]
        if metric in EVENT_METRICS:
            first = "error_rate" if metric == "segment_1s_er" else "f_measure"
            out[f"test_{metric}_{first}"] = fold_scores[metric]
            out.update({f"test_{key}": fold_scores[key] for key in sorted(fold_scores) if key.startswith(f"{metric}_")})
    out.update({f"test_{key}": value for key, value in fold_scores.items() if f"test_{key}" not in out})
    return out


def heareval_scores(folder: str, result: dict, evaluation: tuple[str, ...] | None = None,
                    use_scoring_for_early_stopping: bool | None = None) -> dict:
    """The content of heareval's ``test.predicted-scores.json`` for one task result of the harness.
    ``evaluation`` / ``use_scoring_for_early_stopping``: the task's metadata (default: the registry's entry)."""
    from eval.score import maximize

    primary = result["primary_metric"]
    entry = BY_NAME.get(folder)
    evaluation = evaluation or (entry.evaluation if entry else (primary,))
    scoring = use_scoring_for_early_stopping
    if scoring is None:
        scoring = entry.use_scoring_for_early_stopping if entry else True
    scores: dict = {}
    for fold, fold_scores in result["fold_scores"].items():
        detail = result.get("details", {}).get(fold, {})
        scores[fold] = {"test_loss": detail.get("test_loss"), "test_score": fold_scores[primary],
                        **_test_scores(fold_scores, evaluation),
                        "validation_score": detail.get("validation_score"), "epoch": detail.get("epoch"),
                        "time_in_min": detail.get("time_in_min")}
    if len(scores) > 1:  # heareval: pandas mean and std (ddof 1) of every column over the folds
        table = pd.DataFrame.from_dict(scores, orient="index").astype(float)
        scores["aggregated_scores"] = {f"{key}_{stat}": float(getattr(table[key], stat)())
                                       for key in table for stat in ("mean", "std")}
    first = result.get("details", {}).get(next(iter(result["fold_scores"])), {})
    postprocessing = first.get("postprocessing") or {}
    scores.update({
        "hparams": _hparams(result["best_params"]),
        "postprocessing": [[key, value] for key, value in postprocessing.items()],
        "score_mode": "max" if scoring and maximize(primary) else "min",
        "embedding_path": f"embeddings/{folder}",  # the harness's cache holds them; heareval writes its folder
    })
    return scores


def read_leaderboard(path: str | Path = LEADERBOARD) -> pd.DataFrame:
    """The published leaderboard (model column + one column per task), cells as floats (NaN = not evaluated)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"leaderboard file {path} not found; pass --leaderboard with the official leaderboard.csv "
                         "(hearbenchmark/hearbenchmark.com docs/assets/leaderboard.csv)")
    table = pd.read_csv(path, dtype={"model": str})
    unknown = [column for column in table.columns[1:] if column not in {t.column for t in TASKS}]
    if table.columns[0] != "model" or unknown:
        raise ValueError(f"{path}: expected the columns model + the 19 HEAR 2021 task columns; unknown {unknown}")
    return table


def format_score(value: float | None) -> str:
    """A leaderboard cell as the published file writes it: the float rounded to 10 significant digits, in Python's
    shortest repr (so 0 is "0.0"); blank when the task was not run."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(f"{value:.{SCORE_DIGITS}g}"))


def task_scores(results: dict[str, dict]) -> dict[str, float]:
    """Leaderboard column → the run's primary test score (mean over folds for k-fold tasks)."""
    return {BY_NAME[folder].column: float(result["mean"]) for folder, result in results.items() if folder in BY_NAME}


def leaderboard_csv(model_name: str, scores: dict[str, float], header: list[str]) -> str:
    """The official header and one row in its column order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerow([model_name] + [format_score(scores.get(column)) for column in header[1:]])
    return buffer.getvalue()


def normalised_view(scores: dict[str, float], published: pd.DataFrame) -> pd.DataFrame:
    """Per task run: the score, the published rows' mean / sample std / count, z-score and rank (1 = best; every
    leaderboard score is larger-is-better) among the published rows plus this one."""
    rows = []
    for column in published.columns[1:]:
        if column not in scores:
            continue
        values = published[column].dropna().to_numpy(dtype=np.float64)
        score = scores[column]
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        rows.append({"task": column, "score": score, "published_mean": float(np.mean(values)),
                     "published_std": std, "z": (score - float(np.mean(values))) / std if std > 0 else math.nan,
                     "rank": int(1 + np.sum(values > score)), "of": len(values) + 1})
    return pd.DataFrame(rows, columns=["task", "score", "published_mean", "published_std", "z", "rank", "of"])


def markdown_table(view: pd.DataFrame) -> str:
    """The normalised view as a markdown table (4 decimals)."""
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(view.columns) + " |", "|" + " --- |" * len(view.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in view.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def plot_normalised(view: pd.DataFrame, model_name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 0.35 * len(view) + 1.5))
    axis.barh(view["task"], view["z"], color=["tab:blue" if z >= 0 else "tab:red" for z in view["z"].fillna(0)])
    for y, (z, rank, of) in enumerate(zip(view["z"].fillna(0), view["rank"], view["of"])):
        axis.annotate(f"{rank}/{of}", (z, y), xytext=(4 if z >= 0 else -4, 0), textcoords="offset points",
                      ha="left" if z >= 0 else "right", va="center", fontsize=8)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.invert_yaxis()
    axis.set_xlabel("z-score against the published HEAR leaderboard rows (label: rank / models)")
    axis.set_title(model_name)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def model_facts(model: str, weights: str | None, options: dict) -> dict:
    """Trainable parameters and scene / timestamp embedding sizes, measured on 1 s of silence."""
    import torch

    from eval.embed import Embedder

    embedder = Embedder(model, weights=weights, options=options)
    silence = np.zeros((1, embedder.sample_rate), dtype=np.float32)
    scene, _ = embedder.embed(silence, "scene")
    frames, _ = embedder.embed(silence, "event")
    trainable = None
    if isinstance(embedder.model, torch.nn.Module):
        trainable = sum(p.numel() for p in embedder.model.parameters() if p.requires_grad)
    return {"trainable_parameters": trainable, "scene_dim": int(scene.shape[1]), "timestamp_dim": int(frames.shape[2])}


def pull_request_text(args, facts: dict, scores: dict[str, float]) -> str:
    """The leaderboard pull-request template's fields, filled from the options and the model."""
    def field(value) -> str:
        return str(value) if value else "(fill in)"

    boxes = "\n".join(f"* [{'x' if kind in (args.pretraining_data or []) else ' '}] {kind}" for kind in PRETRAINING_DATA)
    missing = [task.column for task in TASKS if task.column not in scores]
    params = facts["trainable_parameters"]
    return "\n".join([
        f"**Team Name:** {field(args.team)}", "", f"**Model Name:** {args.model_name}", "",
        f"**Author(s):** {field(args.authors)}", "", f"**Model URL/GitHub:** {field(args.url)}", "",
        f"**Paper Link:** {field(args.paper)}", "", f"**Model Description:** {field(args.description)}", "",
        "**Pre-training Data:**", boxes, "",
        f"**Number of Model Trainable Parameters:** {params if params is not None else '(not a torch model)'}", "",
        f"**Scene Embedding Dimensions:** {facts['scene_dim']}", "",
        f"**Timestamp Embedding Dimensions:** {facts['timestamp_dim']}", "",
        "**Were you able to evaluate your model on all 19 tasks?:**",
        f"* [{' ' if missing else 'x'}] yes", f"* [{'x' if missing else ' '}] no", "",
        "**If you answered no to the last question, list which tasks you were unable to complete and why:**",
        ", ".join(missing) + " (not in the run folder)" if missing else "", "",
    ])


def _run_model(run_dir: Path) -> tuple[str, str | None, dict, str]:
    """(module, weights, options, label) of a run, from its scores.csv."""
    scores = pd.read_csv(run_dir / "scores.csv", keep_default_na=False)
    row = scores.iloc[0]
    return str(row["model"]), (str(row["weights"]) or None), json.loads(row["options"] or "{}"), str(row["label"])


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="--out folder of python -m eval run")
    parser.add_argument("--out", type=Path, required=True, help="where the submission files go")
    parser.add_argument("--run-label", default=None, help="which run of RUN_DIR (its --label), when it holds several")
    parser.add_argument("--model-name", default=None, help="the leaderboard row's model name (default: the run label)")
    parser.add_argument("--leaderboard", type=Path, default=LEADERBOARD, help="the official leaderboard.csv")
    parser.add_argument("--team", default=None)
    parser.add_argument("--authors", default=None)
    parser.add_argument("--url", default=None)
    parser.add_argument("--paper", default=None)
    parser.add_argument("--description", default=None)
    parser.add_argument("--pretraining-data", nargs="*", choices=PRETRAINING_DATA, default=None)


def run(args) -> int:
    results = read_run(args.run_dir, args.run_label)
    published = read_leaderboard(args.leaderboard)
    module, weights, options, label = _run_model(args.run_dir)
    args.model_name = args.model_name or label
    args.out.mkdir(parents=True, exist_ok=True)
    for folder, result in results.items():
        text = json.dumps(heareval_scores(folder, result), indent=4)
        write_text_atomically(args.out / folder / "test.predicted-scores.json", text)
    scores = task_scores(results)
    write_text_atomically(args.out / "leaderboard_row.csv", leaderboard_csv(args.model_name, scores,
                                                                             list(published.columns)))
    view = normalised_view(scores, published)
    write_text_atomically(args.out / "normalised.csv", view.to_csv(index=False))
    write_text_atomically(args.out / "normalised.md", markdown_table(view))
    if len(view):
        plot_normalised(view, args.model_name, args.out / "normalised.png")
    write_text_atomically(args.out / "pull_request.md", pull_request_text(args, model_facts(module, weights, options),
                                                                           scores))
    skipped = sorted(set(results) - set(BY_NAME))
    if skipped:
        print(f"not HEAR 2021 leaderboard tasks (score files written, no leaderboard column): {skipped}",
              file=sys.stderr)
    print(f"wrote {len(results)} score file(s), leaderboard_row.csv, normalised.*, pull_request.md under {args.out}")
    return 0
