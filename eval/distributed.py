"""``torchrun --nproc_per_node N -m eval run ...``: the run spread over processes (and GPUs).

Every rank embeds its share of every pending task's cache batches (batch i belongs to rank i mod N; each batch
is committed atomically, so a rank that dies leaves nothing half-written and a rerun computes only what is
missing), waits for the others, then probes its share of the tasks (task i belongs to rank i mod N) and writes
their ``tasks/<task>.json``; rank 0 waits for all of them and writes ``scores.csv``. Each task's probe is
computed exactly as in a single process, so the scores are identical. Process group: gloo on CPU, nccl with
``--device cuda`` (one GPU per rank, ``LOCAL_RANK``). Without torchrun (no ``WORLD_SIZE``) everything is one rank.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

BARRIER_TIMEOUT = timedelta(days=2)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank, world_size; rank 0 writes the run's summary files."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether item ``index`` of a list every rank holds (a task, a cache batch) is this rank's."""
        return index % self.world_size == self.rank

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing to wait for in a single process)."""
        if self.world_size > 1:
            dist.barrier()


def check_device(device: str) -> None:
    """A clear error for ``--device cuda`` on a machine without a usable GPU."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is available to torch {torch.__version__} here "
                         "(use --device cpu)")


def start(device: str) -> Ranks:
    """Join torchrun's process group when launched by it (WORLD_SIZE > 1); a single Ranks() otherwise."""
    check_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Ranks()
    if device.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"rank with LOCAL_RANK {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                             "use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # ranks wait at barriers while others probe their tasks: allow far more than the 30 min default
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo", timeout=BARRIER_TIMEOUT)
    return Ranks(rank=dist.get_rank(), world_size=dist.get_world_size())


def stop(ranks: Ranks) -> None:
    """Leave the process group (after a last barrier, so no rank exits while others still need it)."""
    if ranks.world_size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
