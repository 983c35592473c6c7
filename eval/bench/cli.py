"""``python -m eval bench``: arguments, the run, and the hidden ``--memory-probe`` entry of the memory probe."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from eval.bench.candidates import build_candidates
from eval.bench.memory import memory_probe, peak_rss_mb
from eval.bench.precision import load_audio, precision_effects
from eval.bench.results import markdown_table, write_results
from eval.bench.timing import benchmark, clip
from eval.provenance import current_command

DEFAULT_OUT = "runs/efficiency"
QUICK = dict(threads=["1"], durations=[10.0], repeats=1, no_memory=True, no_onnx=True)


def _export_dir(args: argparse.Namespace) -> Path | None:
    if args.no_onnx:
        return None
    if args.export_dir:
        return Path(args.export_dir)
    return Path(tempfile.gettempdir()) / f"hear_embed_bench_export{'_tiny' if args.tiny else ''}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("--out", default=DEFAULT_OUT, help="output path without suffix (.md and .csv); "
                        "results/efficiency is the committed table, written only when asked")
    parser.add_argument("--quick", action="store_true", help="about a minute: 1 thread, one 10 s clip, 1 repeat, "
                        "no memory probe, no ONNX (overrides those options)")
    parser.add_argument("--threads", nargs="+", default=["1", "all"], help='thread counts; "all" = os.cpu_count()')
    parser.add_argument("--durations", nargs="+", type=float, default=[10.0, 60.0], help="clip lengths in seconds")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model and setting, after a warm-up")
    parser.add_argument("--models", nargs="+", default=None, help="subset of model names (default: all)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs of every model (tests)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    parser.add_argument("--export-dir", default=None, help="ONNX export folder to use or create (default: a temp folder)")
    parser.add_argument("--audio", nargs="+", default=None,
                        help="audio file(s) for the precision table (concatenated, cut to the first duration); "
                             "default: the synthetic noise clip")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.memory_probe:
        return memory_probe(args.memory_probe, args.tiny, _export_dir(args), max(args.durations))
    if args.quick:
        vars(args).update(QUICK)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    thread_counts = [os.cpu_count() or 1 if value == "all" else int(value) for value in args.threads]
    export_dir = _export_dir(args)
    print(f"building {len(args.models) if args.models else 'all'} model(s)", file=sys.stderr, flush=True)
    candidates = build_candidates(args.tiny, export_dir, args.models)
    memory = None if args.no_memory else (lambda name: peak_rss_mb(name, args.tiny, export_dir, max(args.durations)))
    table = benchmark(candidates, list(dict.fromkeys(thread_counts)), args.durations, args.repeats, memory)
    audio = load_audio(args.audio, args.durations[0]) if args.audio else clip(args.durations[0])
    precision = precision_effects(args.tiny, export_dir, audio)
    notes = ["## Precision: embeddings against the fp32 fast path", "",
             f"Same random-init weights; input: {'the files ' + ', '.join(args.audio) if args.audio else 'the synthetic clip'}"
             f" ({args.durations[0]:g} s).", "", markdown_table(precision), ""]
    csv_path, md_path = write_results(table, Path(args.out), current_command(), extra_markdown="\n".join(notes))
    print(precision.to_string(index=False))
    print(table.to_string(index=False))
    print(f"wrote {md_path} and {csv_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench", description="Efficiency benchmark (eval.bench)")
    add_arguments(parser)
    return run(parser.parse_args(argv))
