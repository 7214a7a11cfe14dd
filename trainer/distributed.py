"""Data-parallel training under ``torchrun`` (DESIGN.md §9).

``torchrun --nproc_per_node=N main_train.py ...`` starts N processes; each draws the SAME global
batch (same generator seed) and trains on its contiguous slice of it, DistributedDataParallel
averages the gradients (NCCL on GPU, gloo on CPU). Each rank's loss is scaled by
``world * n_local / n_global`` so the averaged gradient is exactly the gradient of the global
batch mean, also for a ragged last batch. SAM's two backward passes are both synchronized, so the
perturbation and the final gradient are the global ones. Only rank 0 writes files.

BatchNorm statistics are per rank (as in standard DDP) unless the model runs on CUDA, where BN
layers become SyncBatchNorm; models without BatchNorm train exactly as in one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str = "cpu") -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); otherwise one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    if not info.enabled:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(model)


def local_slice(n_global: int, info: DistInfo) -> slice:
    """This rank's contiguous part of a global batch of ``n_global`` examples."""
    per = -(-n_global // info.world)
    start = min(info.rank * per, n_global)
    return slice(start, min(start + per, n_global))


def all_reduce_sum_(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def finish(info: DistInfo, code: int = 0) -> None:
    """End a data-parallel process: wait for every rank, leave the group and exit at once.

    ``os._exit`` skips the interpreter's teardown, during which a c10d/gloo helper thread that is
    still joinable made a rank abort now and then ("terminate called without an active
    exception", SIGABRT) after all its work was done. Output is flushed first."""
    if not info.enabled:
        return
    import sys

    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
