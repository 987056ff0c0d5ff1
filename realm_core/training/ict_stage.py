"""The `pretrain_ict` stage: blocks in, the ICT-trained retriever and its untrained twin out.

Two retrievers leave this stage:
- `init_output_dir`: the embedder exactly as `train_ict` creates it before step 1 (same init, same
  seed, so the same new projection). evaluate_retrieval scores it as the "untrained init", which
  makes the init-vs-ICT comparison a comparison of training alone.
- `output_dir`: the embedder after `steps` ICT steps. It is written only when training completes;
  a run stopped by `time_budget_s` leaves a checkpoint and no output, so DVC can never record a
  half-trained retriever, and the rerun resumes from the checkpoint.

ICT accuracy (in-batch retrieval of a block from one of its sentences, ORQA §4) is scored before
and after training on the same held-out draw of batches, with dropout off.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from realm_core.config import PretrainICTConfig
from realm_core.io import write_text_atomic
from realm_core.modeling.embedder import RetrieverEmbedder
from realm_core.training.ict import ICTBlocks, evaluate_ict, train_ict


def model_args(cfg: PretrainICTConfig) -> dict[str, Any]:
    """The `RetrieverEmbedder.from_init` / `train_ict` arguments that define the initial model."""
    return {
        "init": cfg.init, "num_layers": cfg.num_layers or None, "scratch_config": dict(cfg.scratch_config) or None,
        "proj_size": cfg.proj_size, "untied": cfg.untied, "tokenizer": cfg.tokenizer,
        "max_query_len": cfg.max_query_len, "max_doc_len": cfg.max_doc_len, "dropout": cfg.dropout,
        "seed": cfg.seed,
    }


def save_init(cfg: PretrainICTConfig) -> RetrieverEmbedder:
    """Create the step-0 retriever and write it to `init_output_dir` (replacing what is there)."""
    model = RetrieverEmbedder.from_init(**model_args(cfg))
    model.save_pretrained(cfg.init_output_dir)
    return model


def _accuracy(model: RetrieverEmbedder, blocks: ICTBlocks, cfg: PretrainICTConfig) -> dict[str, float]:
    if cfg.eval_batches == 0:
        return {}
    scores = evaluate_ict(model, blocks, batch_size=cfg.batch_size, batches=cfg.eval_batches,
                          mask_rate=cfg.mask_rate)
    return {k: round(float(scores[k]), 4) for k in ("accuracy", "masked_accuracy", "loss", "chance")}


def run_pretrain_ict(cfg: PretrainICTConfig, on_log: Callable[[dict[str, Any]], None] | None = None,
                     info: Callable[[str], None] = print) -> dict[str, Any]:
    """Save the init, train (or resume) ICT, score both; write and return the metrics.

    The metrics carry `completed: false` (and no accuracy after training) when the time budget
    stopped the run; the caller reports that as an unfinished stage.
    """
    t0 = time.monotonic()
    blocks = ICTBlocks(cfg.blocks)
    init_model = save_init(cfg)
    before = _accuracy(init_model, blocks, cfg)
    del init_model
    info(f"untrained init saved to {cfg.init_output_dir}; ICT accuracy before training: {before}")
    result = train_ict(
        blocks, cfg.output_dir, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
        warmup_steps=None if cfg.warmup_steps < 0 else cfg.warmup_steps, mask_rate=cfg.mask_rate,
        checkpoint_dir=cfg.checkpoint_dir, checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=cfg.keep_checkpoints, resume=cfg.resume, time_budget_s=cfg.time_budget_s or None,
        log_every=cfg.log_every, on_log=on_log, **model_args(cfg),
    )
    metrics: dict[str, Any] = {
        "completed": result.completed, "steps": result.step, "target_steps": cfg.steps,
        "resumed_from": result.resumed_from, "train_seconds": round(result.total_elapsed_s, 1),
        "batch_size": cfg.batch_size, "init": cfg.init, "blocks": len(blocks), "before": before,
    }
    if result.completed:
        trained = RetrieverEmbedder.from_pretrained(cfg.output_dir)
        metrics["after"] = _accuracy(trained, blocks, cfg)
        metrics["final_train"] = {k: round(float(v), 4) for k, v in result.last_metrics.items()
                                  if isinstance(v, (int, float))}
        info(f"ICT accuracy after {result.step} steps: {metrics['after']}")
    metrics["seconds"] = round(time.monotonic() - t0, 1)
    write_text_atomic(cfg.metrics_file, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def check_inputs(cfg: PretrainICTConfig) -> None:
    """Fail fast, before Prefect starts, on a missing, unreadable or empty corpus."""
    ICTBlocks(cfg.blocks)
