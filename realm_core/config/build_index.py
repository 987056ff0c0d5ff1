"""Config of the `build_index` stage (params.yaml section `build_index`, `python -m flows.build_index`)."""

from __future__ import annotations

from pydantic import Field

from realm_core.config.base import DEVICE_PATTERN, PRECISION_PATTERN, StageConfig


class BuildIndexConfig(StageConfig):
    """Embed every block with a retriever (sharded, resumable) and build a FAISS MIPS index version."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """Path to a blocks.parquet written by prepare_corpus."""

    retriever: str = "models/ict"
    """Retriever directory (written by pretrain_ict or a later training stage)."""

    output_dir: str = "artifacts/index/ict"
    """Index root: embeddings/ (shards + manifest.json), versions/<v>/ and the CURRENT pointer."""

    rows_per_shard: int = Field(default=1024, ge=1)
    """Blocks per embedding shard: the unit of parallel work and of resume after a kill."""

    batch_size: int = Field(default=32, ge=1)
    """Blocks per forward pass."""

    dtype: str = Field(default="float32", pattern="^(float32|float16)$")
    """Stored embedding dtype (the index itself is float32). Not the compute precision: see
    `precision`."""

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    """Where the document tower runs: auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or
    cuda:N. Resolved once per run; every shard task (process pool, Dask worker) gets the resolved
    one."""

    precision: str = Field(default="auto", pattern=PRECISION_PATTERN)
    """Compute precision of the document tower: auto (bf16 on CUDA with bf16 support and on CPUs
    with native bf16, AVX512-BF16/AMX; fp16 on older GPUs; else fp32), fp32, bf16 (autocast) or fp16
    (autocast, CUDA only). Vectors are written float32 (or `dtype`) whatever it is. Resolved once
    per run and recorded in the manifest: shards embedded in another precision are re-embedded,
    never mixed in."""

    workers: int = Field(default=1, ge=1)
    """Shard tasks at once: 1 runs them in this process; more use a process pool, each with
    cores/workers torch threads."""

    dask_address: str = ""
    """Run the shard tasks on Dask: a scheduler address (tcp://host:8786), or "local" for a local
    cluster of `workers` processes; empty = no Dask (see `workers`)."""

    factory: str = "Flat"
    """FAISS index factory string, inner-product metric: "Flat" (exact, REALM's choice), or
    e.g. "IVF1024,Flat", "HNSW32", "IVF1024,PQ16" for large corpora."""

    nprobe: int = Field(default=0, ge=0)
    """IVF lists searched per query (0 = FAISS default)."""

    ef_search: int = Field(default=0, ge=0)
    """HNSW search depth (0 = FAISS default)."""

    train_size: int = Field(default=100_000, ge=1)
    """Vectors sampled to train IVF/PQ indexes."""

    keep_versions: int = Field(default=2, ge=1)
    """Index versions kept under versions/ (the live one is never deleted)."""

    seed: int = 0
    """Seed of the IVF/PQ training sample."""

    metrics_file: str = "metrics/build_index/ict.json"
    """Rows, shards embedded/reused, blocks/s, index type and version."""
