"""DistributedDataParallel plumbing on torch's own launcher (torchrun).

``mxa-edge train --devices N`` re-runs the same command under ``torch.distributed.run``
with N processes; ``torchrun --nnodes ... -m mxa_edge_cli.app train ...`` works the same way
across nodes. Every rank builds the same data and teacher; the global batch is split evenly
across ranks (rank r takes rows r, r+N, ... of each batch drawn from the shared seeded
order), gradients are averaged by DDP, rank 0 alone logs and writes files.

Backends: NCCL on CUDA, gloo on CPU. BatchNorm is synchronised across ranks on CUDA
(SyncBatchNorm); PyTorch's SyncBatchNorm is GPU-only, so on CPU each rank normalises with
its own part of the batch, as plain DDP does.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str) -> str:
    """Join the process group torchrun described; returns this rank's device string."""
    if not launched_by_torchrun() or dist.is_initialized():
        return device
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return f"cuda:{local}"
    dist.init_process_group("gloo")
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (no gradient flows through; use for statistics, not losses)."""
    if world_size() == 1:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world_size()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def wrap(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """DDP-wrap for training (SyncBatchNorm on CUDA); identity when not distributed."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device.startswith("cuda"):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DDP(model, device_ids=[torch.cuda.current_device()])
    return DDP(model)


def launch(devices: int, argv: list[str]) -> int:
    """Re-run ``mxa-edge <argv>`` under torch's launcher with ``devices`` processes."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={devices}",
        "-m",
        "mxa_edge_cli.app",
        *argv,
    ]
    return subprocess.call(cmd)
