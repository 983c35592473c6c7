"""``python -m eval``: run the HEAR protocol on task folders, compare runs, and the bundled demo.

  run       validate -> embed -> probe -> score every task folder; writes OUT/scores.csv (resumable)
  table     task x model comparison tables and plots from run folders
  demo      build the mini-suite, evaluate the bundled models with the fast grid, write results/
  bench     efficiency benchmark (eval.bench)      finetune  fine-tuning protocol (eval.finetune)
"""
from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

from eval.embed import Embedder, embed_task, task_identity, write_json_atomically
from eval.report import write_report, write_scores_csv
from eval.tasks import TaskError, find_tasks, load_task, validate_task

GRIDS = ("default", "fast", "faster")
LAZY_COMMANDS = {"bench": ("eval.bench", "efficiency benchmark: parameters, GMACs, real-time factor"),
                 "finetune": ("eval.finetune", "the paper's fine-tuning protocol on a task")}
REPO_ROOT = Path(__file__).resolve().parents[1]


def _command_line(argv: list[str]) -> str:
    return "python -m eval " + " ".join(shlex.quote(arg) for arg in argv)


def _model_options(text: str) -> dict:
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--model-options must be a JSON object: {error}") from error
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(f"--model-options must be a JSON object, got {text!r}")
    return options


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="import name of a HEAR-API module, e.g. hear_embed or "
                        "eval.baselines.logmel")
    parser.add_argument("--weights", default=None, help="passed to load_model as its first argument (a file, or "
                        "a name the module knows such as 'tiny' or 'random'); omitted: load_model(**options)")
    parser.add_argument("--model-options", type=_model_options, default={}, metavar="JSON",
                        help='keyword options for load_model, as a JSON object, e.g. \'{"layer": 4}\'')
    parser.add_argument("--tasks-dir", required=True, type=Path, help="folder holding task folders in heareval's "
                        "format (each with task_metadata.json)")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="NAME", help="only these tasks (folder or "
                        "task_name); default: every task under --tasks-dir")
    parser.add_argument("--out", required=True, type=Path, help="run folder: scores.csv, per-task results "
                        "(tasks/*.json) and, unless --cache-dir is given, the embedding cache")
    parser.add_argument("--grid", choices=GRIDS, default="default", help="probe hyperparameter grid: default "
                        "(heareval's), fast (<= 50 epochs) or faster (tiny MLPs, 10 epochs)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where embeddings and probes run")
    parser.add_argument("--seed", type=int, default=0, help="probe training seed")
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default OUT/embeddings); "
                        "keyed by module, weights identity, options and task, so runs may share it")
    parser.add_argument("--batch-seconds", type=float, default=60.0, help="at most this much audio per embedding "
                        "batch (bounds memory); files of equal length are batched together")
    parser.add_argument("--label", default=None, help="model name in tables (default: MODULE or MODULE[WEIGHTS])")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _label(args) -> str:
    return args.label or (f"{args.model}[{args.weights}]" if args.weights else args.model)


def _result_key(args, embedder: Embedder, folder: Path) -> dict:
    return {"model": args.model, "weights": embedder.weights_key, "options": args.model_options, "grid": args.grid,
            "seed": args.seed, "task_identity": task_identity(load_task(folder))}


def _score_row(args, result: dict, embedder: Embedder) -> dict:
    scores = result["fold_scores"]
    count = embedder.parameter_count
    return {"model": args.model, "weights": args.weights or "", "options": json.dumps(args.model_options, sort_keys=True),
            "params_millions": None if count is None else round(count / 1e6, 3),
            "label": _label(args), "task": result["task"], "metric": result["primary_metric"], "score": result["mean"],
            "std": result["std"], "split": "test" if list(scores) == ["test"] else "mean over test folds",
            "n_folds": len(scores), "validation_score": result["validation_score"], "protocol": result["protocol"],
            "grid": args.grid, "seed": args.seed, "embed_seconds": round(result["embed_seconds"], 2),
            "probe_seconds": round(result["probe_seconds"], 2), "all_scores": json.dumps(scores, sort_keys=True)}


