"""Config of the `tag_entities` stage (params.yaml section `tag_entities`, `python -m flows.tag_entities`)."""

from __future__ import annotations

from pydantic import Field

from realm_core.config.base import DEVICE_PATTERN, PRECISION_PATTERN, StageConfig


class TagEntitiesConfig(StageConfig):
    """Tag salient spans (tagger entities + dates) in every block -> salient_spans.parquet."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """Path to a blocks.parquet written by prepare_corpus."""

    tagger: str = "models/tagger"
    """Any token-classification model directory or name (e.g. dslim/bert-base-NER) whose labels
    are IOB2 over PER/ORG/LOC/MISC-style types."""

    output_dir: str = "artifacts/corpus"
    """Directory that receives salient_spans.parquet."""

    include_dates: bool = True
    """Add DATE spans from the date regex (REALM masks entities and dates)."""

    min_score: float = Field(default=0.0, ge=0, le=1)
    """Drop tagger entities whose mean tag probability is below this."""

    batch_size: int = Field(default=64, ge=1)
    """Sentences per forward pass."""

    max_len: int = Field(default=128, ge=16, le=512)
    """Wordpieces per tagging window (long sentences are windowed)."""

    shard_blocks: int = Field(default=1000, ge=1)
    """Blocks per shard: the unit of parallel work and of resume after a crash."""

    workers: int = Field(default=1, ge=1)
    """Shard tasks run at once (each a process with cores/workers torch threads)."""

    dask_address: str = ""
    """Run the shard tasks on Dask: a scheduler address (tcp://host:8786), or "local" for a local
    cluster of `workers` processes; empty = no Dask (see `workers`)."""

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    """Where the tagger runs: auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N.
    Resolved once per run; every shard task (process pool, Dask worker) gets the resolved one."""

    precision: str = Field(default="auto", pattern=PRECISION_PATTERN)
    """Compute precision of the tagger's forward pass: auto (bf16 on CUDA with bf16 support and on
    CPUs with native bf16, AVX512-BF16/AMX; fp16 on older GPUs; else fp32), fp32, bf16 (autocast)
    or fp16 (autocast, CUDA only). Resolved once per run and recorded in the metrics; shards tagged
    in another precision are not reused."""

    metrics_file: str = "metrics/tag_entities.json"
    """Spans per label, blocks with at least one span, throughput."""
