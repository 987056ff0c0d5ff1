"""Config of the `reindex` stage (params.yaml section `reindex`, `python -m flows.reindex`)."""

from __future__ import annotations

from pydantic import Field

from realm_core.config.base import DEVICE_PATTERN, PRECISION_PATTERN, StageConfig


class ReindexConfig(StageConfig):
    """Re-embed the corpus incrementally with a retriever and publish a new index version (the
    `reindex` deployment; blocks, shard layout and index type come from the build_index section)."""

    retriever: str = "models/ict"
    """The retriever to index with: a retriever directory, or "newest:<dir>" for the most recently
    saved retriever directory under <dir> (e.g. the exports of a training run)."""

    output_dir: str = "artifacts/index/ict"
    """Index root that receives the new version when the retriever is `tracked_retriever` (the
    DVC-tracked index of `dvc_stage`)."""

    untracked_output_dir: str = "artifacts/index/refresh"
    """Index root used for any other retriever: DVC does not track it, so DVC's record of
    `dvc_stage` stays true."""

    metrics_file: str = "metrics/build_index/ict.json"
    """The metrics file `dvc_stage` declares (rewritten when reindexing its tracked output)."""

    dvc_stage: str = "build_index@ict"
    """The DVC stage whose output this refreshes; after reindexing its tracked retriever and
    corpus, `dvc commit` records the new output there, so `dvc status` stays clean. Empty = never
    touch DVC."""

    tracked_retriever: str = "models/ict"
    """The retriever `dvc_stage` depends on."""

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    """Where the document tower runs for reindexing (it replaces build_index.device, so a serving
    machine can choose its own): auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda, cuda:N."""

    precision: str = Field(default="auto", pattern=PRECISION_PATTERN)
    """Compute precision for reindexing (replaces build_index.precision): auto (bf16 on CUDA with
    bf16 support and on CPUs with native bf16; fp16 on older GPUs; else fp32), fp32, bf16, fp16
    (CUDA only). Blocks are copied from the previous embeddings only when those were made in the
    same resolved precision, so changing it re-embeds every block once."""

    keep_versions: int = Field(default=3, ge=1)
    """Index versions kept under versions/ (the live one is never deleted)."""

    interval_s: int = Field(default=3600, ge=0)
    """`python -m flows.serve`: run reindex every this many seconds (0 = no interval schedule)."""

    cron: str = ""
    """`python -m flows.serve`: cron schedule for reindex (e.g. "0 3 * * *"; empty = none)."""
