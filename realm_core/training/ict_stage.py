"""The `pretrain_ict` stage: blocks in, the ICT-trained retriever and its step-0 twin out.

Two retrievers leave this stage:
- `init_output_dir`: the embedder exactly as `train_ict` creates it before step 1 (same init, same
  seed, so the same new projection). evaluate_retrieval scores it as the init baseline, which
  makes the init-vs-ICT comparison a comparison of training alone. With the default init that
  baseline is "MiniLM init (before ICT)", not an untrained model: the packaged all-MiniLM-L6-v2
  was trained contrastively on question-passage pairs (NQ-train, SQuAD, TriviaQA among them).
- `output_dir`: the embedder after `steps` ICT steps. It is written only when training completes;
  a run stopped by `time_budget_s` leaves a checkpoint and no output, so DVC can never record a
  half-trained retriever, and the rerun resumes from the checkpoint.

ICT accuracy (in-batch retrieval of a block from one of its sentences, ORQA §4) is scored before
and after training on the same draw of batches from the held-out blocks, which training never
sees, with dropout off. The training figures in the metrics (time, final window) come from the
checkpoint, so a rerun that finds training complete reports the run that produced the model.

Under torchrun every process runs this function: rank 0 writes the init, the metrics and the
retriever; the others only train.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import torch

from realm_core import devices
from realm_core.config import DEFAULT_TOKENIZER, PretrainICTConfig
from realm_core.io import write_text_atomic
from realm_core.modeling.embedder import SCRATCH, RetrieverEmbedder
from realm_core.training import distributed
from realm_core.training.ict import ICTBlocks, evaluate_ict, train_ict


def init_label(init: str) -> str:
    """What the step-0 retriever really is, for metrics, artifacts and reports."""
    if init == DEFAULT_TOKENIZER:
        return ("MiniLM init (before ICT): all-MiniLM-L6-v2, trained contrastively on question-passage "
                "pairs (NQ-train, SQuAD, TriviaQA among them), not an untrained model")
    if init == SCRATCH:
        return "scratch init (untrained BERT)"
    return f"{init} (before ICT)"


def model_args(cfg: PretrainICTConfig) -> dict[str, Any]:
    """The `RetrieverEmbedder.from_init` / `train_ict` arguments that define the initial model."""
    return {
        "init": cfg.init, "num_layers": cfg.num_layers or None, "scratch_config": dict(cfg.scratch_config) or None,
        "proj_size": cfg.proj_size, "untied": cfg.untied, "tokenizer": cfg.tokenizer,
        "max_query_len": cfg.max_query_len, "max_doc_len": cfg.max_doc_len, "dropout": cfg.dropout,
        "seed": cfg.seed,
    }


def save_init(cfg: PretrainICTConfig, device=None) -> RetrieverEmbedder:
    """Create the step-0 retriever and write it to `init_output_dir` (replacing what is there)."""
    model = RetrieverEmbedder.from_init(**model_args(cfg), device=device)
    model.save_pretrained(cfg.init_output_dir)
    return model


def _accuracy(model: RetrieverEmbedder, heldout: ICTBlocks, cfg: PretrainICTConfig) -> dict[str, float]:
    if cfg.eval_batches == 0:
        return {}
    scores = evaluate_ict(model, heldout, batch_size=cfg.batch_size // cfg.grad_accum, batches=cfg.eval_batches,
                          mask_rate=cfg.mask_rate)
    return {k: round(float(scores[k]), 4) for k in ("accuracy", "masked_accuracy", "loss", "chance")}


def run_pretrain_ict(cfg: PretrainICTConfig, on_log: Callable[[dict[str, Any]], None] | None = None,
                     info: Callable[[str], None] = print) -> dict[str, Any]:
    """Save the init, train (or resume) ICT, score both on held-out blocks; write and return the
    metrics (rank 0; other torchrun ranks train and return {"rank": r}).

    The metrics carry `completed: false` (and no accuracy after training) when the time budget
    stopped the run; the caller reports that as an unfinished stage.
    """
    resolved = devices.resolve_stage(cfg, "pretrain_ict")
    device, precision = torch.device(resolved.device), resolved.precision
    rank = distributed.init_from_env(device)
    if device.type == "cuda" and rank.distributed:  # one GPU per process
        device = devices.resolve_device(f"cuda:{rank.local_rank}", key="pretrain_ict.device")
    try:
        train_blocks, heldout = ICTBlocks.split(cfg.blocks, cfg.heldout_fraction, require_heldout=cfg.eval_batches > 0)
        before: dict[str, float] = {}
        if rank.is_main:
            init_model = save_init(cfg, device)
            before = _accuracy(init_model, heldout, cfg)
            del init_model
            info(f"{init_label(cfg.init)} saved to {cfg.init_output_dir}; held-out ICT accuracy: {before}")
            info(f"training on {len(train_blocks):,} blocks ({len(heldout) if heldout else 0:,} held out), "
                 f"{rank.world_size} process(es), device {device}, precision {precision}")
        result = train_ict(
            train_blocks, cfg.output_dir, steps=cfg.steps, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
            precision=precision, lr=cfg.lr, warmup_steps=None if cfg.warmup_steps < 0 else cfg.warmup_steps,
            mask_rate=cfg.mask_rate, checkpoint_dir=cfg.checkpoint_dir, checkpoint_every=cfg.checkpoint_every,
            keep_checkpoints=cfg.keep_checkpoints, resume=cfg.resume, time_budget_s=cfg.time_budget_s or None,
            log_every=cfg.log_every, on_log=on_log, device=str(device), **model_args(cfg),
        )
        if not rank.is_main:
            return {"rank": rank.rank, "completed": result.completed, "steps": result.step}
    finally:
        distributed.shutdown()
    metrics: dict[str, Any] = {
        "completed": result.completed, "steps": result.step, "target_steps": cfg.steps,
        "train_seconds": round(result.total_elapsed_s, 1), "resumed_at": result.resumed_at,
        "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "processes": rank.world_size,
        "device": device.type, "precision": precision, "init": cfg.init, "init_label": init_label(cfg.init),
        "train_blocks": len(train_blocks), "heldout_blocks": len(heldout) if heldout else 0, "before": before,
    }
    if result.completed:
        trained = RetrieverEmbedder.from_pretrained(cfg.output_dir, device=device)
        metrics["after"] = _accuracy(trained, heldout, cfg)
        metrics["final_train"] = {k: round(float(v), 4) for k, v in result.last_metrics.items()
                                  if isinstance(v, (int, float))}
        info(f"held-out ICT accuracy after {result.step} steps: {metrics['after']}")
    if result.trained_steps == 0 and result.completed:
        info(f"training was already complete in {cfg.checkpoint_dir}; the metrics describe the run that produced it")
    write_text_atomic(cfg.metrics_file, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def check_inputs(cfg: PretrainICTConfig) -> None:
    """Fail fast, before Prefect starts, on a missing, unreadable or empty corpus, on an empty
    training or held-out part, or on a device that is not there."""
    devices.resolve_stage(cfg, "pretrain_ict")
    ICTBlocks.split(cfg.blocks, cfg.heldout_fraction, require_heldout=cfg.eval_batches > 0)
