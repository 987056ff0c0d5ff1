"""Devices and compute precision, chosen once per stage from `device` and `precision` params.

`device: auto` is CUDA when torch sees a GPU, else the CPU. `precision: auto` picks bfloat16
autocast where the hardware computes it natively (CUDA with bf16 support; CPUs with AVX512-BF16 or
AMX, where oneDNN runs bf16 matmuls at ~2x the fp32 rate) and float32 elsewhere: on a CPU without
native bf16, autocast emulates it and is slower than fp32. fp16 is a CUDA-only choice (CPU fp16
matmuls are emulated); training pairs it with a gradient scaler (`realm_core/training/loop.py`).

Autocast only changes the dtype of matmul-like ops; weights, optimizer states, losses reduced in
float32 and every vector written to disk stay float32.
"""

from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path
from typing import Iterator

import torch

from realm_core.errors import RealmError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | None = "auto") -> torch.device:
    """`auto`/None -> cuda if available else cpu; `cpu`, `cuda`, `cuda:N` as given (checked)."""
    name = (device or "auto").strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise RealmError(f"device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RealmError(f"device: {name!r} requested but torch sees no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RealmError(f"device: {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return dev


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 matmuls natively (AVX512-BF16 or AMX-BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str | None, device: torch.device | str) -> str:
    """The concrete precision ("fp32", "bf16", "fp16") for `precision` on `device`."""
    device = torch.device(device)
    name = (precision or "auto").strip()
    if name not in PRECISIONS:
        raise RealmError(f"precision: expected one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise RealmError("precision: fp16 needs a CUDA device (CPU fp16 matmuls are emulated); use bf16 or fp32")
    return name


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision; None for fp32."""
    return _DTYPES.get(precision)


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str) -> Iterator[None]:
    """Autocast for a resolved precision on `device` (a no-op for fp32)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield
