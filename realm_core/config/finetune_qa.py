"""Config of the `finetune_qa` stage (params.yaml section `finetune_qa`, `python -m flows.finetune_qa`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from realm_core.config.base import DEVICE_PATTERN, PRECISION_PATTERN, StageConfig


class QAMethod(BaseModel):
    """A retriever + reader pair to fine-tune (REALM Tables 1-2: ORQA, REALM and the mixed pairs)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    retriever: str
    """A retriever checkpoint (its query tower is trained), or "bm25" (no trainable retriever)."""

    index: str = ""
    """The index root build_index published for `retriever` (its document vectors stay frozen);
    empty for bm25."""

    reader: str
    """The reader's init: any BERT checkpoint, e.g. models/pretrain_mlm (ORQA: BERT) or
    models/realm_encoder (REALM's knowledge-augmented encoder)."""


DEFAULT_METHODS = {
    "orqa": QAMethod(retriever="models/ict", index="artifacts/index/ict", reader="models/pretrain_mlm"),
    "realm": QAMethod(retriever="models/realm", index="artifacts/index/realm", reader="models/realm_encoder"),
}


class FinetuneQAConfig(StageConfig):
    """Open-QA fine-tuning (ORQA's recipe, REALM_NOTES §3): query tower + span reader over a frozen
    document index -> models/qa/<dataset>/<method> (the best dev-EM checkpoint)."""

    dataset: str = Field(default="nq", pattern="^(nq|wq|ct)$")
    """QA dataset: nq (small-scale NQ split), wq, ct. Trains on its train split, selects on dev."""

    method: str = "orqa"
    """The key of `methods` to fine-tune."""

    methods: dict[str, QAMethod] = dict(DEFAULT_METHODS)
    """Retriever + reader pairs by name: {retriever, index, reader}."""

    data_dir: str = "data"
    """Directory holding the QA files (see realm_core/qa/datasets.py)."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """The corpus the index and the tokenized corpus were built from."""

    wordpieces: str = "artifacts/corpus/wordpieces"
    """The tokenize_corpus output (memory-mapped block ids and offsets)."""

    output_dir: str = "models/qa/nq/orqa"
    """The fine-tuned retriever/, reader/ and qa.json (the best dev-EM checkpoint)."""

    steps: int = Field(default=100, ge=1)
    """Optimizer steps."""

    batch_size: int = Field(default=4, ge=1)
    """Questions per step, over all processes (ORQA: 1)."""

    grad_accum: int = Field(default=1, ge=1)
    """Micro-steps per step (the same questions in less memory)."""

    lr: float = Field(default=1e-4, gt=0)
    """Peak learning rate of the reader (ORQA: 1e-5 over tens of thousands of steps; REALM_NOTES
    §7.2: 1e-4..3e-4 at this scale)."""

    retriever_lr: float = Field(default=1e-5, gt=0)
    """Peak learning rate of the query tower (ORQA: 1e-5). Kept low for the reason pretrain_realm
    keeps its own: a noisy gradient at a high rate walks the tower away from the frozen index."""

    warmup_steps: int = Field(default=-1, ge=-1)
    """Warmup steps; -1 = ORQA's rule min(10000, max(100, steps/10))."""

    retriever_beam: int = Field(default=5000, ge=1)
    """Blocks the retriever loss marginalises over (ORQA: 5000 of 13M; here most of the corpus)."""

    reader_beam: int = Field(default=5, ge=1)
    """Blocks the reader reads (ORQA/REALM: 5)."""

    max_span_width: int = Field(default=10, ge=1)
    """Longest answer span in wordpieces (ORQA: 10)."""

    span_hidden: int = Field(default=256, ge=1)
    """Width of each half of the span MLP (ORQA: 256)."""

    seq_len: int = Field(default=320, ge=16)
    """Reader input length `[CLS] q [SEP] block [SEP]` (ORQA: 288 + 32)."""

    max_question_len: int = Field(default=32, ge=1)
    """Question wordpieces the reader keeps."""

    query_len: int = Field(default=64, ge=3)
    """Query tower input length `[CLS] q [SEP]`."""

    skip_unanswerable: bool = True
    """Leave out training questions whose (text) answer occurs in no block: both losses are 0 for
    them, so they cost time and change nothing. Regex answers are always kept."""

    dev_questions: int = Field(default=0, ge=0)
    """Dev questions scored for model selection (the first N of the dev split; 0 = all)."""

    eval_every: int = Field(default=50, ge=0)
    """Steps between dev-EM evaluations (0 = only at the end); the best one is exported."""

    eval_batch_size: int = Field(default=8, ge=1)
    """Questions per prediction batch."""

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    """Where training runs: auto, cpu, cuda or cuda:N."""

    precision: str = Field(default="auto", pattern=PRECISION_PATTERN)
    """Compute precision: auto (bf16 where native), fp32, bf16, fp16 (CUDA)."""

    seed: int = 0
    """Seeds the span head, the question order and dropout."""

    checkpoint_dir: str = "checkpoints/finetune_qa/nq-orqa"
    """Training checkpoints (pickle-free); a rerun resumes from the latest one."""

    checkpoint_every: int = Field(default=25, ge=1)
    """Steps between checkpoints."""

    keep_checkpoints: int = Field(default=2, ge=1)
    """Checkpoints kept."""

    resume: str = Field(default="auto", pattern="^(auto|must|never)$")
    """auto: resume a matching checkpoint; must: fail without one; never: start over."""

    time_budget_s: float = Field(default=0, ge=0)
    """Wall-clock limit of this call (0 = none); then checkpoint and stop, rerun to continue."""

    log_every: int = Field(default=10, ge=1)
    """Steps per logged metrics window."""

    metrics_file: str = "metrics/finetune_qa/nq-orqa.json"
    """Training summary: dev EM over steps, best step, time."""

    plots_dir: str = "metrics/finetune_qa/nq-orqa"
    """dvclive curves (loss, reader/retriever loss, dev EM)."""
