"""Several processes, one training run: ``torchrun`` starts them, DistributedDataParallel keeps them in step.

`edgetl finetune` and `edgetl distill` run unchanged under ``torchrun``: its environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``) turns this on; without it every helper here is a no-op and a run is one
process on the CPU, as before. The choices, each made so that W processes compute what one would:

- ``--batch-size`` is the global batch: each rank takes ``B / W`` samples a step (B must divide by W), so
  the steps per epoch, the LR schedule and every update (batch-norm statistics aside) are a single run's.
- Training order: DistributedSampler's permutation of ``seed + epoch`` (``set_epoch`` every epoch), rank r
  taking positions ``r, r + W, ...``. One process uses the same sampler with W = 1, so W ranks see the same
  global batches as one process (DistributedSampler pads the split to a multiple of W by repeating a few
  samples; none when W divides it).
- Evaluation (validation, test, the frozen-prefix cache, the teacher-logit cache): rank r runs samples
  ``r, r + W, ...`` (no padding) and the rows are all-gathered back into dataset order, so every rank holds
  the whole split's outputs and computes identical metrics and early-stopping decisions (the decision is
  also broadcast from rank 0, belt and braces).
- Batch norm: per-rank statistics while training (no SyncBatchNorm, which timm's fused norm+activation
  layers do not convert to and which needs GPUs); the running means and variances are averaged over the
  ranks after each epoch, so every rank evaluates the same model.
- Rank 0 writes the run folder, checkpoints and metrics and shows progress bars; other ranks log warnings
  only. Backend: NCCL with ``cuda:LOCAL_RANK`` when CUDA is available, else gloo on the CPU.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from edgetl.errors import ConfigError

log = logging.getLogger("edgetl")
T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world`` processes and the device it trains on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def active(self) -> bool:
        """More than one process: gradients, metrics and decisions go through the process group."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0


_ctx = Context()
_entered = False


def current() -> Context:
    """This process's context (the single-process CPU one outside :func:`session`)."""
    return _ctx


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher setting ``WORLD_SIZE`` and ``RANK``) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def is_main_process() -> bool:
    """Rank 0 of a launched run, or a single process (what prints a command's summary)."""
    return os.environ.get("RANK", "0") == "0"


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


@contextmanager
def session() -> Iterator[Context]:
    """Join the process group for one command (a no-op unless launched; nested calls reuse the outer one).

    On exit the process group is destroyed, so every rank ends cleanly.
    """
    global _ctx, _entered
    if _entered or not launched():
        yield _ctx
        return
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    created = world > 1 and not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    quiet, progress = _BelowWarning(), os.environ.get("EDGETL_PROGRESS")
    if rank != 0:
        log.addFilter(quiet)
        os.environ["EDGETL_PROGRESS"] = "0"
    _ctx, _entered = Context(rank, world, local, device), True
    if rank == 0:
        log.info("distributed: %d processes (%s, %s), global batch split evenly over them", world,
                 "nccl" if cuda else "gloo", "cuda" if cuda else "cpu")
    try:
        yield _ctx
    finally:
        _ctx, _entered = Context(), False
        log.removeFilter(quiet)
        if rank != 0:
            if progress is None:
                os.environ.pop("EDGETL_PROGRESS", None)
            else:
                os.environ["EDGETL_PROGRESS"] = progress
        if created:
            dist.destroy_process_group()


def seed_ranks(seed: int) -> None:
    """Give each rank its own random stream (dropout, augmentation) once the model and its caches are built
    identically; one process keeps its stream as it is."""
    if _ctx.active:
        torch.manual_seed(seed + 1000 * _ctx.rank)