def _evaluate(task, embedder: Embedder, args, cache_dir: Path) -> dict:
    from eval.probe import evaluate_task

    start = time.perf_counter()
    features = embed_task(task, embedder, cache_dir, batch_seconds=args.batch_seconds, progress=not args.no_progress)
    embedded = time.perf_counter()
    result = evaluate_task(task, features, grid=args.grid, device=args.device, seed=args.seed,
                           progress=not args.no_progress)
    return {"task": task.name, "primary_metric": result.primary_metric, "fold_scores": result.fold_scores,
            "mean": result.mean, "std": result.std, "best_params": result.best_params,
            "validation_score": result.validation_score, "protocol": result.protocol, "details": result.details,
            "embed_seconds": embedded - start, "probe_seconds": time.perf_counter() - embedded}


def run(args) -> int:
    """validate -> embed -> probe -> score; finished tasks (OUT/tasks/<task>.json) are reused as they are."""
    embedder = Embedder(args.model, weights=args.weights, options=args.model_options, device=args.device)
    folders = find_tasks(args.tasks_dir, args.tasks)
    cache_dir = args.cache_dir or args.out / "embeddings"
    pending, results = [], {}
    for folder in folders:
        done = args.out / "tasks" / f"{folder.name}.json"
        try:
            key = _result_key(args, embedder, folder)
        except TaskError:  # reported in full by validate_task below
            pending.append((folder, None, done))
            continue
        if done.is_file() and json.loads(done.read_text()).get("key") == key:
            results[folder] = json.loads(done.read_text())["result"]
        else:
            pending.append((folder, key, done))
    problems = []
    tasks = {}
    for folder, _, _ in pending:  # every task is checked before any compute is spent
        try:
            tasks[folder] = validate_task(folder, embedder.sample_rate)
        except TaskError as error:
            problems.append(str(error))
    if problems:
        print("\n\n".join(problems), file=sys.stderr)
        return 2
    for folder, key, done in pending:
        print(f"[{_label(args)}] {tasks[folder].name}: embedding and probing ({args.grid} grid)", file=sys.stderr)
        results[folder] = _evaluate(tasks[folder], embedder, args, cache_dir)
        write_json_atomically(done, {"key": key, "result": results[folder]})
    rows = [_score_row(args, results[folder], embedder) for folder in folders]
    write_scores_csv(args.out / "scores.csv", rows)
    for row in rows:
        print(f"{row['label']}\t{row['task']}\t{row['metric']}\t{row['score']:.4f} ± {row['std']:.4f}")
    return 0


def table(args) -> int:
    written = write_report(args.run_dirs, args.out, command=args.command_line, name=args.name,
                           efficiency_path=args.efficiency, published=args.published)
    print(Path(written[0]).read_text())
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _demo_models(args) -> list[tuple[str, str, str | None]]:
    """(label, module, weights) of the demo's models; skipped ones are announced."""
    from hear_embed import weights as hear_weights

    models = []
    if (hear_weights.PACKAGED / hear_weights.PACKAGED_FILES["acoustic_model"]).is_file():
        models.append(("hear_embed (tiny)", "hear_embed", "tiny"))
        # the floor pretraining must beat: the same architecture, untrained
        models.append(("hear_embed (tiny arch, random init)", "hear_embed", "random-tiny"))
    else:
        print("demo: skipping hear_embed 'tiny': hear_embed/checkpoints/tiny.pt is not built yet", file=sys.stderr)
        models.append(("hear_embed (random init)", "hear_embed", "random"))
    models.append(("log-mel baseline", "eval.baselines.logmel", None))
    authors = hear_weights.cache_dir() / hear_weights.AUTHORS_ACOUSTIC_MODEL.filename
    if authors.is_file():
        models.append(("hear_embed (authors)", "hear_embed", "authors"))
    else:
        print(f"demo: skipping the authors' weights: not in the cache ({authors}); the demo never downloads",
              file=sys.stderr)
    return models


