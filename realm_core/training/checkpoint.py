"""Pickle-free training checkpoints for the shared loop (every model trains on it).

`torch.save` pickles, and unpickling runs arbitrary code, so nothing here uses it. Layout:

    <checkpoint_dir>/
      latest                 text file: the name of the newest complete checkpoint directory
      step_0000100/
        model.safetensors    the model's state dict
        optimizer.safetensors every optimizer-state tensor, flattened to `state.<param index>.<name>`
        rng.safetensors      torch CPU (and CUDA) generator states (uint8 tensors)
        state.json           optimizer param groups and non-tensor state, the LR scheduler's
                             state_dict, Python's and NumPy's RNG states, and the caller's state

A directory is written under a temporary name and renamed into place, and only then is `latest`
rewritten (atomically), so a kill at any moment leaves the previous checkpoint readable; only the
newest `keep` step directories are kept.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from realm_core.errors import RealmError, first_line
from realm_core.io import atomic_path, write_text_atomic

FORMAT = "realm-train-checkpoint/1"
LATEST = "latest"
_STEP_DIR = re.compile(r"^\.?step_(\d{7,})(\.tmp-\d+)?$")
# The best model so far (an exported model directory, see loop.py's best_metric), one at a time.
_BEST_DIR = re.compile(r"^\.?best_(\d{7,})(\.tmp-\d+)?$")


def step_dir_name(step: int) -> str:
    """`step_0000100` for step 100."""
    return f"step_{step:07d}"


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The global RNG states: torch generators as tensors, Python's and NumPy's as JSON values."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    json_state = {
        "python": [version, list(mt), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, json_state


def restore_rng(tensors: dict[str, torch.Tensor], json_state: dict[str, Any]) -> None:
    """Inverse of `capture_rng` (CUDA states only when the device count matches)."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, mt, gauss = json_state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = json_state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer, scheduler, state: dict[str, Any]) -> Path:
    """Write a complete checkpoint directory at `path` (which must not exist yet)."""
    path = Path(path)
    if path.exists():
        raise RealmError(f"{path}: checkpoint directory already exists")
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, values in opt["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    rng_tensors, rng_json = capture_rng()
    weights, aliases = _dedupe(model.state_dict())
    meta = {
        "format": FORMAT,
        "aliases": aliases,
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
        "scheduler": scheduler.state_dict(),
        "rng": rng_json,
        "state": state,
    }
    with atomic_path(path) as tmp:
        tmp.mkdir()
        save_file(weights, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return path


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors to save, with each shared one saved once (safetensors refuses shared memory: an
    MLM decoder tied to the word embeddings), and {alias: saved name} to restore the others."""
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, value in state.items():
        key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.dtype)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        out[name] = value.detach().cpu().contiguous()
    return out, aliases


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RealmError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RealmError(f"{path}/state.json: unknown checkpoint format")
    return meta


def read_state(path: str | Path) -> dict[str, Any]:
    """The caller's state saved in checkpoint `path`, without loading any tensor (e.g. to compare
    its settings with a new run's before deciding to resume)."""
    return _read_meta(Path(path))["state"]


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer, scheduler) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and every RNG from `path`; returns the caller's state."""
    path = Path(path)
    meta = _read_meta(path)
    device = next(model.parameters()).device
    try:
        weights = load_file(str(path / "model.safetensors"), device=str(device))
        flat = load_file(str(path / "optimizer.safetensors"), device=str(device))
        rng = load_file(str(path / "rng.safetensors"))
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
        raise RealmError(f"{path}: cannot read checkpoint tensors ({first_line(exc)})") from None
    for alias, source in meta.get("aliases", {}).items():
        if source in weights:
            weights[alias] = weights[source]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise RealmError(f"{path}/model.safetensors: does not fit this model ({first_line(exc)})") from None

    state: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    # JSON turns tuples (AdamW's betas) into lists; restore the types the optimizer was built with.
    template = optimizer.state_dict()["param_groups"]
    groups = meta["optimizer"]["param_groups"]
    if len(groups) != len(template) or any(len(g["params"]) != len(t["params"]) for g, t in zip(groups, template)):
        raise RealmError(f"{path}: optimizer parameter groups do not match this model")
    for group, ref in zip(groups, template):
        for key, value in ref.items():
            if isinstance(value, tuple) and isinstance(group.get(key), list):
                group[key] = tuple(group[key])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict(meta["scheduler"])
    restore_rng(rng, meta["rng"])
    return meta["state"]


def read_latest(checkpoint_dir: str | Path) -> Path | None:
    """The checkpoint directory named by `<checkpoint_dir>/latest`, or None if there is none."""
    checkpoint_dir = Path(checkpoint_dir)
    pointer = checkpoint_dir / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    if not _STEP_DIR.match(name) or name.startswith("."):
        raise RealmError(f"{pointer}: does not name a checkpoint ({name[:60]!r})")
    if not (checkpoint_dir / name).is_dir():
        raise RealmError(f"{pointer}: names {name!r}, which does not exist")
    return checkpoint_dir / name


def publish(checkpoint_dir: str | Path, name: str, keep: int, keep_extra: str | None = None) -> None:
    """Point `latest` at `name`, then delete all but the newest `keep` step directories (and any
    temporary directory a killed writer left behind), and every best-model directory except
    `keep_extra` (the one the new checkpoint names)."""
    checkpoint_dir = Path(checkpoint_dir)
    write_text_atomic(checkpoint_dir / LATEST, name + "\n")
    complete = sorted((p for p in _ours(checkpoint_dir) if not p.name.startswith(".")),
                      key=lambda p: int(_STEP_DIR.match(p.name).group(1)))
    keep_names = {p.name for p in complete[-max(1, keep):]} | {name}
    for child in _ours(checkpoint_dir):
        if child.name not in keep_names:
            shutil.rmtree(child, ignore_errors=True)
    for child in _best_dirs(checkpoint_dir):
        if child.name != keep_extra:
            shutil.rmtree(child, ignore_errors=True)


def clear(checkpoint_dir: str | Path) -> None:
    """Remove `latest` and every step directory (a fresh start); other files are left alone."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return
    (checkpoint_dir / LATEST).unlink(missing_ok=True)
    for child in _ours(checkpoint_dir) + _best_dirs(checkpoint_dir):
        shutil.rmtree(child, ignore_errors=True)


def _ours(checkpoint_dir: Path) -> list[Path]:
    return [p for p in checkpoint_dir.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]


def _best_dirs(checkpoint_dir: Path) -> list[Path]:
    return [p for p in checkpoint_dir.iterdir() if p.is_dir() and _BEST_DIR.match(p.name)]

