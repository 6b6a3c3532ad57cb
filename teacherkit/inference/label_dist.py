"""``teacherkit label`` in several processes (``torchrun``, ``accelerate launch``, Slurm
with torchrun): which process this is, which images are its own, and the two points where
the processes wait for each other.

Labelling has no gradients to reduce: the processes only need to agree on *when* (nobody
writes a shard before every process has checked the output; rank 0 merges after every
shard is complete). So this uses ``torch.distributed`` directly with the gloo backend,
on GPUs too: gloo carries those small control messages without tying each process to a
CUDA device or to NCCL's watchdog timeout (a fast rank may wait hours for a slow one at the
final barrier), and accelerate's state object would add nothing but its own device rules.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from teacherkit.errors import TeacherkitError

#: How long a process waits for the others (the fastest rank waits for the slowest one's
#: last image before the merge). A launcher like torchrun stops every process when one
#: dies, so this only bounds a hang outside one.
WAIT = timedelta(hours=24)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Image ``index`` (in sorted order) is labelled by this process."""
        return index % self.world == self.rank


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise TeacherkitError(f"environment variable {name}={raw!r}: not a whole number (set by the "
                              "launcher: torchrun or accelerate launch)") from None


def ranks_from_env() -> Ranks:
    """This process's place among those the launcher started (1 process without one)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise TeacherkitError(f"environment: RANK={rank} with WORLD_SIZE={world} is not a process of the run")
    return Ranks(rank, world, _env_int("LOCAL_RANK", 0))


def device_for(ranks: Ranks, device: str | None) -> str | None:
    """``cuda:LOCAL_RANK`` for ``--device cuda`` (or none given, CUDA present) under several
    processes, so each process uses its own GPU; else ``device`` as given."""
    if ranks.world == 1 or device not in (None, "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        return device
    return f"cuda:{ranks.local_rank % torch.cuda.device_count()}"


@contextmanager
def process_group(ranks: Ranks) -> Iterator[None]:
    """A gloo process group for the run (from the launcher's MASTER_ADDR/MASTER_PORT), or
    nothing in 1 process; one that already exists is used and left alone."""
    if ranks.world == 1:
        yield
        return
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.world, timeout=WAIT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def wait_for_all(ranks: Ranks) -> None:
    """Every process reaches this point before any goes on (nothing in 1 process)."""
    if ranks.world == 1:
        return
    import torch.distributed as dist

    dist.barrier()