def demo(args) -> int:
    """Build the mini-suite, evaluate the bundled models with the fast grid, write tables and plots."""
    from eval.suites.mini import build_mini_suite

    start = time.perf_counter()
    suite = build_mini_suite(args.cache_dir, size=args.size)
    build_seconds = time.perf_counter() - start
    print(f"demo: mini-suite at {suite} ({build_seconds:.1f} s)", file=sys.stderr)
    runs = []
    for label, module, weights in _demo_models(args):
        for seed in args.seeds:  # the embeddings are computed once and shared by the seeds' probes
            run_args = argparse.Namespace(
                model=module, weights=weights, model_options={}, tasks_dir=suite, tasks=None,
                out=args.runs_dir / _slug(label) / f"seed{seed}", grid=args.grid, device=args.device, seed=seed,
                cache_dir=args.runs_dir / "embeddings", batch_seconds=60.0, label=label, no_progress=args.no_progress)
            code = run(run_args)
            if code:
                return code
            runs.append(run_args.out)
    written = write_report(runs, args.out, command=args.command_line, name="mini_suite")
    print(Path(written[0]).read_text())
    for run_dir in runs:
        scores = pd.read_csv(run_dir / "scores.csv")
        print(f"wall time {scores['label'][0]}: embed {scores['embed_seconds'].sum():.1f} s, "
              f"probe {scores['probe_seconds'].sum():.1f} s (as measured when each task was computed)")
    print(f"wall time mini-suite build: {build_seconds:.1f} s")
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_")


def _lazy_command(name: str, parser: argparse.ArgumentParser, chosen: str | None) -> None:
    """Let ``eval.bench`` / ``eval.finetune`` add their flags, importing them only when they are chosen."""
    module_name, _ = LAZY_COMMANDS[name]
    if chosen != name:
        return
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        reason = str(error)
        parser.set_defaults(func=lambda args: _missing(module_name, reason))
        return
    module.add_arguments(parser)
    parser.set_defaults(func=module.run)


def _missing(module_name: str, reason: str) -> int:
    print(f"{module_name} is not available in this checkout ({reason})", file=sys.stderr)
    return 2


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="evaluate one HEAR module on task folders")
    _add_run_arguments(run_parser)
    run_parser.set_defaults(func=run)

    table_parser = commands.add_parser("table", help="comparison tables and plots from run folders")
    table_parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="--out folders of `run`")
    table_parser.add_argument("--out", type=Path, default=REPO_ROOT / "results", help="where tables and plots go")
    table_parser.add_argument("--name", default="comparison", help="file name stem of the tables and plots")
    table_parser.add_argument("--efficiency", type=Path, default=None, help="bench table (efficiency.csv of `eval "
                              "bench`) for the efficiency columns and the score-vs-GMACs plot; default OUT/efficiency.csv")
    table_parser.add_argument("--published", action="store_true", help="add the published leaderboard scores "
                              "(eval/baselines/published.csv) as a separate block, and which baselines lack a run")
    table_parser.set_defaults(func=table)

    demo_parser = commands.add_parser("demo", help="mini-suite with the bundled models and the fast grid")
    demo_parser.add_argument("--out", type=Path, default=REPO_ROOT / "results", help="where tables and plots go")
    demo_parser.add_argument("--runs-dir", type=Path, default=Path("runs") / "demo",
                             help="run folders and the shared embedding cache")
    demo_parser.add_argument("--cache-dir", type=Path, default=None, help="where the mini-suite is built "
                             "(default $HEAR_EMBED_EVAL_CACHE or ~/.cache/hear_embed_eval)")
    demo_parser.add_argument("--grid", choices=GRIDS, default="fast", help="probe grid (default fast)")
    demo_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                             help="probe seeds; tables give mean ± std over them (default 0 1 2)")
    demo_parser.add_argument("--size", choices=("full", "tiny"), default="full", help="mini-suite size")
    demo_parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    demo_parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo_parser.set_defaults(func=demo)

    for name, (module_name, help_text) in LAZY_COMMANDS.items():
        lazy = commands.add_parser(name, help=f"{help_text} ({module_name})")
        _lazy_command(name, lazy, chosen)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(chosen).parse_args(argv)
    args.command_line = _command_line(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
