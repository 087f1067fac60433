"""Choosing the device and the mixed-precision type, with errors that say what this machine has."""

from __future__ import annotations

import os
from typing import Literal, NamedTuple

import torch

from medseg_zoo.errors import DeviceError

__all__ = ["AMP_MODES", "Process", "agree", "amp_dtype", "barrier", "bf16_native_on_cpu", "process", "resolve_device"]

AmpMode = Literal["auto", "bf16", "fp16", "off"]
AMP_MODES = ("auto", "bf16", "fp16", "off")


def _available() -> str:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = f"cuda:0 to cuda:{count - 1}" if count else "no CUDA GPU"
    return f"this machine has cpu and {gpus}"


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (the first CUDA GPU when there is one, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...

    Raises:
        DeviceError: For a device string torch does not know, or a GPU this machine does not have.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"unknown device {spec!r} ({exc}); expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        index = device.index or 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} is not available: {_available()}; use --device cpu or auto")
    elif device.type != "cpu":
        raise DeviceError(f"device {spec!r} is not supported; expected auto, cpu, cuda or cuda:N")
    return device


class Process(NamedTuple):
    """This process's place among the processes ``torchrun`` started (rank 0 of 1 without it)."""

    rank: int
    world: int
    local_rank: int


def process(device: str | torch.device = "auto") -> tuple[Process, torch.device]:
    """This process's rank under ``torchrun``, and its device: `resolve_device`, with each process of a
    multi-process run on its own GPU (``cuda:LOCAL_RANK``) when the device is a GPU."""
    env = os.environ
    me = Process(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))
    resolved = resolve_device(device)
    if me.world > 1 and resolved.type == "cuda":
        resolved = resolve_device(f"cuda:{me.local_rank}")
    return me, resolved


def bf16_native_on_cpu() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 autocast is emulated and slower."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def amp_dtype(device: torch.device, mode: AmpMode | bool | None, *, cpu_auto: bool) -> torch.dtype | None:
    """The autocast dtype for ``mode`` on ``device``, or ``None`` for float32.

    Args:
        device: Where the network runs.
        mode: ``"auto"`` / ``None``: bf16 on CUDA GPUs that have it (fp16 on older ones) and, when
            ``cpu_auto``, on CPUs with native bf16; ``"bf16"`` / ``"fp16"`` / ``True`` (bf16, or fp16 on GPUs
            without bf16) force it; ``"off"`` / ``False``: float32.
        cpu_auto: Whether ``"auto"`` may pick bf16 on a CPU with native bf16 (measured faster for inference).

    Raises:
        DeviceError: For an unknown mode, or fp16 on the CPU (torch's CPU autocast is meant for bf16).
    """
    if mode not in (*AMP_MODES, True, False, None):
        raise DeviceError(f"unknown mixed-precision mode {mode!r}; expected one of {', '.join(AMP_MODES)}")
    cuda = device.type == "cuda"
    if mode in ("off", False):
        return None
    if mode in ("auto", None):
        if not (cuda or (cpu_auto and bf16_native_on_cpu())):
            return None
        mode = True
    if mode is True:
        return torch.bfloat16 if not cuda or torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and not cuda:
        raise DeviceError("fp16 mixed precision needs a CUDA GPU; on the CPU use --amp bf16 or off")
    return torch.bfloat16 if mode == "bf16" else torch.float16


def agree(value: float, world: int, device: torch.device) -> float:
    """Rank 0's value on every process (decisions from timings, which differ between processes)."""
    if world > 1:
        import torch.distributed as dist

        shared = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.broadcast(shared, src=0)
        return shared.item()
    return value


def barrier(world: int) -> None:
    """Wait for every process of a distributed run (nothing outside one)."""
    import torch.distributed as dist

    if world > 1 and dist.is_initialized():
        dist.barrier()
