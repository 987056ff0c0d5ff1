"""Config of the `evaluate` stage (params.yaml section `evaluate`, `python -m flows.evaluate`)."""

from __future__ import annotations

from pydantic import Field

from realm_core.config.base import DEVICE_PATTERN, PRECISION_PATTERN, StageConfig


class EvaluateConfig(StageConfig):
    """Open-QA test scores of every fine-tuned method on one dataset: EM (ORQA normalisation;
    CuratedTREC by regex), Recall@k of the fine-tuned retriever, the reader's oracle, and
    predictions with their evidence."""

    dataset: str = Field(default="nq", pattern="^(nq|wq|ct)$")
    """QA dataset whose test split is scored (and whose fine-tuned models are used)."""

    methods: list[str] = ["orqa", "realm"]
    """Fine-tuned methods to score: `<models_dir>/<dataset>/<method>` each."""

    models_dir: str = "models/qa"
    """Where finetune_qa wrote the models."""

    data_dir: str = "data"
    """Directory holding the QA files."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """The corpus the indexes were built from."""

    wordpieces: str = "artifacts/corpus/wordpieces"
    """The tokenize_corpus output."""

    full_test: bool = True
    """nq only: also score NQ-open's whole test set (the 3,610 NQ-open dev questions) minus the
    questions of the small-scale train/dev split, which fine-tuning saw."""

    dataset_file: str = ""
    """Score this NQ-open JSONL file (one {"question", "answer": [...]} per line) instead of the
    dataset's test split; a malformed line is an error naming file:line."""

    max_questions: int = Field(default=0, ge=0)
    """Score only the first N questions of each set (0 = all; the smoke profile's shortcut)."""

    ks: list[int] = [1, 5, 20, 100]
    """Cut-offs for the fine-tuned retriever's Recall@k."""

    ctxs: int = Field(default=5, ge=1)
    """Retrieved blocks written with each prediction."""

    batch_size: int = Field(default=8, ge=1)
    """Questions per prediction batch."""

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    """Where the models run: auto, cpu, cuda or cuda:N."""

    precision: str = Field(default="auto", pattern=PRECISION_PATTERN)
    """Compute precision: auto (bf16 where native), fp32, bf16, fp16 (CUDA)."""

    compile: bool = False
    """Compile each reader's encoder with Inductor before predicting (torch.compile with frozen
    weights; needs a C++ compiler, else it predicts eagerly and says so): a faster forward for a
    compile per model, so it pays on large question sets (docs/benchmarks.md). Answers can
    differ from the eager ones where two spans nearly tie."""

    output_dir: str = "artifacts/predictions"
    """Predictions: `<output_dir>/<dataset>/<method>.json` (DPR-style, with evidence)."""

    metrics_dir: str = "metrics/eval"
    """`<metrics_dir>/<dataset>.json`."""
