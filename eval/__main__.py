"""``hear-eval`` (= ``python -m eval``): run the HEAR protocol on task folders, compare runs, the bundled demo.

  run       validate -> embed -> probe -> score every task folder; writes OUT/scores.csv (resumable)
  table     task x model comparison tables and plots from run folders
  demo      build the mini-suite, evaluate the bundled models with the fast grid, tables and plots
  bench     efficiency benchmark (eval.bench)      finetune  fine-tuning protocol (eval.finetune)

Outputs go under runs/ in the current directory unless --out says otherwise; nothing here writes the
repository's committed results/ unless it is named with --out results.
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

from eval.report import write_report
from eval.run import DEFAULT_RUNS, GRIDS, RunError, RunSpec, require_device, run, slug
from hear_embed.cli import parse_model_options

LAZY_COMMANDS = {"bench": ("eval.bench", "efficiency benchmark: parameters, GMACs, real-time factor"),
                 "finetune": ("eval.finetune", "the paper's fine-tuning protocol on a task"),
                 "replica": ("eval.replica", "synthetic replicas of the HEAR 2021 tasks at any scale"),
                 "submission": ("eval.submission", "heareval score files and a leaderboard row from a run")}


def _command_line(argv: list[str]) -> str:
    return "hear-eval " + " ".join(shlex.quote(arg) for arg in argv)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="import name of a HEAR-API module, e.g. hear_embed or "
                        "eval.baselines.logmel")
    parser.add_argument("--weights", default=None, help="passed to load_model as its first argument (a file, or "
                        "a name the module knows such as 'tiny' or 'random'); omitted: load_model(**options)")
    parser.add_argument("--model-options", type=parse_model_options, default={}, metavar="JSON",
                        help='keyword options for load_model, as a JSON object, e.g. \'{"layer": 4}\'')
    parser.add_argument("--tasks-dir", required=True, type=Path, help="folder holding task folders in heareval's "
                        "format (each with task_metadata.json)")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="NAME", help="only these tasks (folder or "
                        "task_name); default: every task under --tasks-dir")
    parser.add_argument("--out", type=Path, default=None, help="run folder: scores.csv, per-task results (tasks/) "
                        "and, unless --cache-dir is given, the embedding cache; several models may share it (each "
                        "keeps its own rows). None: runs/LABEL in the current directory")
    parser.add_argument("--grid", choices=GRIDS, default="default", help="probe hyperparameter grid: default "
                        "(heareval's), fast (<= 50 epochs) or faster (tiny MLPs, 10 epochs)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where embeddings and probes run")
    parser.add_argument("--seed", type=int, default=0, help="probe training seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED", help="several probe seeds "
                        "(an explicit list, e.g. 0 1 2) trained together in one batched model; scores.csv gets one "
                        "row per seed and tables report mean ± std over them (replaces --seed)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default OUT/embeddings); "
                        "keyed by module, weights identity, options and task, so runs may share it")
    parser.add_argument("--batch-seconds", type=float, default=60.0, help="at most this much audio per embedding "
                        "batch (bounds memory); files of equal length are batched together")
    parser.add_argument("--label", default=None, help="model name in tables (default: MODULE or MODULE[WEIGHTS])")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--suite", choices=("hear2021",), default=None, help="check every task folder against the "
                        "HEAR 2021 registry (eval/suites/hear2021.py) and list the missing tasks; mismatches make "
                        "the exit status 1")


def run_spec(args: argparse.Namespace) -> RunSpec:
    """The :class:`RunSpec` of ``run``'s command-line arguments."""
    return RunSpec(model=args.model, weights=args.weights, options=args.model_options, tasks_dir=args.tasks_dir,
                   tasks=args.tasks, out=args.out, grid=args.grid, device=args.device, seed=args.seed,
                   seeds=args.seeds, cache_dir=args.cache_dir, batch_seconds=args.batch_seconds, label=args.label,
                   progress=not args.no_progress)


def run_command(args: argparse.Namespace) -> int:
    spec = run_spec(args)
    suite_problems = _check_suite(args.suite, spec)
    rows = run(spec)
    for task in dict.fromkeys(row.task for row in rows):
        task_rows = [row for row in rows if row.task == task]
        scores = pd.Series([row.score for row in task_rows])
        spread = (f"{scores.mean():.4f} ± {scores.std():.4f} over {len(scores)} probe seeds" if len(scores) > 1
                  else f"{scores[0]:.4f} ± {task_rows[0].std:.4f}")
        print(f"{task_rows[0].label}\t{task}\t{task_rows[0].metric}\t{spread}")
    if suite_problems:
        print(f"{len(suite_problems)} task folder(s) differ from the HEAR 2021 release (see above and "
              f"{spec.out / 'suite_check.txt'})", file=sys.stderr)
        return 1
    return 0


