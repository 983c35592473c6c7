"""The training loop both stages share: DDP, autocast, gradient accumulation, resumable checkpoints, CSV log.

A stage is an ``nn.Module`` whose ``forward(batch)`` returns a dict of scalar losses with the total under
``"loss"``; it may define ``after_step()`` (called after every optimizer step, e.g. to anneal a temperature).
Randomness is re-seeded from (seed, step, micro-batch, rank) before every forward pass, so a resumed run
repeats an uninterrupted one exactly; per-sample randomness uses the batch's ``seeds``.
"""
from __future__ import annotations

import csv
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from hear_embed.train.data import DataConfig, SkipCounter, make_loader


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


def mixed_seed(*values: int) -> int:
    """A 63-bit seed mixing the given integers."""
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> 1)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear 0 -> 1 over ``warmup`` steps, cosine 1 -> 0 until ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _atomic_save(obj, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


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
            temporary = path.with_name(path.name + ".tmp")
            with temporary.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns or ["step"])
                writer.writeheader()
                writer.writerows(rows)
            os.replace(temporary, path)

    def write(self, row: dict) -> None:
        new_file = not self.path.exists() or self.columns is None
        if self.columns is None:
            self.columns = list(row)
        with self.path.open("w" if new_file else "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            if new_file:
                writer.writeheader()
            writer.writerow(row)


def train(stage: nn.Module, data: DataConfig, config: TrainConfig, out_dir: str | Path,
          export: Callable[[nn.Module, Path, int], None] | None = None) -> dict:
    """Train ``stage`` for ``config.steps`` steps, resuming from ``out_dir/checkpoint.pt`` if present.

    Writes ``checkpoint.pt`` (model, optimizer, scheduler, scaler, RNG states, step), ``log.csv`` and, when
    finished or out of wall time, calls ``export(stage, out_dir, step)`` on rank 0.
    Returns {"step", "finished", "skipped_files", "seconds", "rank", "world_size"}.
    """
    out_dir = Path(out_dir)
    rank, world_size, device = _setup_distributed()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    stage.to(device)
    trainable = [p for p in stage.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, config.warmup_steps, config.steps))
    use_autocast = device.type == "cuda" and config.precision != "fp32"
    autocast_dtype = torch.float16 if config.precision == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=use_autocast and config.precision == "fp16")

    step = 0
    checkpoint_path = out_dir / "checkpoint.pt"
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        stage.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step = state["step"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])

    model = nn.parallel.DistributedDataParallel(stage) if world_size > 1 else stage
    loader = iter(make_loader(data, config.micro_batch, config.accumulation, rank, world_size, config.seed, step))
    log = CsvLog(out_dir / "log.csv", step) if rank == 0 else None
    skips = SkipCounter()
    start_time, start_step = time.monotonic(), step
    progress = tqdm(total=config.steps, initial=step, disable=rank != 0, desc=type(stage).__name__, unit="step")

    def save_checkpoint() -> None:
        if rank == 0:
            rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
            _atomic_save({"model": stage.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                          "step": step, "rng": rng, "data_position": step * config.micro_batch
                          * config.accumulation * world_size}, checkpoint_path)
        if dist.is_initialized():
            dist.barrier()

    stage.train()
    out_of_time = False
    while step < config.steps:
        totals: dict[str, float] = {}
        for micro in range(config.accumulation):
            batch = next(loader)
            skips.update(batch.pop("skipped"))
            torch.manual_seed(mixed_seed(config.seed, step, micro, rank))
            sync = micro == config.accumulation - 1 or world_size == 1
            with (nullcontext() if sync else model.no_sync()):
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=use_autocast):
                    losses = model(_move(batch, device))
                scaler.scale(losses["loss"] / config.accumulation).backward()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / config.accumulation
        scaler.unscale_(optimizer)
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(stage, "after_step"):
            stage.after_step()
        step += 1
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
