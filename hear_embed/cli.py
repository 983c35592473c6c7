"""The ``hear-embed`` command: ``embed`` audio files, ``info`` about weights, ``path`` of a weights file (e.g. for
heareval's ``--model PATH``), ``export`` (from hear_embed.export).

``embed`` writes one ``<out>/<name>.npz`` per input file (``name`` = the file's path relative to the folder it was
found in, extension kept, e.g. ``out/speaker1/a.wav.npz``) holding ``embedding`` (T, D) float32,
``timestamps`` (T,) float32 in ms, and with ``--scene`` also ``scene`` (D_scene,). Files whose output already
exists are skipped, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hear_embed.audio_io import AudioReadError, find_audio_files, read_audio

SUBCOMMANDS = ("embed", "info", "path", "export")


def parse_model_options(text: str) -> dict:
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--model-options is not valid JSON ({error}): {text!r}") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(f"--model-options must be a JSON object, got {text!r}")
    return options


def save_npz_atomically(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` via a temporary file in the same folder, so ``path`` is complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def is_done(path: Path, scene: bool) -> bool:
    """An output exists (and holds the scene embedding when one is asked for)."""
    if not path.exists():
        return False
    if not scene:
        return True
    with np.load(path) as data:
        return "scene" in data.files


def embed_file(file: Path, model, scene: bool) -> dict[str, np.ndarray]:
    """The arrays written for one audio file."""
    from hear_embed.api import get_timestamp_embeddings, pool_frames

    audio = torch.from_numpy(read_audio(file, model.sample_rate))[None].to(model.device)
    try:
        embedding, timestamps = get_timestamp_embeddings(audio, model)
    except ValueError as error:
        raise AudioReadError(f"cannot embed {file}: {error}") from None
    arrays = {"embedding": embedding[0].cpu().numpy(), "timestamps": timestamps[0].cpu().numpy()}
    if scene:
        arrays["scene"] = pool_frames(embedding, model.options.scene_pooling)[0].cpu().numpy()
    return arrays


def run_embed(args: argparse.Namespace) -> int:
    from hear_embed.api import load_model

    try:
        files = find_audio_files(args.paths)
    except (FileNotFoundError, ValueError) as error:
        print(f"hear-embed: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    todo = [(file, out / f"{name}.npz") for file, name in files]
    todo = [(file, target) for file, target in todo if not is_done(target, args.scene)]
    print(f"{len(files)} audio file(s), {len(files) - len(todo)} already done, {len(todo)} to embed", file=sys.stderr)
    if not todo:
        return 0
    model = load_model(args.weights or "", **args.model_options).to(args.device)
    failed = 0
    for file, target in tqdm(todo, desc="embedding", unit="file", file=sys.stderr):
        try:
            arrays = embed_file(file, model, args.scene)
        except AudioReadError as error:
            failed += 1
            tqdm.write(f"hear-embed: {error}", file=sys.stderr)
            continue
        save_npz_atomically(target, **arrays)
    if failed:
        print(f"hear-embed: {failed} of {len(todo)} file(s) failed (named above)", file=sys.stderr)
        return 1
    return 0


def run_info(args: argparse.Namespace) -> int:
    from hear_embed.weights import load_acoustic_model

    model, info = load_acoustic_model(args.weights)
    details = dataclasses.asdict(info) if dataclasses.is_dataclass(info) else dict(vars(info))
    details["parameters"] = sum(parameter.numel() for parameter in model.parameters())
    details["license"] = details.get("meta", {}).get("license", "not recorded for this source")
    print(json.dumps(details, indent=2, default=str))
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