def _comm_device() -> torch.device:
    return _ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has published a folder the others read)."""
    if _ctx.active:
        dist.barrier()


def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not _ctx.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main_only(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result to every rank."""
    return broadcast(fn() if _ctx.main else None)


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (so that all ranks take the same branch)."""
    if not _ctx.active:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def sum_all(*values: float) -> tuple[float, ...]:
    """Each value summed over the ranks."""
    if not _ctx.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return tuple(t.cpu().tolist())


def sum_dict(values: dict[str, float]) -> dict[str, float]:
    """A dict of sums, summed over the ranks (every rank holds the same keys)."""
    keys = sorted(values)
    return dict(zip(keys, sum_all(*(values[k] for k in keys)), strict=True))


@torch.no_grad()
def average_buffers(module: nn.Module) -> None:
    """Average floating-point buffers (batch-norm running statistics) over the ranks; others from rank 0."""
    if not _ctx.active:
        return
    device = _comm_device()
    for buf in module.buffers():
        t = buf.detach().to(device)
        if buf.is_floating_point():
            dist.all_reduce(t)
            t /= _ctx.world
        else:
            dist.broadcast(t, src=0)
        buf.copy_(t)


def wrap(module: nn.Module) -> nn.Module:
    """``module`` under DistributedDataParallel when several processes train (as it is otherwise).

    Called again whenever the set of trainable parameters changes (progressive unfreezing): DDP syncs the
    gradients of the parameters that required them when it was built.
    """
    if not _ctx.active or not any(p.requires_grad for p in module.parameters()):
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [_ctx.device.index] if _ctx.device.type == "cuda" else None
    # rank-local buffers between forwards (averaged after each epoch); newer torch renames the option
    renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    local = {"forward_sync_buffers": False} if renamed else {"broadcast_buffers": False}
    return DistributedDataParallel(module, device_ids=ids, **local)


def train_loader(loader: DataLoader, seed: int) -> DataLoader:
    """``loader``'s dataset and collation, sampled by epoch-seeded permutation: this rank's share of each
    global batch of ``loader.batch_size`` (call :func:`set_epoch` every epoch)."""
    world = _ctx.world
    if loader.batch_size % world:
        raise ConfigError(f"--batch-size {loader.batch_size} is the global batch and must divide evenly over "
                          f"the {world} processes", f"use a multiple of {world}")
    sampler = DistributedSampler(loader.dataset, num_replicas=world, rank=_ctx.rank, shuffle=True, seed=seed)
    return DataLoader(loader.dataset, batch_size=loader.batch_size // world, sampler=sampler,
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                      persistent_workers=loader.persistent_workers, generator=loader.generator)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reseed a :func:`train_loader`'s permutation for ``epoch`` (the same on every rank)."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


class Strided(Sampler[int]):
    """Samples ``rank, rank + world, ...`` of ``n``, in order and without padding (an evaluation shard)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def eval_loader(loader: DataLoader) -> DataLoader:
    """This rank's shard of an in-order evaluation loader (the loader itself in one process, or when the
    split has fewer samples than ranks). ``loop.predict_logits`` gathers a shard's outputs back whole."""
    n = len(loader.dataset)
    if not _ctx.active or n < _ctx.world:
        return loader
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=Strided(n, _ctx.rank, _ctx.world),
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                      persistent_workers=loader.persistent_workers)


def is_shard(loader: Any) -> bool:
    """Whether ``loader`` is an :func:`eval_loader` shard (its outputs need :func:`gather_rows`)."""
    return isinstance(getattr(loader, "sampler", None), Strided)


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """Every rank's strided shard of rows put back into dataset order, on every rank."""
    if not _ctx.active:
        return rows
    world, device = _ctx.world, _comm_device()
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([len(rows)], dtype=torch.int64, device=device))
    sizes = [int(c.item()) for c in counts]
    padded = torch.zeros((max(sizes), *rows.shape[1:]), dtype=torch.from_numpy(rows[:0]).dtype, device=device)
    padded[: len(rows)] = torch.from_numpy(rows).to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = np.empty((sum(sizes), *rows.shape[1:]), dtype=rows.dtype)
    for r, (part, size) in enumerate(zip(parts, sizes, strict=True)):
        out[r::world] = part[:size].cpu().numpy()
    return out


def gather_items(items: list[T]) -> list[T]:
    """Like :func:`gather_rows` for a list of picklable items (e.g. tensors of different lengths)."""
    if not _ctx.active:
        return items
    world = _ctx.world
    parts: list[list[T] | None] = [None] * world
    dist.all_gather_object(parts, items)
    out: list[Any] = [None] * sum(len(p) for p in parts)
    for r, part in enumerate(parts):
        out[r::world] = part
    return out
