"""Distributed setup in one place (nanochat's common.py shape): torchrun's environment -> ranks.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and MASTER_ADDR / MASTER_PORT) in each process;
without them this is a single process and nothing is initialised.

    is_distributed, rank, local_rank, world_size, device = init_distributed()
    print0(f"world size {world_size}")            # printed by rank 0 only
    if is_master(): save_checkpoint(...)
    ...
    cleanup()

Backend: NCCL when CUDA is available, gloo on CPU (override with `backend=`).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def get_dist_info() -> tuple[bool, int, int, int]:
    """(is_distributed, rank, local_rank, world_size) from torchrun's environment variables."""
    if all(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return True, int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    return False, 0, 0, 1


def init_distributed(backend: str | None = None) -> tuple[bool, int, int, int, torch.device]:
    """Join the process group when launched by torchrun; pick this process's device.

    -> (is_distributed, rank, local_rank, world_size, device): cuda:LOCAL_RANK on GPU machines, cpu
    otherwise (and with backend="gloo", which keeps a run on CPU). Safe to call twice."""
    is_distributed, rank, local_rank, world_size = get_dist_info()
    use_cuda = torch.cuda.is_available() and backend in (None, "nccl")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if is_distributed and not dist.is_initialized():
        backend = backend or ("nccl" if use_cuda else "gloo")
        # device_id binds NCCL's communicator to this rank's GPU up front
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    return is_distributed, rank, local_rank, world_size, device


def is_master() -> bool:
    """True on global rank 0 (and in a single process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return get_dist_info()[1] == 0


def print0(*args, **kwargs) -> None:
    if is_master():
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