def _check_suite(suite: str | None, spec: RunSpec) -> list[str]:
    """--suite hear2021: report (stderr and OUT/suite_check.txt) how the task folders match the registry."""
    if suite is None:
        return []
    from eval.suites.hear2021 import suite_report
    from eval.tasks import find_tasks
    from hear_embed.atomic_files import write_text_atomically

    report = suite_report(find_tasks(spec.tasks_dir, spec.tasks))
    print(report.text(), file=sys.stderr)
    write_text_atomically(spec.out / "suite_check.txt", report.text() + "\n")
    return report.problems


def table(args: argparse.Namespace) -> int:
    written = write_report(args.run_dirs, args.out, command=args.command_line, name=args.name,
                           efficiency_path=args.efficiency, published=args.published)
    print(Path(written[0]).read_text())
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _demo_models(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
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


def demo(args: argparse.Namespace) -> int:
    """Build the mini-suite, evaluate the bundled models with the fast grid, write tables and plots."""
    from eval.suites.mini import build_mini_suite

    require_device(args.device)
    start = time.perf_counter()
    suite = build_mini_suite(args.cache_dir, size=args.size)
    build_seconds = time.perf_counter() - start
    print(f"demo: mini-suite at {suite} ({build_seconds:.1f} s)", file=sys.stderr)
    runs, timings = [], {}
    for label, module, weights in _demo_models(args):
        # the seeds' probes train together in one batched model on embeddings computed once
        spec = RunSpec(model=module, weights=weights, tasks_dir=suite, out=args.runs_dir / slug(label),
                       grid=args.grid, device=args.device, seeds=tuple(args.seeds),
                       cache_dir=args.runs_dir / "embeddings", label=label, progress=not args.no_progress)
        rows = run(spec)
        runs.append(spec.out)
        first_seed = [row for row in rows if row.seed == args.seeds[0]]  # each row repeats its task's timings
        timings[label] = (sum(r.embed_seconds for r in first_seed), sum(r.probe_seconds for r in first_seed))
    written = write_report(runs, args.out, command=args.command_line, name="mini_suite")
    print(Path(written[0]).read_text())
    print(f"wall time of the mini-suite build: {build_seconds:.1f} s")
    for label, (embed, probe) in timings.items():
        print(f"wall time of {label} with {len(args.seeds)} probe seed(s) trained together: embedding {embed:.1f} s, "
              f"probing {probe:.1f} s (as measured when each task was computed)")
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the module docstring's layout and shows every option's default."""


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hear-eval", description=__doc__, formatter_class=_HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)

    run_parser = command("run", "evaluate one HEAR module on task folders")
    _add_run_arguments(run_parser)
    run_parser.set_defaults(func=run_command)

    table_parser = command("table", "comparison tables and plots from run folders")
    table_parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="--out folders of `run`")
    table_parser.add_argument("--out", type=Path, default=DEFAULT_RUNS / "tables", help="where tables and plots go "
                              "(the committed ones: --out results)")
    table_parser.add_argument("--name", default="comparison", help="file name stem of the tables and plots")
    table_parser.add_argument("--efficiency", type=Path, default=None, help="bench table (efficiency.csv of `eval "
                              "bench`) for the efficiency columns and the score-vs-GMACs plot; default OUT/efficiency.csv")
    table_parser.add_argument("--published", action="store_true", help="add the published leaderboard scores "
                              "(eval/baselines/published.csv) as a separate block, and which baselines lack a run")
    table_parser.set_defaults(func=table)

    demo_parser = command("demo", "mini-suite with the bundled models and the fast grid")
    demo_parser.add_argument("--out", type=Path, default=DEFAULT_RUNS / "demo", help="where tables and plots go "
                             "(the committed ones: --out results)")
    demo_parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS / "demo",
                             help="run folders and the shared embedding cache")
    demo_parser.add_argument("--cache-dir", type=Path, default=None, help="where the mini-suite is built "
                             "(None: $HEAR_EMBED_EVAL_CACHE or ~/.cache/hear_embed_eval)")
    demo_parser.add_argument("--grid", choices=GRIDS, default="fast", help="probe grid")
    demo_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                             help="probe seeds; tables give mean ± std over them")
    demo_parser.add_argument("--size", choices=("full", "tiny"), default="full", help="mini-suite size")
    demo_parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where models and probes run")
    demo_parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo_parser.set_defaults(func=demo)

    for name, (module_name, help_text) in LAZY_COMMANDS.items():
        _lazy_command(name, command(name, f"{help_text} ({module_name})"), chosen)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``hear-eval`` / ``python -m eval``: exit 0 on success, 2 with a one-line reason on bad input."""
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(chosen).parse_args(argv)
    args.command_line = _command_line(argv)
    try:
        return args.func(args)
    except (RunError, ValueError, OSError) as error:  # bad settings, task folders, unwritable or busy folders
        print(f"hear-eval: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
