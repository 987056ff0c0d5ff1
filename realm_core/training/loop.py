"""The one training loop every objective uses (ICT now; REALM MLM and open-QA later).

The recipe is BERT's `optimization.py` as REALM and ORQA use it: AdamW with weight decay 0.01
except on LayerNorm weights and biases, eps 1e-6, linear warmup then linear decay to 0, global
gradient-norm clipping at 1.0. (BERT's AdamWeightDecay skips Adam's bias correction; torch's
AdamW applies it, which only changes the first few hundred steps' effective step size.)

An objective is a callable `(model, batch) -> (loss, metrics)`; batches come from a `BatchStream`
(a plain `step -> batch` function works too, see `StepBatches`). Everything that decides the
next step is checkpointed without pickle (`checkpoint.py`): model, optimizer, scheduler, step,
Python/NumPy/torch RNG states and the stream's position. So `resume="auto"` continues a killed
or time-budgeted run, and on the same machine ends with the same weights as an uninterrupted
run.

Metrics: every `log_every` steps the mean of each metric over the window (plus lr, gradient norm,
throughput) goes to `on_log` and, as one JSON line, to `metrics_path`. realm_core never imports
dvclive; a caller that wants `dvc plots` wraps `Live.log_metric` in `on_log`.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch

from realm_core.errors import RealmError
from realm_core.io import write_text_atomic
from realm_core.training import checkpoint as ckpt

Objective = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, Any]]]


class BatchStream(Protocol):
    """An endless batch source whose position can be saved and restored as JSON."""

    def __next__(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class StepBatches:
    """Adapts a pure function `step -> batch` to a `BatchStream` (its position is the step)."""

    def __init__(self, fn: Callable[[int], Any]) -> None:
        self.fn, self.step = fn, 0

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        """The batch of the current step; advances the position."""
        batch = self.fn(self.step)
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The position: the step whose batch comes next."""
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by `state_dict`."""
        self.step = int(state["step"])


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation, checkpointing and logging settings of one training run."""

    steps: int
    lr: float
    warmup_steps: int | None = None  # None: REALM's rule min(10000, max(100, steps // 10))
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    seed: int = 0  # seeds Python, NumPy and torch (dropout) on a fresh start
    log_every: int = 10
    checkpoint_dir: str | None = None  # None: no checkpoints, no resume
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    # "auto": continue from `latest` if it was written with the same settings, else start over
    # (a changed params.yaml means a new run); "must": continue, a mismatch is an error;
    # "never": always start over.
    resume: str = "auto"
    time_budget_s: float | None = None  # wall clock for this call; then checkpoint and return
    metrics_path: str | None = None  # JSONL of every log record
    export_partial: bool = False  # also export when stopped early (time budget / should_stop)


@dataclass
class LoopResult:
    """What a (possibly partial) run did."""

    step: int
    completed: bool
    stop_reason: str  # "completed", "time_budget", "should_stop"
    resumed_from: int | None
    elapsed_s: float  # this call
    total_elapsed_s: float  # across resumed calls
    exported: bool
    checkpoint: str | None
    last_metrics: dict[str, float] = field(default_factory=dict)


