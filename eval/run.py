"""One evaluation run: a typed :class:`RunSpec` in, one :class:`ScoreRow` per task out, through :func:`run`.

validate -> embed -> probe -> score every task folder. The run folder (``spec.out``) holds

- ``scores.csv``: one row per (model, weights, options, label, grid, seed, task); a run replaces only its own
  rows, so several models may share one folder;
- ``tasks/<task>/<run id>.json``: each finished task's result with the key it depends on (resume: a task whose
  key matches is not recomputed);
- ``embeddings/``: the embedding cache, unless ``spec.cache_dir`` names another one;
- ``.run.lock``: held (``fcntl.flock``) while a run writes; a second run into the same folder fails at once,
  naming the holder.

The command line (``eval/__main__.py``), the demo and fine-tuning build a ``RunSpec`` / ``ScoreRow``; new
settings are new fields with a default, so existing callers keep working.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd

from hear_embed.atomic_files import write_text_atomically

GRIDS = ("default", "fast", "faster")
DEFAULT_RUNS = Path("runs")  # outputs by default: relative to the current directory, git-ignored in the repository
LOCK_FILE = ".run.lock"
# what makes a row in scores.csv: a run replaces the rows that agree on all of these and keeps the others
ROW_IDENTITY = ("model", "weights", "options", "label", "protocol", "grid", "seed", "task")


class RunError(Exception):
    """A run cannot start or finish; the message names the folder, file or setting and what is wrong."""


class RunFolderBusy(RunError):
    """Another process holds the run folder's lock."""


