"""The `train_tagger` stage: CoNLL-2003 files in, tagger directory and metrics out.

The training figures in the metrics (time, steps, the dev curve, the final training window) come
from the checkpoint that the shared loop carries, so a rerun that finds training complete reports
the run that produced the model rather than its own no-op; dev and test scores are recomputed
from the saved model, which they describe exactly.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import torch

from realm_core import devices
from realm_core.config import TrainTaggerConfig
from realm_core.entities.conll import read_conll
from realm_core.entities.tagger import EntityTagger, TrainResult, train_tagger
from realm_core.io import write_text_atomic


def _scores(scores) -> dict[str, Any]:
    return {
        typ: {"precision": round(s.precision, 4), "recall": round(s.recall, 4), "f1": round(s.f1, 4),
              "n_gold": s.n_gold, "n_pred": s.n_pred}
        for typ, s in scores.items()
    }


def run_train_tagger(cfg: TrainTaggerConfig, log: Callable[[dict], None] | None = None) -> dict:
    """Train (or resume), select on dev, score on test; write and return the metrics.

    If the time budget stops training early, no model is written, the returned metrics say
    `completed: false` (the metrics file is left as it was) and a rerun continues from the
    checkpoint.
    """
    resolved = devices.resolve_stage(cfg, "train_tagger")
    device, precision = torch.device(resolved.device), resolved.precision
    train = read_conll(cfg.train_file)
    dev = read_conll(cfg.dev_file)
    test = read_conll(cfg.test_file)
    if cfg.max_train_sentences:
        train = train[: cfg.max_train_sentences]
    if cfg.max_eval_sentences:
        dev, test = dev[: cfg.max_eval_sentences], test[: cfg.max_eval_sentences]
    result: TrainResult = train_tagger(
        train, dev, cfg.init, cfg.output_dir,
        max_steps=cfg.max_steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
        max_seq_len=cfg.max_seq_len, eval_every=cfg.eval_every, checkpoint_dir=cfg.checkpoint_dir,
        resume=cfg.resume, time_budget_s=cfg.time_budget_s or None, warmup_ratio=cfg.warmup_ratio,
        device=str(device), precision=precision, case_feature=cfg.case_feature,
        scratch_config=dict(cfg.scratch_config) or None, tokenizer=cfg.tokenizer, log=log,
    )
    run = {"best_step": result.best_step, "steps": result.step, "completed": result.completed,
           "train_seconds": round(result.train_seconds, 1), "device": device.type, "precision": precision}
    if not result.completed:
        return run
    best = EntityTagger.load(cfg.output_dir, device=str(device), precision=precision)
    dev_scores = best.evaluate(dev, batch_size=2 * cfg.batch_size, max_len=cfg.max_seq_len)
    test_scores = best.evaluate(test, batch_size=2 * cfg.batch_size, max_len=cfg.max_seq_len)
    metrics = {
        "test_f1": round(test_scores["overall"].f1, 4),
        "dev_f1": round(dev_scores["overall"].f1, 4),
        "test": _scores(test_scores),
        "dev": _scores(dev_scores),
        **run,
        "dev_curve": [{"step": e["step"], "f1": round(e["f1"], 4)} for e in result.evals],
        "final_train": {k: round(float(v), 4) for k, v in result.final_train.items() if k in ("loss", "grad_norm", "lr")},
        "train_sentences": len(train),
        "dev_sentences": len(dev),
        "test_sentences": len(test),
    }
    write_text_atomic(cfg.metrics_file, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
