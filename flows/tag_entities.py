"""Flow `tag_entities`: salient spans (entities + dates) for every block.

    python -m flows.tag_entities [--params FILE] [--set tag_entities.KEY=VALUE ...]

Shards run as Prefect tasks: in this process with `workers: 1`, or on a process pool
(`ProcessPoolTaskRunner(max_workers=workers)`) otherwise. A rerun resumes finished shards.
`device`/`precision` are resolved once here and every shard task gets the resolved config.
"""

from __future__ import annotations

import sys
import time

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
import pyarrow.parquet as pq
from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.cli import main
from flows.runners import shard_runner
from realm_core.config import TagEntitiesConfig
from realm_core.entities import salient
from realm_core.errors import RealmError
from tasks.tag_entities import publish_spans_summary, tag_shard


@flow(name="tag_entities", task_runner=ThreadPoolTaskRunner(max_workers=1))
def tag_entities_flow(cfg: TagEntitiesConfig):
    """Tag every shard (resuming finished ones), then merge into salient_spans.parquet."""
    logger = get_run_logger()
    t0 = time.monotonic()
    try:
        cfg = salient.resolve(cfg)  # once: shard tasks in other processes must not re-resolve "auto"
        n_blocks, n_shards, shard_dir = salient.plan(cfg)
        salient.load_tagger(cfg.tagger, cfg.device, cfg.precision)  # fail fast on a bad tagger, before any shard runs
    except RealmError as exc:
        return Failed(message=str(exc))
    logger.info("tagging on %s in %s", cfg.device, cfg.precision)
    progress = create_progress_artifact(0.0, key="tag-entities-progress", description="tag_entities")
    futures = [tag_shard.submit(cfg, i, str(shard_dir)) for i in range(n_shards)]
    done_blocks = 0
    for n_done, fut in enumerate(as_completed(futures), 1):
        res = fut.result(raise_on_failure=False)
        if fut.state.is_failed() or not isinstance(res, dict):
            return Failed(message=str(fut.state.message))
        done_blocks += res["blocks"]
        rate = done_blocks / (time.monotonic() - t0)
        logger.info("shard %d done (%d/%d%s): %d spans; %d/%d blocks, %.1f blocks/s", res["shard"], n_done, n_shards,
                    ", resumed" if res["resumed"] else "", res["spans"], done_blocks, n_blocks, rate)
        update_progress_artifact(progress, 100.0 * n_done / n_shards)
    metrics = salient.merge_shards(cfg, n_shards, shard_dir, time.monotonic() - t0)
    publish_spans_summary(cfg, metrics, _examples(cfg))
    return {k: metrics[k] for k in ("spans", "blocks_with_span", "spans_per_block", "blocks_per_s", "device", "precision")}


def _examples(cfg: TagEntitiesConfig, n: int = 8) -> list[str]:
    spans = pq.read_table(f"{cfg.output_dir}/{salient.SPANS_FILE}").slice(0, 400)
    blocks = salient.read_rows(cfg.blocks, 0, min(50, pq.ParquetFile(cfg.blocks).metadata.num_rows))
    texts = dict(zip(blocks.column("block_id").to_pylist(), blocks.column("text").to_pylist()))
    out = []
    for bid, s, e, label in zip(*(spans.column(c).to_pylist() for c in ("block_id", "start", "end", "label"))):
        if bid in texts and len(out) < n * 3:
            out.append(f"`{texts[bid][s:e]}` ({label})")
    return out[: n * 3]


def preflight(cfg: TagEntitiesConfig) -> None:
    salient.plan(cfg)


def _run(cfg: TagEntitiesConfig):
    runner = shard_runner(cfg.workers, cfg.dask_address)
    state = tag_entities_flow.with_options(task_runner=runner)(cfg, return_state=True)
    if state.is_completed():
        print(f"tag_entities: {state.result()}")
    return state


if __name__ == "__main__":
    sys.exit(main("tag_entities", _run, preflight))
