"""Config of the `evaluate_retrieval` stage (params.yaml section `evaluate_retrieval`, `python -m flows.evaluate_retrieval`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from realm_core.config.base import DEVICE_PATTERN, PRECISION_PATTERN, StageConfig


class RetrieverSpec(BaseModel):
    """A dense retriever to evaluate: its checkpoint (query tower) and its index root."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    model: str
    index: str


class EvaluateRetrievalConfig(StageConfig):
    """Zero-shot retrieval Recall@k on one QA test set: BM25 and dense retrievers, with answer coverage."""

    dataset: str = Field(default="nq", pattern="^(nq|wq|ct)$")
    """QA dataset: nq (small-scale NQ split over the gold-passage questions), wq, ct."""

    split: str = Field(default="test", pattern="^(train|dev|test|full_test)$")
    """Split to score (full_test: all 3,610 NQ-open questions, nq only)."""

    data_dir: str = "data"
    """Directory holding the QA files (see realm_core/qa/datasets.py)."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """Path to the blocks.parquet the indexes were built from."""

    retrievers: dict[str, RetrieverSpec] = {
        "init": RetrieverSpec(model="models/ict_init", index="artifacts/index/ict_init"),
        "ict": RetrieverSpec(model="models/ict", index="artifacts/index/ict"),
    }
    """Dense retrievers by the name their metrics appear under: {model, index} each."""

    bm25: bool = True
    """Also score the BM25 baseline (built in memory over the same blocks)."""

    ks: list[int] = [1, 5, 20, 100]
    """Cut-offs for Recall@k (answer in the top k)."""

    query_batch_size: int = Field(default=64, ge=1)
    """Questions per query-tower forward pass."""

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    """Where the query towers run: auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or
    cuda:N. Recorded (resolved) in the metrics file."""

    precision: str = Field(default="auto", pattern=PRECISION_PATTERN)
    """Compute precision of the query towers: auto (bf16 on CUDA with bf16 support and on CPUs with
    native bf16, AVX512-BF16/AMX; fp16 on older GPUs; else fp32), fp32, bf16 (autocast) or fp16
    (autocast, CUDA only). Query vectors are float32 either way; it need not match the precision
    the index was built in. Recorded (resolved) in the metrics file."""

    ctxs: int = Field(default=10, ge=0)
    """Retrieved blocks per question written to the DPR-style JSON files."""

    output_dir: str = "artifacts/retrieval"
    """Receives <dataset>/<retriever>.json in DPR's retrieval format (question, answers, ctxs)."""

    metrics_dir: str = "metrics/retrieval"
    """Receives <dataset>.json: answer_coverage, n_questions, and recall@k per retriever."""

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, value: list[int]) -> list[int]:
        if not value or any(k < 1 for k in value):
            raise ValueError("must be a non-empty list of positive integers")
        return sorted(set(value))
