"""Device and dtype, resolved in one place for every command.

``resolve_device``: ``--device`` as given, else ``cuda:GPU_NUM`` (``LOCAL_RANK`` under torchrun) when CUDA is
available, else ``cpu``. Asking for a CUDA device on a machine without CUDA is a ``UserError``.
``resolve_dtype``: ``auto`` is float16 on CUDA and float32 elsewhere; the names are those of ``DTYPES``.
"""
from __future__ import annotations

import os

import torch

from hrv_diffusion.errors import UserError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)


def resolve_device(device: str | None = None, gpu_num: int = 0) -> str:
    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        try:
            torch.device(device)
        except RuntimeError:
            raise UserError(f"--device {device!r} is not a torch device (examples: cpu, cuda, cuda:1)") from None
        return device
    if not torch.cuda.is_available():
        return "cpu"
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        gpu_num = int(os.environ.get("LOCAL_RANK", 0))
    return f"cuda:{gpu_num}"


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype == "auto":
        return "float16" if str(device).startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPE_CHOICES)}")
    return dtype


def usable_cpus() -> int:
    """CPU cores this process may use: its affinity, capped by a cgroup CPU quota (containers) when one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)
