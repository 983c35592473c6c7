"""The training loop all stages share: DDP, autocast, gradient accumulation, resumable checkpoints, CSV log.

A stage is an ``nn.Module`` whose ``forward(batch)`` returns a dict of scalar losses with the total under
``"loss"``; it may define ``after_step(step)`` (called after every optimizer step, e.g. to anneal a
temperature), ``log_values()`` (extra CSV columns) and ``parameter_groups()`` (AdamW groups with their own
learning rates). Randomness is re-seeded from (seed, step, micro-batch, rank) before every forward pass, so a
resumed run repeats an uninterrupted one exactly; per-sample randomness uses the batch's ``seeds``.
A non-finite loss stops the run before the optimizer step (:class:`TrainingError` naming the step and the
loss terms), keeping the last checkpoint and exporting nothing.
"""
from __future__ import annotations

import csv
import io
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from hear_embed.atomic_files import write_text_atomically
from hear_embed.config import config_to_dict
from hear_embed.train import checkpoints
from hear_embed.train.checkpoints import TrainingError
from hear_embed.train.data import DataConfig, SkipCounter, make_loader
from hear_embed.train.seeds import mixed_seed

# (start_step, rank, world_size) -> this process's micro-batches from ``start_step`` on, ``accumulation`` per step
BatchSource = Callable[[int, int, int], Iterable[dict]]


@dataclass(frozen=True)
class TrainConfig:
    """Optimization and bookkeeping of one stage."""

    steps: int = 100_000  # optimizer steps in total
    micro_batch: int = 8  # clips per process per forward pass
    accumulation: int = 1  # micro-batches per optimizer step; global batch = micro_batch * accumulation * processes
    learning_rate: float = 5e-4  # peak AdamW learning rate
    weight_decay: float = 0.01
    warmup_steps: int = 1000  # linear warm-up, then cosine decay to 0 at ``steps``
    grad_clip: float = 1.0  # max gradient norm (0: off)
    precision: str = "bf16"  # autocast dtype on GPU: "bf16", "fp16" or "fp32"; CPU always runs fp32
    checkpoint_every: int = 1000  # steps between resumable checkpoints
    log_every: int = 10  # steps between CSV log rows
    seed: int = 0
    max_wall_seconds: float = 0.0  # stop after this much wall time in this run, checkpoint and export; 0: no limit
    stop_after_steps: int = 0  # stop (with a checkpoint) after this many steps in this run; 0: no limit
    num_threads: int = 0  # torch CPU threads per process; 0: torch's default

    def __post_init__(self) -> None:
        if self.precision not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be 'bf16', 'fp16' or 'fp32', got {self.precision!r}")
        for name in ("steps", "micro_batch", "accumulation", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear 0 -> 1 over ``warmup`` steps, cosine 1 -> 0 until ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device); initializes the process group when started by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world_size, device


