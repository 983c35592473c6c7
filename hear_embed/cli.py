"""The ``hear-embed`` command: ``embed`` audio files, ``info`` about weights, ``path`` of a weights file (e.g. for
heareval's ``--model PATH``), ``export`` (from hear_embed.export).

``embed`` writes one ``<out>/<name>.npz`` per input file (``name`` = the file's path relative to the folder it was
found in, extension kept, e.g. ``out/speaker1/a.wav.npz``) holding ``embedding`` (T, D) float32,
``timestamps`` (T,) float32 in ms, with ``--scene`` also ``scene`` (D_scene,), and the run's record: the SHA-256
of the weights' tensors and the model options. An output that is complete and holds the same record is skipped,
so an interrupted run resumes where it stopped; one made with other weights or options, or damaged, is redone.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hear_embed.atomic_files import write_atomically
from hear_embed.audio_io import AudioReadError, AudioWarning, find_audio_files, read_audio_blocks
from hear_embed.fingerprint import state_fingerprint

SUBCOMMANDS = ("embed", "info", "path", "export")


def parse_model_options(text: str) -> dict:
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--model-options is not valid JSON ({error}): {text!r}") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(f"--model-options must be a JSON object, got {text!r}")
    return options


def run_record(model, scene: bool) -> dict[str, np.ndarray]:
    """What an output file records of how it was made (weights by content, options); a file whose record
    differs is redone."""
    options = json.dumps(dataclasses.asdict(model.options), sort_keys=True)
    return {"weights_sha256": np.array(state_fingerprint(model.acoustic_model)), "options": np.array(options),
            "scene_pooling": np.array(model.options.scene_pooling if scene else "")}


def is_done(path: Path, record: dict[str, np.ndarray]) -> bool:
    """``path`` is a complete, readable output made with the same weights and options (a damaged file is not)."""
    if not path.exists():
        return False
    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}  # reading every member checks its zip CRC
    except Exception as error:  # damaged: truncated, not a zip, bad CRC, pickled object arrays
        tqdm.write(f"hear-embed: {path} is damaged ({type(error).__name__}: {error}); redoing it", file=sys.stderr)
        return False
    if any(key not in arrays or str(arrays[key]) != str(value) for key, value in record.items()):
        return False
    return all(key in arrays and np.isfinite(arrays[key]).all() for key in ("embedding", "timestamps"))


def file_blocks(file: Path, sample_rate: int) -> Callable[[], Iterator[np.ndarray]]:
    """A block source (see :mod:`hear_embed.long_audio`) re-reading ``file`` at each call: (1, n_i) 16 kHz blocks;
    warnings about the file are given on the first reading only."""
    readings = itertools.count()

    def blocks() -> Iterator[np.ndarray]:
        warn = next(readings) == 0
        return (block[None] for block in read_audio_blocks(file, sample_rate, warn=warn))
    return blocks


def embed_file(file: Path, model, scene: bool) -> dict[str, np.ndarray]:
    """The arrays written for one audio file, read in blocks once per pass of the long-audio path (memory grows
    with the output, not the file); non-finite embeddings are an error, never written."""
    from hear_embed.api import pool_frames, timestamp_embeddings_of_blocks

    try:
        embedding, timestamps = timestamp_embeddings_of_blocks(file_blocks(file, model.sample_rate), model,
                                                               out_device="cpu")
    except AudioReadError:
        raise
    except ValueError as error:
        raise AudioReadError(f"cannot embed {file}: {error}") from None
    arrays = {"embedding": embedding[0].numpy(), "timestamps": timestamps[0].numpy()}
    if scene:
        arrays["scene"] = pool_frames(embedding, model.options.scene_pooling)[0].numpy()
    if not all(np.isfinite(array).all() for array in arrays.values()):
        raise AudioReadError(f"cannot embed {file}: the model gave NaN or Inf embeddings; nothing written")
    return arrays


@contextlib.contextmanager
def printed_warnings():
    """Warnings raised in the block (every AudioWarning, not once per place) printed as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AudioWarning)
        try:
            yield
        finally:
            for warning in caught:
                tqdm.write(f"hear-embed: warning: {warning.message}", file=sys.stderr)


def check_device(device: str) -> None:
    """Raise ValueError in one line if torch cannot use ``device``."""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"device {device!r} is not available here ({reason})") from None