def slug(text: str) -> str:
    """``text`` as a file name: letters and digits kept, anything else "_"."""
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def require_device(device: str) -> None:
    """Fail in one line when ``device`` names an accelerator torch cannot use here."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"--device {device}: torch {torch.__version__} sees no CUDA device on this machine; "
                       "use --device cpu")


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides what one run computes and where it goes."""

    model: str  # import name of a HEAR-API module, e.g. "hear_embed" or "eval.baselines.logmel"
    tasks_dir: Path  # a folder of task folders (or one task folder)
    out: Path | None = None  # the run folder; None: runs/<label> in the current directory
    weights: str | None = None  # load_model's first argument; None: load_model(**options)
    options: dict = field(default_factory=dict)  # load_model keyword options
    tasks: tuple[str, ...] | None = None  # only these task folders / task names
    grid: str = "default"  # probe grid, one of GRIDS
    device: str = "cpu"
    seed: int = 0  # probe training seed (of a single-seed run)
    seeds: tuple[int, ...] | None = None  # several probe seeds trained together, one row each; None: (seed,)
    cache_dir: Path | None = None  # embedding cache; None: out/embeddings
    batch_seconds: float = 60.0  # at most this much audio per embedding batch
    label: str | None = None  # model name in tables; None: MODULE or MODULE[WEIGHTS]
    progress: bool = True  # progress bars on stderr

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks_dir", Path(self.tasks_dir))
        object.__setattr__(self, "out", DEFAULT_RUNS / slug(self.display_label) if self.out is None else Path(self.out))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.seeds is not None:
            object.__setattr__(self, "seeds", tuple(int(seed) for seed in self.seeds))
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise RunError(f"--seeds must name distinct seeds, got {list(self.seeds)}")
        if not isinstance(self.options, dict):
            raise RunError(f"model options must be a dict (a JSON object), got {self.options!r}")
        if not self.batch_seconds > 0:
            raise RunError(f"batch_seconds must be positive, got {self.batch_seconds}")

    @property
    def display_label(self) -> str:
        return self.label or (f"{self.model}[{self.weights}]" if self.weights else self.model)

    @property
    def probe_seeds(self) -> tuple[int, ...]:
        return self.seeds or (self.seed,)

    @property
    def seed_key(self) -> int | list[int]:
        """The seed(s) in result keys: a number for one seed (as before seeds were batched), else the list."""
        return self.probe_seeds[0] if len(self.probe_seeds) == 1 else list(self.probe_seeds)

    @property
    def embedding_cache(self) -> Path:
        return self.cache_dir or self.out / "embeddings"

    def replace(self, **changes) -> RunSpec:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ScoreRow:
    """One line of ``scores.csv``: a model's primary test score on one task (fields in column order)."""

    model: str
    weights: str
    options: str  # JSON, sorted keys
    params_millions: float | None
    label: str
    task: str
    metric: str
    score: float  # primary metric, mean over test folds
    std: float  # sample std over folds; 0.0 for one test split
    split: str  # "test" or "mean over test folds"
    n_folds: int
    validation_score: float
    protocol: str
    grid: str
    seed: int
    embed_seconds: float
    probe_seconds: float
    all_scores: str  # JSON: fold -> {metric: score}

    @classmethod
    def from_result(cls, spec: RunSpec, result: dict, parameter_count: int | None = None,
                    seed: int | None = None) -> ScoreRow:
        """The row of a task result (``fold_scores``, ``mean``, ``std``, ``primary_metric``, ... as stored in
        ``tasks/*.json``); ``seed``: the probe seed of that result (default ``spec.seed``)."""
        folds = result["fold_scores"]
        return cls(
            model=spec.model, weights=spec.weights or "", options=json.dumps(spec.options, sort_keys=True),
            params_millions=None if parameter_count is None else round(parameter_count / 1e6, 3),
            label=spec.display_label, task=result["task"], metric=result["primary_metric"], score=result["mean"],
            std=result["std"], split="test" if list(folds) == ["test"] else "mean over test folds",
            n_folds=len(folds), validation_score=result["validation_score"], protocol=result["protocol"],
            grid=spec.grid, seed=spec.seed if seed is None else int(seed), embed_seconds=round(result.get("embed_seconds", 0.0), 2),
            probe_seconds=round(result.get("probe_seconds", 0.0), 2), all_scores=json.dumps(folds, sort_keys=True))

    @classmethod
    def per_seed(cls, spec: RunSpec, result: dict, parameter_count: int | None = None) -> list[ScoreRow]:
        """One row per probe seed of a task result (``result["seeds"]``: seed -> that seed's scores)."""
        per_seed = result.get("seeds") or {str(spec.seed): result}
        return [cls.from_result(spec, {**result, **fields}, parameter_count, seed=int(seed))
                for seed, fields in per_seed.items()]

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def write_scores(path: Path, rows: list[ScoreRow]) -> None:
    """Put ``rows`` into ``scores.csv``, replacing the rows with the same :data:`ROW_IDENTITY` and keeping
    every other row already there (another model's, another seed's)."""
    new = pd.DataFrame([row.as_dict() for row in rows], columns=ScoreRow.columns())
    if path.is_file():
        old = pd.read_csv(path, dtype=str, keep_default_na=False).reindex(columns=ScoreRow.columns())
        identity = list(ROW_IDENTITY)
        mine = set(map(tuple, new[identity].astype(str).values.tolist()))
        keep = [tuple(values) not in mine for values in old[identity].astype(str).values.tolist()]
        new = pd.concat([old[keep], new], ignore_index=True) if any(keep) else new
    write_text_atomically(path, new.to_csv(index=False))


