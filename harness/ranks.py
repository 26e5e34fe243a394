"""What the ranks of a torchrun study share: decisions made on rank 0, and every rank's failures.

Every rank trains a study's runs together; rank 0 alone reads and writes the study folder
and probes each trained model, while the other ranks wait for it in `agree`. That wait runs
on its own gloo group with a timeout of `WAIT` (a day), not on the training group, whose
timeout (NCCL's 10 minutes, gloo's 30) is meant to catch a hang inside a training step:
probing a BERT-base model on full task sets takes longer than that, and the other ranks
cannot start the next run without rank 0 anyway, so releasing them would gain nothing. A
failure on any rank reaches every rank through `agree`, so all of them record the run as
failed and go on to the next one together. Outside torchrun every function here is local.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")
WAIT = timedelta(days=1)  # the longest rank 0 may probe one run while the others wait


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def from_main(decide: Callable[[], T]) -> T:
    """``decide()`` run on rank 0 (it may read and move files), its result on every rank."""
    if not dist.is_initialized():
        return decide()
    box: list[Any] = [decide() if is_main() else None]
    dist.broadcast_object_list(box, src=0, group=_waiting_group())
    return box[0]


def agree(failure: tuple[str, str] | None) -> list[tuple[int, str, str]]:
    """Every rank's failure in the step just finished, on every rank: ``(rank, message,
    traceback)`` for each rank whose ``failure`` was not None. Each rank waits here until all
    have arrived (rank 0 after probing), for up to `WAIT`."""
    if not dist.is_initialized():
        return [] if failure is None else [(0, *failure)]
    got: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(got, failure, group=_waiting_group())
    return [(rank, *f) for rank, f in enumerate(got) if f is not None]


_group: tuple[Any, Any] | None = None  # (the default group it was made under, the waiting group)


def _waiting_group() -> Any:
    """A gloo group over every rank with the long timeout, made on first use (every rank gets
    there at the same point: the first run's decision) and again under a new default group."""
    global _group
    if _group is None or _group[0] is not dist.group.WORLD:
        _group = (dist.group.WORLD, dist.new_group(backend="gloo", timeout=WAIT))
    return _group[1]
