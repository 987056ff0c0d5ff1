"""The one training loop every model uses (the tagger, ICT; REALM MLM and open-QA later).

The recipe is BERT's `optimization.py` as REALM and ORQA use it (`optim.py`: AdamW, no decay on
LayerNorm and biases, linear warmup then decay, per-prefix learning rates), global gradient-norm
clipping at 1.0, gradient accumulation over micro-batches, bf16/fp16 autocast (fp16 with a
gradient scaler), a periodic evaluation hook that keeps the best model by a named metric, and
DistributedDataParallel under torchrun (`distributed.py`).

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

import contextlib
import hashlib
import json
import math
import random
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch

from realm_core import devices
from realm_core.errors import RealmError
from realm_core.io import atomic_path, write_text_atomic
from realm_core.training import checkpoint as ckpt
from realm_core.training import distributed, optim
from realm_core.training.optim import bert_warmup  # noqa: F401  (re-exported)

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
    """Optimisation, precision, evaluation, checkpointing and logging settings of one run."""

    steps: int
    lr: float
    warmup_steps: int | None = None  # None: REALM's rule min(10000, max(100, steps // 10))
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    # (parameter-name prefix, peak lr) pairs: their own learning rates (optim.py); others use `lr`.
    lr_groups: tuple[tuple[str, float], ...] = ()
    # Micro-batches per optimizer step: global batch = micro-batch x grad_accum x world size.
    grad_accum: int = 1
    # A resolved precision (realm_core.devices): "fp32", "bf16" (autocast) or "fp16" (autocast +
    # a gradient scaler; CUDA only). Weights and optimizer state stay float32 either way.
    precision: str = "fp32"
    # Seeds Python, NumPy and torch (dropout) on a fresh start; None leaves the generators as the
    # caller set them (e.g. seeded before initialising new weights, so dropout continues that stream).
    seed: int | None = 0
    log_every: int = 10
    # Evaluate every `eval_every` steps and at the end (0 = never); with `best_metric`, the best
    # model so far is kept (needs `save_model`) and published to `best_output_dir` at the end.
    eval_every: int = 0
    # Also evaluate before the first step of a fresh run (step 0): the "before" of a before/after
    # comparison, carried in the checkpoint with the other evaluations.
    eval_at_start: bool = False
    best_metric: str | None = None
    best_mode: str = "max"  # "max": higher is better; "min": lower is better
    best_output_dir: str | None = None
    checkpoint_dir: str | None = None  # None: no checkpoints, no resume
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    # "auto": continue from `latest` if it was written with the same settings and the same library
    # code, else start over (a changed params.yaml or realm_core means a new run: DVC reruns a
    # stage because its code changed, and a finished checkpoint of the old code must not stand
    # in for it); "must": continue, a settings mismatch is an error, a code change is logged and
    # accepted (the user asks to carry this run on); "never": always start over.
    resume: str = "auto"
    time_budget_s: float | None = None  # wall clock for this call; then checkpoint and return
    metrics_path: str | None = None  # JSONL of every log record
    export_partial: bool = False  # also export when stopped early (time budget / should_stop)


@dataclass
class LoopResult:
    """What a (possibly partial) run did. The run-level figures (`total_elapsed_s`,
    `last_metrics`, `evals`, `best`, `resumed_at`) are carried in the checkpoint, so a call that
    finds the run already complete reports the run that produced the model, not its own no-op."""

    step: int
    completed: bool
    stop_reason: str  # "completed", "time_budget", "should_stop"
    resumed_from: int | None
    elapsed_s: float  # this call
    total_elapsed_s: float  # training time across every call of the run
    exported: bool
    checkpoint: str | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    evals: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # {"step", "metric", "value", "path"}
    resumed_at: list[int] = field(default_factory=list)  # steps at which the run was resumed
    trained_steps: int = 0  # optimizer steps taken by this call


def build_optimizer(model: torch.nn.Module, cfg: LoopConfig) -> tuple[torch.optim.Optimizer, Any]:
    """BERT-style AdamW (no decay on LayerNorm and bias, per-prefix lrs) and its schedule."""
    return optim.build_optimizer(model, steps=cfg.steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                                 weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps, adam_betas=cfg.adam_betas,
                                 lr_groups=cfg.lr_groups)


def train(model: torch.nn.Module, objective: Objective, batches: BatchStream | Callable[[int], Any],
          cfg: LoopConfig, *, settings: dict[str, Any] | None = None,
          on_log: Callable[[dict[str, Any]], None] | None = None,
          export: Callable[[torch.nn.Module], None] | None = None,
          after_step: Callable[[int, torch.nn.Module], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
          save_model: Callable[[torch.nn.Module, Path], None] | None = None) -> LoopResult:
    """Run `cfg.steps` optimizer steps of `objective` over `batches`, resumably.

    Each step draws `cfg.grad_accum` micro-batches from `batches`; under torchrun every rank
    draws its own (the stream decides what a rank's share is) and the model is wrapped in
    DistributedDataParallel, which `objective` receives (call the model, not its submodules,
    so DDP sees the forward). Rank 0 alone logs, evaluates, checkpoints and exports.

    `settings` (JSON values) are stored in every checkpoint together with the loop's own
    optimisation settings; resuming with different values is a RealmError ("must") or a fresh
    start ("auto"), because the continued run would silently not be the run the checkpoint
    belongs to. `export(model)` runs when training completes (also when a resumed run finds it
    already complete). `evaluate(model)` returns metrics every `eval_every` steps and at the end;
    with `best_metric`, `save_model(model, dir)` keeps the best model, which goes to
    `best_output_dir` at the end. `after_step(step, model)` runs after every optimizer step
    (index refresh schedules hook in here); `should_stop()` is polled after every step and, when
    true, stops like the time budget does (checkpoint, return).
    """
    t0 = time.monotonic()
    _check(cfg, evaluate, save_model)
    rank = distributed.info()
    device = next(model.parameters()).device
    stream: BatchStream = batches if hasattr(batches, "state_dict") else StepBatches(batches)  # type: ignore[arg-type]
    optimizer, scheduler = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    all_settings = {"loop": _loop_settings(cfg), "objective": settings or {}, "code": code_fingerprint()}
    log = _Logger(cfg if rank.is_main else None, on_log if rank.is_main else None)
    run = _RunRecord(cfg)

    step, resumed_from = 0, None
    latest = None
    if cfg.checkpoint_dir is not None:
        if rank.is_main:
            Path(cfg.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        distributed.barrier()
        latest = ckpt.read_latest(cfg.checkpoint_dir) if cfg.resume != "never" else None
    if latest is not None:
        saved = ckpt.read_state(latest).get("settings", {})
        mismatch = _settings_mismatch(latest, saved, all_settings)
        if mismatch and cfg.resume == "must":
            raise RealmError(mismatch + "; resume with the same settings, or use resume='auto'/'never' to start over")
        if not mismatch and saved.get("code") != all_settings["code"]:
            changed = (f"{latest}: checkpoint was written by other realm_core code (sources "
                       f"{saved.get('code') or 'unrecorded'}, now {all_settings['code']})")
            if cfg.resume == "must":
                log.emit({"event": "code_changed", "reason": changed})
            else:
                mismatch = changed
        if mismatch and cfg.resume != "must":  # "auto": the checkpoint belongs to another run; start over
            log.emit({"event": "restart", "reason": mismatch})
            latest = None
    distributed.barrier()  # every rank has read the checkpoint before rank 0 may clear it
    if cfg.checkpoint_dir is not None and latest is None and rank.is_main:
        ckpt.clear(cfg.checkpoint_dir)
    if latest is not None:
        state = ckpt.load_checkpoint(latest, model, optimizer, scheduler)
        step = resumed_from = state["step"]
        stream.load_state_dict(state["data"])
        run.load(state.get("run", {}), state.get("total_elapsed_s", 0.0))
        log.last = dict(run.last_metrics)
        if step < cfg.steps and step not in run.resumed_at:
            run.resumed_at.append(step)  # a resume that trains on; finding the run complete is not one
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if rank.distributed:  # the checkpoint holds rank 0's RNG; give the others their own stream
            torch.manual_seed((cfg.seed or 0) * 7919 + rank.rank * 104729 + step)
        log.truncate(step)
        log.emit({"event": "resume", "step": step})
    else:
        if cfg.seed is not None:
            random.seed(cfg.seed)
            np.random.seed(cfg.seed)
            torch.manual_seed(cfg.seed + rank.rank)
        log.reset()

    if cfg.eval_at_start and evaluate is not None and latest is None:
        run.evaluate(0, model, evaluate, save_model, rank.is_main, log)
    trainee = _wrap_ddp(model, rank, device)
    model.train()
    reason = "completed" if step >= cfg.steps else ""
    first_step = step
    saved_at = step if latest is not None else None
    checkpoint_path = str(latest) if latest is not None else None
    while step < cfg.steps:
        loss_value, metrics = _accumulate(trainee, objective, stream, cfg, scaler, device, step)
        if scaler is not None:
            scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for g in optimizer.param_groups for p in g["params"]], cfg.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)  # skips the step when fp16 gradients overflowed
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        record = {"loss": loss_value, "grad_norm": float(grad_norm), **metrics}
        log.add(distributed.mean_over_ranks(_floats(record), device) if rank.distributed else record)
        if after_step is not None:
            after_step(step, model)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.flush(step, scheduler.get_last_lr()[0], time.monotonic() - t0)
        if evaluate is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            run.evaluate(step, model, evaluate, save_model, rank.is_main, log)
        if step >= cfg.steps:
            reason = "completed"
        else:
            out_of_time = cfg.time_budget_s is not None and time.monotonic() - t0 >= cfg.time_budget_s
            asked = should_stop is not None and should_stop()
            if distributed.any_rank(out_of_time, device):
                reason = "time_budget"
            elif distributed.any_rank(asked, device):
                reason = "should_stop"
        if cfg.checkpoint_dir is not None and (reason or step % cfg.checkpoint_every == 0) and rank.is_main:
            run.total_elapsed_s = run.elapsed_before + time.monotonic() - t0
            run.last_metrics = dict(log.last)
            path = ckpt.save_checkpoint(Path(cfg.checkpoint_dir) / ckpt.step_dir_name(step), model, optimizer,
                                        scheduler, {"step": step, "data": stream.state_dict(),
                                                    "settings": all_settings, "total_elapsed_s": run.total_elapsed_s,
                                                    "run": run.state(), "scaler": scaler.state_dict() if scaler else None})
            ckpt.publish(cfg.checkpoint_dir, path.name, cfg.keep_checkpoints, keep_extra=run.best_dir_name())
            saved_at, checkpoint_path = step, str(path)
            log.emit({"event": "checkpoint", "step": step, "path": str(path)})
        if reason:
            break

    if reason != "completed":
        log.flush(step, scheduler.get_last_lr()[0], time.monotonic() - t0)
        log.emit({"event": "stop", "step": step, "reason": reason, "checkpoint_step": saved_at})
    trained = step - first_step
    # A call that only found the run complete adds nothing to the run's figures; with checkpoints,
    # the last one (written at the final step) holds them, so every later call reports the same.
    if trained and cfg.checkpoint_dir is None:
        run.total_elapsed_s = run.elapsed_before + time.monotonic() - t0
        run.last_metrics = dict(log.last)
    exported = False
    if reason == "completed" or cfg.export_partial:
        if rank.is_main and export is not None:
            export(model)
            exported = True
        if rank.is_main and cfg.best_metric and run.best is not None and cfg.best_output_dir:
            publish_dir(Path(run.best["path"]), Path(cfg.best_output_dir))
            exported = True
    distributed.barrier()  # the exports exist before any rank goes on to read them
    elapsed = time.monotonic() - t0
    log.emit({"event": "done" if reason == "completed" else "stopped", "step": step, "elapsed_s": round(elapsed, 3)})
    return LoopResult(step=step, completed=reason == "completed", stop_reason=reason, resumed_from=resumed_from,
                      elapsed_s=elapsed, total_elapsed_s=run.total_elapsed_s, exported=exported,
                      checkpoint=checkpoint_path, last_metrics=dict(log.last), evals=list(run.evals),
                      best=dict(run.best) if run.best else None, resumed_at=list(run.resumed_at),
                      trained_steps=trained)


def _accumulate(trainee, objective: Objective, stream, cfg: LoopConfig, scaler, device: torch.device,
                step: int) -> tuple[float, dict[str, Any]]:
    """Forward/backward over `grad_accum` micro-batches; the mean loss and mean metrics."""
    losses: list[float] = []
    sums: dict[str, list[float]] = defaultdict(list)
    for micro in range(cfg.grad_accum):
        # DDP all-reduces gradients on every backward unless told otherwise: only the last
        # micro-batch of a step needs to.
        sync = contextlib.nullcontext() if micro == cfg.grad_accum - 1 or not hasattr(trainee, "no_sync") \
            else trainee.no_sync()
        with sync:
            with devices.autocast(device, cfg.precision):
                loss, metrics = objective(trainee, next(stream))
            if not torch.isfinite(loss.detach()):
                raise RealmError(f"training: loss is {loss.item()} at step {step + 1}; lower lr or check the batch")
            scaled = loss / cfg.grad_accum if cfg.grad_accum > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        losses.append(loss.item())
        for key, value in metrics.items():
            value = value.item() if torch.is_tensor(value) else value
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                sums[key].append(float(value))
    mean = {k: (sum(v) / len(v) if v else None) for k, v in sums.items()}
    for key in metrics:
        mean.setdefault(key, None)
    return sum(losses) / len(losses), mean


def _floats(record: dict[str, Any]) -> dict[str, float | None]:
    return {k: (None if v is None else float(v)) for k, v in record.items()}


def _wrap_ddp(model: torch.nn.Module, rank: distributed.DistInfo, device: torch.device) -> torch.nn.Module:
    """The module the objective calls: DDP around `model` under torchrun, else `model` itself."""
    if not rank.distributed or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else rank.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


class _RunRecord:
    """The run-level record a checkpoint carries: time, last metrics, evaluations, best, resumes."""

    def __init__(self, cfg: LoopConfig) -> None:
        self.cfg = cfg
        self.elapsed_before = 0.0
        self.total_elapsed_s = 0.0
        self.last_metrics: dict[str, float] = {}
        self.evals: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.resumed_at: list[int] = []
        self._scratch: str | None = None

    def load(self, state: dict[str, Any], total_elapsed_s: float) -> None:
        self.elapsed_before = self.total_elapsed_s = float(total_elapsed_s)
        self.last_metrics = dict(state.get("last_metrics", {}))
        self.evals = list(state.get("evals", []))
        self.best = state.get("best")
        self.resumed_at = list(state.get("resumed_at", []))
        if self.best and not Path(self.best["path"]).is_dir():
            raise RealmError(f"{self.best['path']}: the best model this checkpoint names is missing")

    def state(self) -> dict[str, Any]:
        return {"last_metrics": self.last_metrics, "evals": self.evals, "best": self.best,
                "resumed_at": self.resumed_at}

    def best_dir_name(self) -> str | None:
        return Path(self.best["path"]).name if self.best else None

    def evaluate(self, step: int, model, evaluate, save_model, is_main: bool, log: "_Logger") -> None:
        """Score the model (rank 0), keep it if it is the best so far."""
        if not is_main or (self.evals and self.evals[-1]["step"] == step):
            return
        was_training = model.training
        model.eval()
        try:
            scores = {k: float(v) for k, v in evaluate(model).items()}
        finally:
            model.train(was_training)
        record = {"step": step, **scores}
        self.evals.append(record)
        metric = self.cfg.best_metric
        if metric:
            if metric not in scores:
                raise RealmError(f"training: evaluation returned no '{metric}' (got {', '.join(sorted(scores))})")
            value = scores[metric]
            better = self.best is None or (value > self.best["value"] if self.cfg.best_mode == "max"
                                           else value < self.best["value"])
            if better:
                root = Path(self.cfg.checkpoint_dir) if self.cfg.checkpoint_dir else Path(self._scratch_dir())
                path = root / f"best_{step:07d}"
                with atomic_path(path) as tmp:
                    save_model(model, tmp)
                old = self.best
                self.best = {"step": step, "metric": metric, "value": value, "path": str(path)}
                if old and Path(old["path"]) != path and not self.cfg.checkpoint_dir:
                    shutil.rmtree(old["path"], ignore_errors=True)
        log.emit({"event": "eval", **record, **({"best": self.best} if self.best else {})})

    def _scratch_dir(self) -> str:
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="realm-best-")
        return self._scratch


class _Logger:
    """Windowed metric means -> on_log + JSONL (rewritten on resume so it matches the checkpoint)."""

    def __init__(self, cfg: LoopConfig | None, on_log: Callable[[dict[str, Any]], None] | None) -> None:
        # cfg None: a rank other than 0, which counts windows but writes and reports nothing.
        self.path = Path(cfg.metrics_path) if cfg is not None and cfg.metrics_path else None
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


def code_fingerprint(root: str | Path | None = None) -> str:
    """A hash of the library's sources: every .py file under `root` (realm_core/ by default), by
    relative path and content. The whole package rather than the modules a run imported, so the
    value does not depend on what a process happened to import before training started."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _loop_settings(cfg: LoopConfig) -> dict[str, Any]:
    keys = ("steps", "lr", "warmup_steps", "weight_decay", "adam_eps", "adam_betas", "max_grad_norm", "seed")
    out = {k: v for k, v in asdict(cfg).items() if k in keys}
    out["adam_betas"] = list(out["adam_betas"])
    if cfg.lr_groups:
        out["lr_groups"] = [list(g) for g in cfg.lr_groups]
    return out


def _check(cfg: LoopConfig, evaluate, save_model) -> None:
    for name in ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "grad_accum"):
        if getattr(cfg, name) < 1:
            raise RealmError(f"training: {name} must be >= 1, got {getattr(cfg, name)}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise RealmError(f"training: lr must be a positive number, got {cfg.lr}")
    if cfg.warmup_steps is not None and not 0 <= cfg.warmup_steps <= cfg.steps:
        raise RealmError(f"training: warmup_steps must be in [0, steps={cfg.steps}], got {cfg.warmup_steps}")
    if cfg.resume not in ("auto", "must", "never"):
        raise RealmError(f"training: resume must be 'auto', 'must' or 'never', got {cfg.resume!r}")
    if cfg.precision not in ("fp32", "bf16", "fp16"):
        raise RealmError(f"training: precision must be a resolved 'fp32', 'bf16' or 'fp16', got {cfg.precision!r}")
    if cfg.eval_every < 0 or cfg.best_mode not in ("max", "min"):
        raise RealmError(f"training: eval_every must be >= 0 and best_mode 'max' or 'min' "
                         f"(got {cfg.eval_every}, {cfg.best_mode!r})")
    if cfg.best_metric and (evaluate is None or save_model is None or not cfg.eval_every):
        raise RealmError("training: best_metric needs eval_every > 0, an evaluate hook and save_model")


def _settings_mismatch(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first setting that differs between a checkpoint and this run, as a message; None if none."""
    saved_json, current_json = json.loads(json.dumps(saved)), json.loads(json.dumps(current))
    for section in ("loop", "objective"):
        old, new = saved_json.get(section, {}), current_json.get(section, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return f"{path}: checkpoint was written with {key}={old.get(key)!r}, this run has {new.get(key)!r}"
    return None


def publish_dir(src: Path, final: Path) -> None:
    """Copy directory `src` to `final`, replacing it. The copy is built under a temporary name;
    an existing `final` is moved aside just before the rename (os.replace cannot replace a
    non-empty directory), so `final` is missing only between two renames, never half-written."""
    old = final.with_name(f".{final.name}.old")
    with atomic_path(final) as tmp:
        shutil.copytree(src, tmp)
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
    shutil.rmtree(old, ignore_errors=True)