def run_embed(args: argparse.Namespace) -> int:
    from hear_embed.api import load_model

    try:
        with printed_warnings():
            files = find_audio_files(args.paths)
    except (FileNotFoundError, ValueError) as error:
        print(f"hear-embed: {error}", file=sys.stderr)
        return 2
    if not files:
        print(f"hear-embed: nothing to embed: no audio files in {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    check_device(args.device)
    model = load_model(args.weights or "", **args.model_options)
    record = run_record(model, args.scene)
    model = model.to(args.device)
    out = Path(args.out)
    todo = [(file, out / f"{name}.npz") for file, name in files]
    todo = [(file, target) for file, target in todo if not is_done(target, record)]
    print(f"{len(files)} audio file(s), {len(files) - len(todo)} already done, {len(todo)} to embed", file=sys.stderr)
    failed = 0
    for file, target in tqdm(todo, desc="embedding", unit="file", file=sys.stderr):
        try:
            with printed_warnings():
                arrays = embed_file(file, model, args.scene)
        except AudioReadError as error:
            failed += 1
            tqdm.write(f"hear-embed: {error}", file=sys.stderr)
            continue
        write_atomically(target, lambda out_file: np.savez(out_file, **arrays, **record))
    if failed:
        print(f"hear-embed: {failed} of {len(todo)} file(s) failed (named above)", file=sys.stderr)
        return 1
    return 0


def _without_absolute_paths(value, root: Path):
    """``value`` (JSON-like) with absolute paths shown relative to ``root`` when inside it, else by file name."""
    if isinstance(value, dict):
        return {key: _without_absolute_paths(item, root) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_absolute_paths(item, root) for item in value]
    if isinstance(value, (str, Path)) and Path(value).is_absolute():
        path = Path(value)
        return str(path.relative_to(root)) if path.is_relative_to(root) else f".../{path.name}"
    return value


def run_info(args: argparse.Namespace) -> int:
    from hear_embed.weights import load_acoustic_model

    model, info = load_acoustic_model(args.weights)
    details = dataclasses.asdict(info)
    details["parameters"] = sum(parameter.numel() for parameter in model.parameters())
    shown = {**_without_absolute_paths(details, Path(__file__).resolve().parent.parent), "source": info.source}
    print(json.dumps(shown, indent=2, default=str))
    return 0


def run_path(args: argparse.Namespace) -> int:
    from hear_embed.weights import load_acoustic_model

    if args.weights in ("random", "random-tiny"):
        raise ValueError(f"{args.weights!r} weights are made at load time and have no file")
    _, info = load_acoustic_model(args.weights)  # loads the file: the path printed is one that works
    print(Path(info.path).resolve())
    return 0


def run_export(args: argparse.Namespace) -> int:
    from hear_embed import export

    return export.run(args)


def build_parser(with_export: bool = False) -> argparse.ArgumentParser:
    """The argument parser; ``export``'s own options are added only when that subcommand is used."""
    parser = argparse.ArgumentParser(prog="hear-embed", description="HEAR audio embeddings from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser("embed", help="embed audio files or folders (recursive) into .npz files")
    embed.add_argument("paths", nargs="+", help="audio files or folders")
    embed.add_argument("--out", required=True, help="output folder: one <name>.npz per input file")
    embed.add_argument("--weights", default=None,
                       help='"authors" (default, downloaded once and cached), "tiny", "random", or a checkpoint path')
    embed.add_argument("--model-options", type=parse_model_options, default={},
                       help='JSON object of load_model options, e.g. \'{"layer": 4, "scene_pooling": "mean+std"}\'')
    embed.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    embed.add_argument("--scene", action="store_true", help="also store the scene embedding of each file")
    embed.set_defaults(run=run_embed)

    info = commands.add_parser("info", help="show the config, parameter count, weights source and license")
    info.add_argument("--weights", default=None, help='"authors" (default), "tiny", "random", or a checkpoint path')
    info.set_defaults(run=run_info)

    path = commands.add_parser("path", help="print the file of named weights (e.g. for heareval: "
                               "--model \"$(hear-embed path tiny)\")")
    path.add_argument("weights", help='"tiny" (packaged), "authors" (downloaded once and cached) or a checkpoint path')
    path.set_defaults(run=run_path)

    export = commands.add_parser("export", help="export the model (options: hear-embed export --help)")
    if with_export:
        from hear_embed import export as export_module

        export_module.add_arguments(export)
    export.set_defaults(run=run_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    wants_export = next((arg for arg in argv if arg in SUBCOMMANDS), None) == "export"
    try:
        parser = build_parser(with_export=wants_export)
    except ImportError as error:
        print(f"hear-embed: the export subcommand is unavailable: {error}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:  # bad options, unreadable checkpoints, failed downloads
        print(f"hear-embed: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