def _move(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


class CsvLog:
    """Appends rows to ``path``; on resume keeps only rows up to the resumed step."""

    def __init__(self, path: Path, resumed_step: int):
        self.path = path
        self.columns: list[str] | None = None
        if path.exists():
            with path.open() as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= resumed_step]
            if rows:
                self.columns = list(rows[0])
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=self.columns or ["step"])
            writer.writeheader()
            writer.writerows(rows)
            write_text_atomically(path, text.getvalue())

    def write(self, row: dict) -> None:
        new_file = not self.path.exists() or self.columns is None
        if self.columns is None:
            self.columns = list(row)
        with self.path.open("w" if new_file else "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            if new_file:
                writer.writeheader()
            writer.writerow(row)


def _run_config(data: DataConfig | BatchSource, config: TrainConfig) -> dict:
    """The default configuration recorded in a checkpoint: the train section, and the data section if any."""
    record = {"train": config_to_dict(config)}
    if isinstance(data, DataConfig):
        record["data"] = config_to_dict(data)
    return record


def _resume(folder: Path, device: torch.device, run_config: str, stage: nn.Module, optimizer, scheduler,
            scaler) -> tuple[int, Path | None]:
    """Load the newest usable checkpoint into the training objects; (its step, its path), (0, None) if none."""
    found = checkpoints.load_latest(folder, device)
    if found is None:
        return 0, None
    state, path = found
    changes = checkpoints.config_changes(state["config"], run_config)
    if changes:
        raise TrainingError(f"{path} was written with another configuration ({'; '.join(changes)}): use the "
                            "original settings to resume, or another output folder to start a new run")
    try:
        stage.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        checkpoints.set_rng_state(state["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise TrainingError(f"training checkpoint {path} does not fit this model ({error})") from error
    return int(state["step"]), path


def train(stage: nn.Module, data: DataConfig | BatchSource, config: TrainConfig, out_dir: str | Path,
          export: Callable[[nn.Module, Path, int], None] | None = None, run_config: dict | None = None) -> dict:
    """Train ``stage`` for ``config.steps`` steps, resuming from ``out_dir/checkpoint.pt`` if present.

    ``data`` is a :class:`DataConfig` (audio files, random crops) or a :data:`BatchSource`. ``run_config``
    ({section: {field: value}}, JSON-serializable; default: the train and data sections) is stored in the
    checkpoint, and resuming with other values (except :data:`checkpoints.RESUMABLE_CHANGES`) is refused.
    Writes ``checkpoint.pt`` (and ``checkpoint.prev.pt``), ``log.csv`` and, when finished or out of wall
    time, calls ``export(stage, out_dir, step)`` on rank 0.
    Returns {"step", "finished", "skipped_files", "seconds", "rank", "world_size"}.
    Raises :class:`TrainingError` on an unusable checkpoint, a changed configuration or a non-finite loss.
    """
    out_dir = Path(out_dir)
    rank, world_size, device = _setup_distributed()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    stage.to(device)
    trainable = [p for p in stage.parameters() if p.requires_grad]
    groups = stage.parameter_groups() if hasattr(stage, "parameter_groups") else trainable
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, config.warmup_steps, config.steps))
    use_autocast = device.type == "cuda" and config.precision != "fp32"
    autocast_dtype = torch.float16 if config.precision == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=use_autocast and config.precision == "fp16")

    run_config = checkpoints.config_json(run_config if run_config is not None else _run_config(data, config))
    step, resumed_from = _resume(out_dir, device, run_config, stage, optimizer, scheduler, scaler)
    current_usable = resumed_from is None or resumed_from.name == checkpoints.CURRENT  # else: do not rotate it
    last_checkpoint = f"{resumed_from}, step {step}" if resumed_from else None

    model = nn.parallel.DistributedDataParallel(stage) if world_size > 1 else stage
    if isinstance(data, DataConfig):
        batches = make_loader(data, config.micro_batch, config.accumulation, rank, world_size, config.seed, step)
    else:
        batches = data(step, rank, world_size)
    loader = iter(batches)
    log = CsvLog(out_dir / "log.csv", step) if rank == 0 else None
    skips = SkipCounter()
    start_time, start_step = time.monotonic(), step
    progress = tqdm(total=config.steps, initial=step, disable=rank != 0, desc=type(stage).__name__, unit="step")

    def save_checkpoint() -> None:
        nonlocal current_usable, last_checkpoint
        if rank == 0:
            checkpoints.save(out_dir, {
                "model": stage.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "step": step, "rng": checkpoints.rng_state(), "config": run_config,
                "data_position": step * config.micro_batch * config.accumulation * world_size},
                keep_current=current_usable)
        current_usable, last_checkpoint = True, f"{out_dir / checkpoints.CURRENT}, step {step}"
        if dist.is_initialized():
            dist.barrier()

    def stop_on_non_finite(totals: dict[str, float]) -> None:
        bad = torch.tensor(float(not math.isfinite(totals["loss"])), device=device)
        if dist.is_initialized():  # every process stops together
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item():
            progress.close()
            terms = ", ".join(f"{name}={value:.6g}" for name, value in totals.items())
            kept = f"the last checkpoint ({last_checkpoint}) is kept" if last_checkpoint else "no checkpoint was written"
            raise TrainingError(f"training stopped: the loss is not finite at step {step + 1} ({terms}, on rank "
                                f"{rank}); weights were not updated, {kept}, nothing exported. Lower the learning "
                                "rate or check the data.")

    stage.train()
    out_of_time = False
    while step < config.steps:
        totals: dict[str, float] = {}
        for micro in range(config.accumulation):
            batch = next(loader)
            skips.update(batch.pop("skipped", []))
            torch.manual_seed(mixed_seed(config.seed, step, micro, rank))
            sync = micro == config.accumulation - 1 or world_size == 1
            with (nullcontext() if sync else model.no_sync()):
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=use_autocast):
                    losses = model(_move(batch, device))
                scaler.scale(losses["loss"] / config.accumulation).backward()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / config.accumulation
        stop_on_non_finite(totals)
        scaler.unscale_(optimizer)
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if hasattr(stage, "after_step"):
            stage.after_step(step)
        progress.update(1)
        if step % config.log_every == 0 or step == config.steps:
            values = torch.tensor(list(totals.values()), dtype=torch.float64, device=device)
            if dist.is_initialized():
                dist.all_reduce(values)
                values /= world_size
            if log is not None:
                row = {"step": step, "lr": scheduler.get_last_lr()[0]}
                row.update({name: f"{value:.6f}" for name, value in zip(totals, values.tolist())})
                row.update(getattr(stage, "log_values", dict)())
                row.update({"skipped_files": skips.count, "seconds": round(time.monotonic() - start_time, 2)})
                log.write(row)
                progress.set_postfix(loss=f"{values[0]:.4f}")
        out_of_time = config.max_wall_seconds and time.monotonic() - start_time > config.max_wall_seconds
        out_of_steps = config.stop_after_steps and step - start_step >= config.stop_after_steps
        if dist.is_initialized():  # every process must agree to stop, or the barrier below deadlocks
            flags = torch.tensor([float(bool(out_of_time)), float(bool(out_of_steps))], device=device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            out_of_time, out_of_steps = bool(flags[0]), bool(flags[1])
        if step % config.checkpoint_every == 0 or step == config.steps or out_of_time or out_of_steps:
            save_checkpoint()
        if out_of_time or out_of_steps:
            break
    progress.close()

    finished = step >= config.steps
    if (finished or out_of_time) and export is not None and rank == 0:
        export(stage, out_dir, step)
    if dist.is_initialized():
        dist.barrier()
    return {"step": step, "finished": finished, "skipped_files": skips.count,
            "seconds": time.monotonic() - start_time, "rank": rank, "world_size": world_size}