def bert_warmup(steps: int) -> int:
    """REALM/ORQA's warmup rule: min(10000, max(100, steps / 10)), capped at `steps`."""
    return min(steps, min(10_000, max(100, steps // 10)))


def build_optimizer(model: torch.nn.Module, cfg: LoopConfig) -> tuple[torch.optim.Optimizer, Any]:
    """BERT-style AdamW (no decay on LayerNorm and bias) and the linear warmup/decay schedule."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue  # frozen parts (e.g. the document tower during QA fine-tuning)
        flat = name.lower().replace("_", "")
        (no_decay if name.endswith("bias") or "layernorm" in flat else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps,
    )
    warmup = bert_warmup(cfg.steps) if cfg.warmup_steps is None else cfg.warmup_steps
    total = cfg.steps

    def schedule(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def train(model: torch.nn.Module, objective: Objective, batches: BatchStream | Callable[[int], Any],
          cfg: LoopConfig, *, settings: dict[str, Any] | None = None,
          on_log: Callable[[dict[str, Any]], None] | None = None,
          export: Callable[[torch.nn.Module], None] | None = None,
          after_step: Callable[[int, torch.nn.Module], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> LoopResult:
    """Run `cfg.steps` optimizer steps of `objective` over `batches`, resumably.

    `settings` (JSON values) are stored in every checkpoint together with the loop's own
    optimisation settings; resuming with different values is a RealmError, because the
    continued run would silently not be the run the checkpoint belongs to. `export(model)` runs
    when training completes (also when a resumed run finds it already complete), e.g.
    `model.save_pretrained(out_dir)`. `after_step(step, model)` runs after every optimizer step
    (index refresh schedules hook in here); `should_stop()` is polled after every step and, when
    true, stops like the time budget does (checkpoint, return).
    """
    t0 = time.monotonic()
    _check(cfg)
    stream: BatchStream = batches if hasattr(batches, "state_dict") else StepBatches(batches)  # type: ignore[arg-type]
    optimizer, scheduler = build_optimizer(model, cfg)
    all_settings = {"loop": _loop_settings(cfg), "objective": settings or {}}
    log = _Logger(cfg, on_log)

    step, resumed_from, total_before = 0, None, 0.0
    latest = None
    if cfg.checkpoint_dir is not None:
        Path(cfg.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        latest = ckpt.read_latest(cfg.checkpoint_dir) if cfg.resume != "never" else None
    if latest is not None:
        mismatch = _settings_mismatch(latest, ckpt.read_state(latest).get("settings", {}), all_settings)
        if mismatch and cfg.resume == "must":
            raise RealmError(mismatch + "; resume with the same settings, or use resume='auto'/'never' to start over")
        if mismatch:  # "auto": the checkpoint belongs to another run; this one starts over
            log.emit({"event": "restart", "reason": mismatch})
            latest = None
    if cfg.checkpoint_dir is not None and latest is None:
        ckpt.clear(cfg.checkpoint_dir)
    if latest is not None:
        state = ckpt.load_checkpoint(latest, model, optimizer, scheduler)
        step, resumed_from, total_before = state["step"], state["step"], state.get("total_elapsed_s", 0.0)
        stream.load_state_dict(state["data"])
        log.truncate(step)
        log.emit({"event": "resume", "step": step})
    else:
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        log.reset()

    model.train()
    reason = "completed" if step >= cfg.steps else ""
    saved_at = step if latest is not None else None
    checkpoint_path = str(latest) if latest is not None else None
    while step < cfg.steps:
        loss, metrics = objective(model, next(stream))
        if not torch.isfinite(loss.detach()):
            raise RealmError(f"training: loss is {loss.item()} at step {step + 1}; lower lr or check the batch")
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for g in optimizer.param_groups for p in g["params"]], cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        log.add({"loss": loss.item(), "grad_norm": float(grad_norm), **metrics})
        if after_step is not None:
            after_step(step, model)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.flush(step, scheduler.get_last_lr()[0], time.monotonic() - t0)
        if step >= cfg.steps:
            reason = "completed"
        elif cfg.time_budget_s is not None and time.monotonic() - t0 >= cfg.time_budget_s:
            reason = "time_budget"
        elif should_stop is not None and should_stop():
            reason = "should_stop"
        if cfg.checkpoint_dir is not None and (reason or step % cfg.checkpoint_every == 0):
            total = total_before + time.monotonic() - t0
            path = ckpt.save_checkpoint(Path(cfg.checkpoint_dir) / ckpt.step_dir_name(step), model, optimizer,
                                        scheduler, {"step": step, "data": stream.state_dict(),
                                                    "settings": all_settings, "total_elapsed_s": total})
            ckpt.publish(cfg.checkpoint_dir, path.name, cfg.keep_checkpoints)
            saved_at, checkpoint_path = step, str(path)
            log.emit({"event": "checkpoint", "step": step, "path": str(path)})
        if reason:
            break

    if reason != "completed":
        log.flush(step, scheduler.get_last_lr()[0], time.monotonic() - t0)
        log.emit({"event": "stop", "step": step, "reason": reason, "checkpoint_step": saved_at})
    exported = False
    if export is not None and (reason == "completed" or cfg.export_partial):
        export(model)
        exported = True
    elapsed = time.monotonic() - t0
    log.emit({"event": "done" if reason == "completed" else "stopped", "step": step, "elapsed_s": round(elapsed, 3)})
    return LoopResult(step=step, completed=reason == "completed", stop_reason=reason, resumed_from=resumed_from,
                      elapsed_s=elapsed, total_elapsed_s=total_before + elapsed, exported=exported,
                      checkpoint=checkpoint_path, last_metrics=log.last)


class _Logger:
    """Windowed metric means -> on_log + JSONL (rewritten on resume so it matches the checkpoint)."""

    def __init__(self, cfg: LoopConfig, on_log: Callable[[dict[str, Any]], None] | None) -> None:
        self.path = Path(cfg.metrics_path) if cfg.metrics_path else None
        self.on_log = on_log
        self.window: dict[str, list[float]] = defaultdict(list)
        self.window_steps = 0
        self.window_t = 0.0
        self.last: dict[str, float] = {}

    def add(self, metrics: dict[str, Any]) -> None:
        self.window_steps += 1
        for key, value in metrics.items():
            if torch.is_tensor(value):
                value = value.item()
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.window[key].append(float(value))

    def flush(self, step: int, lr: float, elapsed: float) -> None:
        if not self.window_steps:
            return
        record: dict[str, Any] = {"event": "train", "step": step}
        record.update({k: sum(v) / len(v) for k, v in self.window.items() if v})
        record["lr"] = lr
        record["steps_per_s"] = self.window_steps / max(1e-9, elapsed - self.window_t)
        record["elapsed_s"] = round(elapsed, 3)
        self.last = {k: v for k, v in record.items() if isinstance(v, float)}
        self.window.clear()
        self.window_steps, self.window_t = 0, elapsed
        self.emit(record)

    def emit(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.on_log is not None:
            self.on_log(record)

    def reset(self) -> None:
        """A fresh run starts a fresh log."""
        if self.path is not None and self.path.is_file():
            write_text_atomic(self.path, "")

    def truncate(self, step: int) -> None:
        """Drop records after `step` (a resumed run redoes those steps and logs them again)."""
        if self.path is None or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))


def _loop_settings(cfg: LoopConfig) -> dict[str, Any]:
    keys = ("steps", "lr", "warmup_steps", "weight_decay", "adam_eps", "adam_betas", "max_grad_norm", "seed")
    out = {k: v for k, v in asdict(cfg).items() if k in keys}
    out["adam_betas"] = list(out["adam_betas"])
    return out


def _check(cfg: LoopConfig) -> None:
    for name in ("steps", "log_every", "checkpoint_every", "keep_checkpoints"):
        if getattr(cfg, name) < 1:
            raise RealmError(f"training: {name} must be >= 1, got {getattr(cfg, name)}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise RealmError(f"training: lr must be a positive number, got {cfg.lr}")
    if cfg.warmup_steps is not None and not 0 <= cfg.warmup_steps <= cfg.steps:
        raise RealmError(f"training: warmup_steps must be in [0, steps={cfg.steps}], got {cfg.warmup_steps}")
    if cfg.resume not in ("auto", "must", "never"):
        raise RealmError(f"training: resume must be 'auto', 'must' or 'never', got {cfg.resume!r}")


def _settings_mismatch(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first setting that differs between a checkpoint and this run, as a message; None if none."""
    saved_json, current_json = json.loads(json.dumps(saved)), json.loads(json.dumps(current))
    for section in ("loop", "objective"):
        old, new = saved_json.get(section, {}), current_json.get(section, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return f"{path}: checkpoint was written with {key}={old.get(key)!r}, this run has {new.get(key)!r}"
    return None
