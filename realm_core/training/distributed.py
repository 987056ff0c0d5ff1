"""torch.distributed for the training loop: process-group set-up from torchrun's environment, and
the few collectives the loop and the objectives need.

`torchrun --nproc-per-node N -m flows.<stage>` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK and a rendezvous in the environment; `init_from_env` joins them (gloo on CPU, NCCL on
CUDA, each process on cuda:LOCAL_RANK). Without those variables everything here is a no-op
for one process, so the same code runs under `python -m` and under torchrun.

Contrastive objectives (ICT, later REALM's retriever loss) score every rank's queries against all
ranks' documents, as ORQA and DPR do: `gather_with_grad` concatenates the documents of every rank
in rank order and sends each rank the gradient of its own rows, summed over all ranks' losses.
With DistributedDataParallel averaging parameter gradients over ranks, N processes with
micro-batch b then compute the gradient of the mean loss over the N·b examples, as one process
with batch N·b does.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from realm_core.errors import RealmError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes models, checkpoints and metrics."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def env_world_size() -> int:
    """WORLD_SIZE from the environment (torchrun sets it), 1 when absent."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise RealmError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def env_rank() -> int:
    """RANK from the environment, 0 when absent."""
    return int(os.environ.get("RANK", "0") or 0)


def init_from_env(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (idempotent); one process: DistInfo()."""
    if dist.is_available() and dist.is_initialized():
        return info()
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60))
    except (RuntimeError, ValueError) as exc:
        raise RealmError(f"torch.distributed: cannot join the process group ({exc})") from None
    return info()


def info() -> DistInfo:
    """Rank, world size and local rank of this process (DistInfo() when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    """Leave the process group (end of a torchrun job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if info().distributed:
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather in forward; in backward each rank gets the sum over ranks of its rows' gradient.

    Written with all_reduce rather than torch.distributed.nn's all_gather, whose backward needs a
    reduce-scatter or all-to-all that not every backend has.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D401
        world, rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        parts[rank] = tensor  # keeps the exact local values (all_gather may round-trip them)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D401
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor` concatenated along dim 0 in rank order, differentiable; the input
    itself for one process. All ranks must pass the same shape."""
    if not info().distributed:
        return tensor
    return _GatherWithGrad.apply(tensor)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if `flag` is true on any rank (so every rank stops at the same step)."""
    if not info().distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(values: dict[str, float | None], device: torch.device) -> dict[str, float | None]:
    """Per-key mean over the ranks that have a value (None = no value on this rank)."""
    if not info().distributed:
        return values
    keys = sorted(values)
    # One all_reduce of [sum, count] per key; a rank without a value adds [0, 0].
    rows = [[values[k], 1.0] if values[k] is not None else [0.0, 0.0] for k in keys]
    t = torch.tensor(rows, dtype=torch.float64, device=device).reshape(-1, 2)
    dist.all_reduce(t)
    return {k: (float(t[i, 0] / t[i, 1]) if t[i, 1] > 0 else None) for i, k in enumerate(keys)}
