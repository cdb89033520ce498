"""Work dealt over the processes of a ``torchrun`` launch: each rank takes its share of a list of jobs (cases,
slices, comparison rows), rank 0 gathers the results; a single process is the one-rank case of the same code.

NCCL on CUDA, gloo on CPU (:func:`init_distributed`). Results are gathered as Python objects
(``torch.distributed.all_gather_object``), so they need only be picklable; tensors to be summed over ranks use
:func:`all_reduce_sum`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "init_distributed",
    "is_distributed",
    "rank_and_world",
    "is_main_process",
    "shard",
    "gather",
    "dealt_index",
    "gather_dealt",
    "map_in_order",
    "all_reduce_sum",
    "barrier",
]


def is_distributed() -> bool:
    """Whether a process group is up (``torchrun`` launch with :func:`init_distributed` called)."""
    return dist.is_available() and dist.is_initialized()


def init_distributed() -> bool:
    """Join the process group of a ``torchrun`` launch (``WORLD_SIZE`` > 1 in the environment) if not yet joined:
    NCCL when CUDA is available (this rank's GPU set from ``LOCAL_RANK``), gloo otherwise.

    Returns:
        whether this call created the group (so the caller destroys it when done).
    """
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl")
    else:
        dist.init_process_group(backend="gloo")
    return True


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` in a single process."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """Whether this process writes the results (rank 0, or the only process)."""
    return rank_and_world()[0] == 0


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: every ``world``-th item from position ``rank`` (the order within a share is the
    order of ``items``; ranks may get one item more or less than each other)."""
    rank, world = rank_and_world()
    return list(items[rank::world])


def gather(local: Sequence[Any]) -> list[Any]:
    """Every rank's ``local`` results concatenated in rank order, on every rank (``local`` unchanged in one process).

    Results of :func:`shard` come back interleaved by rank, not in the order of the shared list: key them (e.g. by
    case id) and sort where order matters.
    """
    if not is_distributed():
        return list(local)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(local))
    return [item for part in parts for item in part]


def dealt_index(position: int) -> int:
    """The index in a shared list of this rank's ``position``-th item, when the list is dealt over the ranks as
    :func:`shard` and MONAI's ``DistributedSampler(shuffle=False, even_divisible=False)`` deal it (every
    ``world``-th item from position ``rank``): ``rank + position * world`` (``position`` in one process)."""
    rank, world = rank_and_world()
    return rank + position * world


def gather_dealt(local: Sequence[T]) -> list[T]:
    """Every rank's ``local`` items (its share of a list dealt as :func:`dealt_index` says, in order) on every rank,
    back in the order of the shared list (``local`` unchanged in one process): what one process going through the
    whole list would hold."""
    tagged = gather([(dealt_index(position), item) for position, item in enumerate(local)])
    return [item for _, item in sorted(tagged, key=lambda pair: pair[0])]


def map_in_order(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(item) for item in items]`` on every rank, each item computed on one rank only (its :func:`shard` of the
    positions; ``items`` is indexed, so a MONAI ``Dataset`` loads only this rank's items) and the results gathered
    back into the order of ``items``. ``fn`` must not depend on the rank it runs on (seed by item, not by process)."""
    return gather_dealt([fn(items[i]) for i in shard(range(len(items)))])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over ranks, in place (unchanged in one process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait for every rank (nothing in one process)."""
    if is_distributed():
        dist.barrier()
