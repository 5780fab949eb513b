"""Data-parallel helpers for ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK in the environment).

The trainer averages gradients with one all-reduce of a flat buffer per step instead of wrapping
the model in ``DistributedDataParallel``: a generator's training entry point is its ``loss``
method (or a ``loss_fn`` such as VideoFusion's ``pretrain_loss``), not ``forward``, and some
parameters may be unused in a given step (frozen base, class dropout). Averaging every trainable
gradient (zeros where a rank did not touch a parameter) keeps all ranks' optimiser states, and so
their weights, identical: the property DDP guarantees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, List, Tuple

import torch
import torch.distributed as dist

from vfbench.errors import UsageError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"environment variable {name} must be an integer, got {raw!r}; launch with torchrun") from None


def dist_info() -> DistInfo:
    """The process's place in the job (an initialised process group wins over the environment)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return DistInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun job if there is one (nccl on GPU, gloo on CPU); a no-op for one process."""
    info = dist_info()
    if info.world_size <= 1 or dist.is_initialized():
        return info
    if not dist.is_available():
        raise UsageError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise UsageError(f"WORLD_SIZE={info.world_size} but {var} is not set; launch with"
                             " torchrun --nproc_per_node N -m vfbench train ...")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return dist_info()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def broadcast_module(module: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Make every rank start from rank ``src``'s parameters and buffers (what DDP does at wrap time)."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """Average the gradients of ``params`` across ranks with one flat all-reduce."""
    if not info.enabled:
        return
    params: List[torch.nn.Parameter] = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = []
    for p in params:
        if p.grad is None:  # unused on this rank: it still takes part (as zeros) so shapes match
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(info.world_size)
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_flag(flag: bool, device: torch.device, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any rank (a NaN anywhere stops everyone)."""
    if not info.enabled:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable object) on every rank; ``obj`` is ignored on the others.

    With NCCL the pickled bytes travel through ``torch.cuda.current_device()``: set it per rank first.
    """
    if not info.enabled:
        return obj
    box = [obj if info.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any, info: DistInfo) -> List[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank (``[obj]`` for one process)."""
    if not info.enabled:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def shard_range(n: int, rank: int, world_size: int, chunk: int = 1) -> Tuple[int, int]:
    """Rank ``rank``'s contiguous block ``[lo, hi)`` of ``n`` items cut into chunks of ``chunk``.

    The ``ceil(n / chunk)`` chunks are split as ``[r * m // w, (r + 1) * m // w)``, so the blocks
    of ranks 0..w-1 are consecutive, cover ``0..n`` once, and start on a chunk boundary (a block
    may be empty when there are fewer chunks than ranks). ``chunk=1``: ``[r * n // w, (r + 1) * n // w)``.
    """
    if n < 0 or chunk < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard_range(n={n}, rank={rank}, world_size={world_size}, chunk={chunk})")
    m = -(-n // chunk)
    return min(n, rank * m // world_size * chunk), min(n, (rank + 1) * m // world_size * chunk)