def _plain_json(value):
    """numpy scalars and arrays as plain JSON values."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _run_id(spec: RunSpec, weights_key: dict) -> str:
    """File-name-safe id of what a task result depends on besides the task: label slug + short hash."""
    identity = json.dumps({"model": spec.model, "weights": weights_key, "options": spec.options, "grid": spec.grid,
                           "seed": spec.seed_key, "label": spec.display_label}, sort_keys=True, default=str)
    return f"{slug(spec.display_label)[:60]}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"


@contextlib.contextmanager
def locked_run_folder(out: Path, holder: str) -> Iterator[None]:
    """Create ``out`` and hold its lock for the block; :class:`RunFolderBusy` names the holder when another
    process has it, :class:`RunError` says why the folder cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK_FILE, "a+")
    except OSError as error:
        raise RunError(f"cannot write the run folder {out}: {error.strerror or error}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise RunFolderBusy(f"run folder {out} is in use by another run ({handle.read().strip() or 'unknown'}); "
                                "wait for it to finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}: {holder}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _evaluate(task, embedder, spec: RunSpec) -> dict:
    """Embed (cached) and probe one task with every probe seed; the seeds train in one batched model."""
    from eval.embed import embed_task
    from eval.probe import evaluate_seeds

    start = time.perf_counter()
    features = embed_task(task, embedder, spec.embedding_cache, batch_seconds=spec.batch_seconds,
                          progress=spec.progress)
    embedded = time.perf_counter()
    results = evaluate_seeds(task, features, seeds=list(spec.probe_seeds), grid=spec.grid, device=spec.device,
                             progress=spec.progress)
    per_seed = {str(seed): {"fold_scores": r.fold_scores, "mean": r.mean, "std": r.std, "best_params": r.best_params,
                            "validation_score": r.validation_score, "details": r.details}
                for seed, r in results.items()}
    first = next(iter(results.values()))
    return {"task": task.name, "primary_metric": first.primary_metric, "protocol": first.protocol, "seeds": per_seed,
            **per_seed[str(spec.probe_seeds[0])],  # the first seed's fields at the top, as a single-seed result
            "embed_seconds": embedded - start, "probe_seconds": time.perf_counter() - embedded}


def run(spec: RunSpec) -> list[ScoreRow]:
    """validate -> embed -> probe -> score; finished tasks whose key matches are reused as they are.

    Under ``torchrun`` every rank calls this: the ranks share each pending task's embedding batches, then the
    tasks (eval.distributed); rank 0 holds the folder's lock, writes ``scores.csv`` and returns the rows, the
    other ranks return []. Raises :class:`RunError` (bad device, busy or unwritable folder, invalid task
    folders: every problem of every task in one message, before any compute)."""
    from eval import distributed
    from eval.embed import Embedder, embed_task, task_identity
    from eval.tasks import TaskError, find_tasks, load_task, validate_task

    require_device(spec.device)
    ranks = distributed.start(spec.device)
    embedder = Embedder(spec.model, weights=spec.weights, options=spec.options, device=spec.device)
    folders = find_tasks(spec.tasks_dir, list(spec.tasks) if spec.tasks else None)
    holder = f"{spec.display_label} on {spec.tasks_dir}"
    lock = locked_run_folder(spec.out, holder) if ranks.is_main else contextlib.nullcontext()
    try:
        with lock:
            run_id = _run_id(spec, embedder.weights_key)
            pending, results = [], {}
            for folder in folders:
                done = spec.out / "tasks" / folder.name / f"{run_id}.json"
                try:
                    key = {"model": spec.model, "weights": embedder.weights_key, "options": spec.options,
                           "grid": spec.grid, "seed": spec.seed_key, "task_identity": task_identity(load_task(folder))}
                except TaskError:  # reported in full by validate_task below
                    pending.append((folder, None, done))
                    continue
                stored = json.loads(done.read_text()) if done.is_file() else {}
                if stored.get("key") == key:
                    results[folder] = stored["result"]
                else:
                    pending.append((folder, key, done))
            problems, tasks = [], {}
            for folder, _, _ in pending:  # every task is checked before any compute is spent
                try:
                    tasks[folder] = validate_task(folder, embedder.sample_rate)
                except TaskError as error:
                    problems.append(str(error))
            if problems:
                raise RunError("\n\n".join(problems))
            if ranks.world_size > 1:  # every rank embeds its share of every pending task's batches first
                for folder, _, _ in pending:
                    embed_task(tasks[folder], embedder, spec.embedding_cache, batch_seconds=spec.batch_seconds,
                               progress=spec.progress, shard=(ranks.rank, ranks.world_size), barrier=ranks.barrier)
            for index, (folder, key, done) in enumerate(pending):
                if not ranks.owns(index):
                    continue
                print(f"[{spec.display_label}] {tasks[folder].name}: embedding and probing ({spec.grid} grid)",
                      file=sys.stderr)
                results[folder] = _evaluate(tasks[folder], embedder, spec)
                write_text_atomically(done, json.dumps({"key": key, "result": results[folder]}, indent=1,
                                                       sort_keys=True, default=_plain_json))
            ranks.barrier()
            if not ranks.is_main:
                return []
            for folder, _, done in pending:  # the other ranks' tasks
                results.setdefault(folder, json.loads(done.read_text())["result"])
            rows = [row for folder in folders
                    for row in ScoreRow.per_seed(spec, results[folder], embedder.parameter_count)]
            write_scores(spec.out / "scores.csv", rows)
    finally:
        distributed.stop(ranks)
    return rows
