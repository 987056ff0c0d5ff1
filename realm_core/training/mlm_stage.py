"""The `pretrain_mlm` stage: blocks in, "our BERT" (a masked-LM-trained encoder) out.

The encoder is a `KnowledgeAugEncoder` built from `init` (the packaged MiniLM by default: its
encoder weights plus a new MLM head tied to its word embeddings). It is saved with REALM's reader
lengths (query 96, document 288; REALM_NOTES §1.3), so `models/pretrain_mlm` is ready to be
REALM's knowledge-augmented encoder and the no-retrieval baseline; training itself uses
`max_len`. `output_dir` is written only when training completes; a run stopped by
`time_budget_s` leaves a checkpoint and no output (DVC never records a half-trained encoder),
and the rerun resumes from the checkpoint.

Masked-LM accuracy and loss are scored before and after training on the same draw of batches
from the held-out blocks, which training never sees, with dropout off. The training figures in
the metrics (time, final window) come from the checkpoint, so a rerun that finds training
complete reports the run that produced the model.

Under torchrun every process runs this function: rank 0 scores, writes the metrics and the
encoder; the others only train.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import torch

from realm_core import devices
from realm_core.config import PretrainMLMConfig
from realm_core.io import write_text_atomic
from realm_core.modeling.encoder import KnowledgeAugEncoder
from realm_core.training import distributed
from realm_core.training.ict import ICTBlocks
from realm_core.training.mlm import evaluate_mlm, train_mlm

# REALM's reader lengths (released launcher: query_seq_len 96, candidate_seq_len 288), stored in
# the saved encoder for pretrain_realm; they do not change this stage's training inputs.
READER_QUERY_LEN, READER_CANDIDATE_LEN = 96, 288


def model_args(cfg: PretrainMLMConfig) -> dict[str, Any]:
    """The `KnowledgeAugEncoder.from_init` arguments that define the initial model."""
    return {"num_layers": cfg.num_layers or None, "scratch_config": dict(cfg.scratch_config) or None,
            "tokenizer": cfg.tokenizer, "max_query_len": READER_QUERY_LEN,
            "max_candidate_len": READER_CANDIDATE_LEN, "seed": cfg.seed}


def _scores(model: KnowledgeAugEncoder, heldout: ICTBlocks | None, cfg: PretrainMLMConfig) -> dict[str, float]:
    if cfg.eval_batches == 0 or heldout is None:
        return {}
    scores = evaluate_mlm(model, heldout, batch_size=cfg.batch_size // cfg.grad_accum, batches=cfg.eval_batches,
                          max_len=cfg.max_len, mask_prob=cfg.mask_prob)
    return {"accuracy": round(scores["accuracy"], 4), "loss": round(scores["loss"], 4), "tokens": scores["tokens"]}


def run_pretrain_mlm(cfg: PretrainMLMConfig, on_log: Callable[[dict[str, Any]], None] | None = None,
                     info: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the encoder, score it on held-out blocks, train (or resume) the masked LM, export and
    score again; write and return the metrics (rank 0; other torchrun ranks train and return
    {"rank": r, ...}).

    The metrics carry `completed: false` (and no scores after training) when the time budget
    stopped the run; the caller reports that as an unfinished stage.
    """
    resolved = devices.resolve_stage(cfg, "pretrain_mlm")
    device, precision = torch.device(resolved.device), resolved.precision
    rank = distributed.init_from_env(device)
    if device.type == "cuda" and rank.distributed:  # one GPU per process
        device = devices.resolve_device(f"cuda:{rank.local_rank}", key="pretrain_mlm.device")
    try:
        train_blocks, heldout = ICTBlocks.split(cfg.blocks, cfg.heldout_fraction, require_heldout=cfg.eval_batches > 0)
        model = KnowledgeAugEncoder.from_init(cfg.init, **model_args(cfg), device=device)
        before: dict[str, float] = {}
        if rank.is_main:
            before = _scores(model, heldout, cfg)
            info(f"encoder from {cfg.init}; held-out masked-LM scores before training: {before}")
            info(f"training on {len(train_blocks):,} blocks ({len(heldout) if heldout else 0:,} held out), "
                 f"{rank.world_size} process(es), device {device}, precision {precision}")
        identity = {"init": cfg.init, "num_layers": cfg.num_layers, "scratch_config": dict(cfg.scratch_config),
                    "tokenizer": cfg.tokenizer}
        result = train_mlm(
            model, train_blocks, cfg.output_dir, steps=cfg.steps, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
            precision=precision, lr=cfg.lr, warmup_steps=None if cfg.warmup_steps < 0 else cfg.warmup_steps,
            seed=cfg.seed, max_len=cfg.max_len, mask_prob=cfg.mask_prob,
            random_context_prob=cfg.random_context_prob, identity=identity,
            checkpoint_dir=cfg.checkpoint_dir, checkpoint_every=cfg.checkpoint_every,
            keep_checkpoints=cfg.keep_checkpoints, resume=cfg.resume, time_budget_s=cfg.time_budget_s or None,
            log_every=cfg.log_every, on_log=on_log)
        del model
        if not rank.is_main:
            return {"rank": rank.rank, "completed": result.completed, "steps": result.step}
    finally:
        distributed.shutdown()
    metrics: dict[str, Any] = {
        "completed": result.completed, "steps": result.step, "target_steps": cfg.steps,
        "train_seconds": round(result.total_elapsed_s, 1), "resumed_at": result.resumed_at,
        "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "max_len": cfg.max_len,
        "processes": rank.world_size, "device": device.type, "precision": precision, "init": cfg.init,
        "train_blocks": len(train_blocks), "heldout_blocks": len(heldout) if heldout else 0, "before": before,
    }
    if cfg.random_context_prob:
        metrics["random_context_prob"] = cfg.random_context_prob
    if result.completed:
        trained = KnowledgeAugEncoder.from_pretrained(cfg.output_dir, device=device)
        metrics["after"] = _scores(trained, heldout, cfg)
        metrics["final_train"] = {k: round(float(v), 4) for k, v in result.last_metrics.items()
                                  if isinstance(v, (int, float))}
        info(f"held-out masked-LM scores after {result.step} steps: {metrics['after']}")
    if result.trained_steps == 0 and result.completed:
        info(f"training was already complete in {cfg.checkpoint_dir}; the metrics describe the run that produced it")
    write_text_atomic(cfg.metrics_file, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def check_inputs(cfg: PretrainMLMConfig) -> None:
    """Fail fast, before Prefect starts, on a missing, unreadable or empty corpus, on an empty
    training or held-out part, or on a device that is not there."""
    devices.resolve_stage(cfg, "pretrain_mlm")
    ICTBlocks.split(cfg.blocks, cfg.heldout_fraction, require_heldout=cfg.eval_batches > 0)
