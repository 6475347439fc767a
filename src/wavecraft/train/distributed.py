"""Data parallelism through ``torch.distributed`` as launched by ``torchrun``.

The same command scales from one CPU process to many multi-GPU nodes: without ``WORLD_SIZE > 1`` in the
environment nothing is initialised and every helper behaves as the single process (rank 0 of 1). Under
``torchrun`` the process group uses NCCL when CUDA is available and gloo otherwise.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def init_from_env() -> tuple[int, int]:
    """Join the process group described by torchrun's variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``); return ``(rank, world_size)``. A single process (``WORLD_SIZE`` unset or 1) gets ``(0, 1)``
    and no process group, so nothing distributed is needed to train on one device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        if torch.cuda.is_available():
            # One GPU per process: pick it before NCCL creates its communicator on the default device.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this is the process that writes files (rank 0; the only one without a process group)."""
    return rank_and_world_size()[0] == 0


def barrier() -> None:
    """Wait for every rank; a no-op for a single process."""
    if rank_and_world_size()[1] > 1:
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (a new tensor; the input is untouched). Identity for a single process."""
    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world_size


def from_main(value: int, device: torch.device | str = "cpu") -> int:
    """Rank 0's ``value`` on every rank (the others' are ignored); ``device``: where the backend communicates
    (CUDA for NCCL). Identity for a single process."""
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return value
    shared = torch.tensor([value if rank == 0 else 0], dtype=torch.long, device=device)
    dist.broadcast(shared, src=0)
    return int(shared.item())


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average the ``.grad`` of ``parameters`` over ranks in place (one collective); a no-op for one process.

    For a module trained without a DDP wrapper (such as the codec's discriminator): every rank must hold
    gradients for the same parameters.
    """
    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Overwrite ``module``'s parameters and buffers with those of rank ``src``; a no-op for one process."""
    if rank_and_world_size()[1] == 1:
        return
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        dist.broadcast(tensor, src=src)


def shard(batch: T, rank: int, world_size: int) -> T:
    """This rank's slice of a global batch along dim 0.

    ``batch`` is a tensor, ``None``, or a tuple/list/dataclass (such as ``Conditions``) of them, sliced alike.
    Rank ``r`` gets rows ``[r * B / W, (r + 1) * B / W)``: contiguous blocks keep the concatenation of the shards
    in rank order equal to the global batch. ``B`` must be a multiple of ``W``: uneven shards would weight rows
    differently once DDP averages the per-rank gradients, so the run would no longer match a single process.
    """
    if world_size == 1:
        return batch
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of size {world_size}")
    return _shard(batch, rank, world_size)


def _shard(batch: Any, rank: int, world_size: int) -> Any:
    if batch is None:
        return None
    if isinstance(batch, torch.Tensor):
        rows = batch.shape[0]
        if rows % world_size:
            raise ValueError(f"global batch of {rows} rows does not split evenly over {world_size} ranks; "
                             f"use a global batch size that is a multiple of the world size")
        size = rows // world_size
        return batch[rank * size:(rank + 1) * size]
    if isinstance(batch, (tuple, list)):
        return type(batch)(_shard(x, rank, world_size) for x in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: _shard(getattr(batch, f.name), rank, world_size)
                                             for f in dataclasses.fields(batch) if f.init})
    raise TypeError(f"cannot shard a {type(batch).__name__} along the batch dimension")


def cleanup() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
