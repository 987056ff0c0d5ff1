"""Tasks of the tag_entities stage."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from prefect.states import Failed

from realm_core.config import TagEntitiesConfig
from realm_core.entities import salient
from realm_core.errors import RealmError


@task(name="tag_shard", cache_result_in_memory=False)
def tag_shard(cfg: TagEntitiesConfig, shard: int, shard_dir: str) -> dict:
    """Tag one shard of blocks (skipped if a previous run finished it)."""
    import torch

    torch.set_num_threads(salient.torch_threads_for(cfg.workers))
    try:
        return salient.tag_shard(cfg, shard, shard_dir)
    except RealmError as exc:  # expected (bad input): one-line failure, no traceback
        return Failed(message=str(exc))


@task(name="publish_spans_summary")
def publish_spans_summary(cfg: TagEntitiesConfig, m: dict, examples: list[str]) -> None:
    """Markdown artifact: spans per label, blocks with at least one span, examples."""
    rows = ["# tag_entities", "", f"Output: `{cfg.output_dir}/{salient.SPANS_FILE}` — {m['spans']:,} spans over "
            f"{m['blocks']:,} blocks ({m['spans_per_block']} per block; {m['blocks_with_span']:,} blocks, "
            f"{100 * m['blocks_with_span_share']:.1f}%, have at least one), {m['blocks_per_s']} blocks/s "
            f"on {m['device']} in {m['precision']}", "",
            "| label | spans |", "|---|---:|", *[f"| {k} | {v:,} |" for k, v in m["spans_per_label"].items()],
            "", "## Examples", "", *[f"- {e}" for e in examples]]
    create_markdown_artifact("\n".join(rows), key="tag-entities-summary", description="tag_entities summary")
