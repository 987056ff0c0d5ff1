"""Tasks of the build_index stage."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from realm_core.config import BuildIndexConfig
from realm_core.errors import RealmError
from realm_core.retrieval import build_stage


@task(name="embed_shard", cache_result_in_memory=False)
def embed_shard_task(cfg: BuildIndexConfig, shard: int, manifest: dict, threads: int) -> dict:
    """Embed one shard of blocks (reused if a previous run finished it)."""
    import torch

    torch.set_num_threads(threads)
    try:
        return build_stage.embed_one(cfg, shard, manifest)
    except RealmError as exc:  # expected (bad input, corrupted shard): one-line failure
        return Failed(message=str(exc))


@task(name="publish_index_summary")
def publish_index_summary(cfg: BuildIndexConfig, m: dict) -> None:
    """Markdown artifact: rows, shards embedded/reused, throughput, the published version."""
    rows = ["# build_index", "", f"Retriever `{cfg.retriever}` over `{cfg.blocks}` -> `{cfg.output_dir}`", "",
            "| | |", "|---|---|", f"| vectors | {m['rows']:,} x {m['dim']} ({m['dtype']}) |",
            f"| shards embedded / reused | {m['shards_embedded']} / {m['shards_reused']} |",
            f"| device / compute precision | {m['device']} / {m['precision']} |",
            f"| embedding throughput | {m['embed_blocks_per_s']} blocks/s |",
            f"| index | {m['factory']}, version `{m['version']}`{' (kept: already current)' if m['version_reused'] else ''} |",
            f"| encoder / corpus hash | `{m['encoder_hash']}` / `{m['corpus_hash']}` |",
            f"| time | {m['seconds']} s |"]
    create_markdown_artifact("\n".join(rows), key="build-index-summary", description="build_index summary")
