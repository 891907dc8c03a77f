"""Data-parallel training under ``torchrun`` (DistributedDataParallel), with the results of one process.

``torchrun --nproc_per_node N -m eqspike distill ...`` starts N processes; each reads RANK, WORLD_SIZE
and LOCAL_RANK from the environment. Every optimiser step uses the same global batch as a single
process (``data.batch_order``); each rank takes an interleaved shard of it (``shard``). The losses
are sums over the shard divided by the *global* batch's counts (``distillation.Share``), multiplied by
N because DDP averages gradients over ranks, so the gradient is that of the one-process loss up to the
order of floating-point additions. One process with ``micro_batches=N`` computes exactly the parts
that N processes compute, and adds their gradients in the same order: the same weights, bit for bit.

torch's DistributedSampler is not used: it shuffles each rank's shard independently, so the global
batches (and the result) would depend on the number of processes. ``shard`` is its deterministic
counterpart for the batches of ``batch_order``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from eqspike.errors import EqspikeError

# Rank 0 writes checkpoints and the best student while the other ranks wait at their next collective,
# and a rank may take a while to load a large teacher first: allow for that (NCCL's default is 10 min).
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Sharding:
    """This process's place in the job: rank r of world_size N (N = 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def mean_of(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rank-averaged copies of detached scalars (for logging: each rank holds N x its share)."""
        if not self.distributed:
            return values
        names = list(values)
        stacked = torch.stack([values[n].detach().float() for n in names])
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        return dict(zip(names, stacked / self.world_size))

    def gather(self, local: object) -> list[object]:
        """Every rank's ``local`` (any picklable object), in rank order, on every rank."""
        if not self.distributed:
            return [local]
        gathered: list[object] = [None] * self.world_size
        dist.all_gather_object(gathered, local)
        return gathered

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_ok(self, ok: bool) -> bool:
        """True on every rank when ``ok`` is True on every rank (to stop all of them on one error)."""
        return all(self.gather(ok))


def from_environment() -> Sharding:
    """The sharding torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK (one process when unset)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise EqspikeError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({error})") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise EqspikeError(f"RANK={rank} and WORLD_SIZE={world_size} do not describe a process of the job")
    return Sharding(rank, world_size, local_rank)


def initialise(device_name: str) -> tuple[Sharding, torch.device]:
    """Join the process group when run under torchrun (NCCL on CUDA, gloo on CPU) and pick this
    rank's device: cuda:LOCAL_RANK on CUDA."""
    from eqspike.runtime.devices import resolve_device

    sharding = from_environment()
    device = resolve_device(device_name)
    if device.type == "cuda":
        if sharding.local_rank >= torch.cuda.device_count():
            raise EqspikeError(
                f"LOCAL_RANK={sharding.local_rank} has no GPU: this machine has "
                f"{torch.cuda.device_count()}; start at most that many processes per node "
                f"(torchrun --nproc_per_node) or use --device cpu"
            )
        device = torch.device("cuda", sharding.local_rank)
        torch.cuda.set_device(device)
    if sharding.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=PROCESS_GROUP_TIMEOUT)
    return sharding, device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device_name: str) -> Iterator[tuple[Sharding, torch.device]]:
    """Join torchrun's process group for the ``with`` block (one process: nothing to join) and leave
    it cleanly. On a normal exit the ranks first meet at a barrier, so that no rank tears the group
    down while another still talks to it (gloo aborts the process then)."""
    sharding, device = initialise(device_name)
    try:
        yield sharding, device
    except BaseException:
        shutdown()
        raise
    sharding.barrier()
    shutdown()


def shard(indices: Sequence[int], sharding: Sharding, micro_batches: int = 1) -> list[tuple[list[int], bool]]:
    """This rank's parts of one global batch: ``micro_batches`` interleaved parts, part m being
    ``indices[m * N + rank :: N * micro_batches]`` (N = world size).

    The global batch is cut into N * micro_batches interleaved parts, and part j goes to rank
    j mod N. So one process with 2 micro-batches computes exactly the parts that 2 processes compute
    with one each (tests/distill/test_distributed.py relies on this). A part left without examples (a last
    batch smaller than the number of parts) gets the batch's first example and ``False``: it must
    still run forward and backward (DDP reduces gradients from every rank) but with weight 0.
    """
    stride = sharding.world_size * micro_batches
    parts = []
    for m in range(micro_batches):
        mine = list(indices[m * sharding.world_size + sharding.rank :: stride])
        parts.append((mine, True) if mine else ([indices[0]], False))
    return parts
