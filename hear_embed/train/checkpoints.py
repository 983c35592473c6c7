"""Resumable training checkpoints: plain data that loads with ``weights_only=True``, the previous one kept.

``checkpoint.pt`` holds the stage's ``state_dict``, the optimizer, scheduler and gradient-scaler states,
the RNG states (tensors, numbers and strings only: nothing in it can run code when loaded), the step and
the run's configuration as JSON. Each save first renames the current file to ``checkpoint.prev.pt``, so a
damaged or missing ``checkpoint.pt`` falls back to the one before, with a warning saying so.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from hear_embed.atomic_files import atomic_path

CURRENT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "scaler", "step", "rng", "config")
# settings that may differ between a run and its resumption (budget and bookkeeping, not what is computed)
RESUMABLE_CHANGES = frozenset({"train.steps", "train.max_wall_seconds", "train.stop_after_steps", "train.num_threads",
                               "train.log_every", "train.checkpoint_every", "data.num_workers", "data.cache_audio"})


class TrainingError(RuntimeError):
    """A training run cannot go on; the message names the file, step or setting and what to do."""


def rng_state() -> dict:
    """torch, numpy and Python RNG states as tensors, numbers and strings."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
            "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64),
                       "gauss_next": gauss_next}}


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))


def config_json(config: dict) -> str:
    """The run's configuration ({section: {field: value}}) as canonical JSON (tuples become lists)."""
    return json.dumps(config, sort_keys=True)


def config_changes(saved: str, current: str) -> list[str]:
    """``"section.field: saved -> current"`` for every setting that differs, except :data:`RESUMABLE_CHANGES`."""
    def flat(text: str) -> dict:
        return {f"{section}.{key}": value for section, values in json.loads(text).items()
                for key, value in (values.items() if isinstance(values, dict) else [("", values)])}

    before, after = flat(saved), flat(current)
    return [f"{name.rstrip('.')}: {before.get(name)!r} -> {after.get(name)!r}" for name in sorted(before.keys() | after.keys())
            if name not in RESUMABLE_CHANGES and before.get(name) != after.get(name)]


def save(folder: Path, state: dict, *, keep_current: bool = True) -> Path:
    """Write ``state`` to ``folder/checkpoint.pt`` atomically; the file it replaces becomes ``checkpoint.prev.pt``
    (unless ``keep_current`` is False: a damaged current file is overwritten, the good previous one kept)."""
    current = folder / CURRENT
    if keep_current and current.is_file():
        os.replace(current, folder / PREVIOUS)
    with atomic_path(current) as temporary:
        torch.save(state, temporary)
    return current


def _load_problem(error: Exception) -> str:
    """A one-line reason for a failed ``torch.load(weights_only=True)`` (torch's own message is a page long)."""
    text = str(error).strip()
    if isinstance(error, pickle.UnpicklingError) and "global" in text.lower():
        return ("it holds objects other than tensors, numbers, strings, lists and dicts: a tampered file, or one "
                "written before training checkpoints became plain data, which cannot be resumed")
    if "WeightsUnpickler error:" in text:  # e.g. random bytes: "Unsupported operand 95"
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else 'no data'}"


def read(path: Path, device: torch.device | str = "cpu") -> dict:
    """One checkpoint file, loaded with ``weights_only=True``; any problem is a :class:`TrainingError` naming it."""
    if not path.is_file():
        raise TrainingError(f"training checkpoint {path} is not a file")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # truncated, empty, random bytes, a pickle that would import or call something
        raise TrainingError(f"training checkpoint {path} cannot be read ({_load_problem(error)})") from error
    if not isinstance(state, dict):
        raise TrainingError(f"training checkpoint {path} holds a {type(state).__name__}, not a checkpoint dict")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise TrainingError(f"training checkpoint {path} lacks {missing} (written by another program or version?)")
    return state


def load_latest(folder: Path, device: torch.device | str = "cpu") -> tuple[dict, Path] | None:
    """The newest readable checkpoint of ``folder`` and its path, or None when there is none.

    A damaged or missing ``checkpoint.pt`` falls back to ``checkpoint.prev.pt`` with a warning naming both;
    a folder in place of ``checkpoint.pt``, or two unusable files, is a :class:`TrainingError`.
    """
    current, previous = folder / CURRENT, folder / PREVIOUS
    if current.is_dir():
        raise TrainingError(f"training checkpoint {current} is a folder, not a file: move it away to resume or start over")
    if not current.exists() and not previous.exists():
        return None
    problems = []
    for path in (current, previous):
        if not path.exists():
            problems.append(f"{path} is missing")
            continue
        try:
            state = read(path, device)
        except TrainingError as error:
            problems.append(str(error))
            continue
        if path == previous:
            warnings.warn(f"{problems[0]}; resuming from the previous checkpoint {path} (step {state['step']})",
                          stacklevel=2)
        return state, path
    raise TrainingError(f"no usable checkpoint in {folder}: {'; '.join(problems)}. Delete them to start over.")
