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
from typing import Iterator, TypeVar

import torch

from realm_core.errors import RealmError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
StageT = TypeVar("StageT")  # a stage config (pydantic model) with `device` and `precision` fields


def resolve_device(device: str | torch.device | None = "auto", *, key: str = "device") -> torch.device:
    """`auto`/None -> cuda if available else cpu; `cpu`, `cuda`, `cuda:N` as given (checked).

    `key` names the setting in errors (e.g. "build_index.device")."""
    name = str(device or "auto").strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise RealmError(f"{key}: expected auto, cpu, cuda or cuda:N, got {name!r}")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RealmError(f"{key}: {name!r} requested but torch sees no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RealmError(f"{key}: {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
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


def resolve_precision(precision: str | None, device: torch.device | str, *, key: str = "precision") -> str:
    """The concrete precision ("fp32", "bf16", "fp16") for `precision` on `device`; resolving a
    resolved name returns it (checked), so every layer may call this on what it is handed.

    `key` names the setting in errors (e.g. "tag_entities.precision")."""
    device = torch.device(device)
    name = (precision or "auto").strip()
    if name not in PRECISIONS:
        raise RealmError(f"{key}: expected one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise RealmError(f"{key}: fp16 needs a CUDA device (CPU fp16 matmuls are emulated); use bf16 or fp32")
    return name


def resolve_stage(cfg: StageT, section: str) -> StageT:
    """A copy of a stage config whose `device` and `precision` fields hold resolved values
    ("cpu"/"cuda[:N]", "fp32"/"bf16"/"fp16").

    A stage calls this once, before it hands the config to shard tasks: a task in another process
    (a process pool, a Dask worker on another machine) must run with what the stage chose, not
    re-resolve `auto` against its own hardware, or one index could mix precisions. Errors name
    `<section>.device` / `<section>.precision`."""
    device = resolve_device(cfg.device, key=f"{section}.device")
    precision = resolve_precision(cfg.precision, device, key=f"{section}.precision")
    return cfg.model_copy(update={"device": str(device), "precision": precision})


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision; None for fp32."""
    return _DTYPES.get(precision)


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str) -> Iterator[None]:
    """Autocast for a resolved precision on `device` (a no-op for fp32).

    Inference wraps its whole batch loop in one region under `torch.no_grad()`: autocast then
    keeps the low-precision copy of each weight until the region exits, so every weight is cast
    once per call instead of once per batch. (Its cast cache is off under `inference_mode`. On the
    2-core CPU of docs/benchmarks.md the saving was within noise for MiniLM; it matters more for
    larger models and small batches.)"""
    dtype = autocast_dtype(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield
