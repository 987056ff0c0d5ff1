"""Flow `build_index`: embed every block with a retriever and publish a FAISS index version.

    python -m flows.build_index [--params FILE] [--set build_index.KEY=VALUE ...]

Shards run as Prefect tasks: in this process with `workers: 1`, or on a process pool
(`ProcessPoolTaskRunner(max_workers=workers)`) otherwise; `device`/`precision` are resolved once
here and every shard task gets the resolved config. A rerun after a kill reuses finished
shards; CURRENT moves to the new version only once it is completely written.
"""

from __future__ import annotations

import os
import sys
import time

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.cli import main
from flows.runners import shard_runner
from realm_core.config import BuildIndexConfig
from realm_core.errors import RealmError
from realm_core.retrieval import build_stage
from tasks.build_index import embed_shard_task, publish_index_summary


def embed_and_index(cfg: BuildIndexConfig, progress_key: str, threads: int) -> dict | Failed:
    """plan, every shard as an `embed_shard` task on the flow's task runner, then finish: the
    build_index stage's work, shared with the reindex flow. Returns the metrics or a Failed state."""
    logger = get_run_logger()
    t0 = time.monotonic()
    try:
        cfg = build_stage.resolve(cfg)  # once: shard tasks in other processes must not re-resolve "auto"
        manifest = build_stage.plan(cfg, logger.info)
    except RealmError as exc:
        return Failed(message=str(exc))
    logger.info("embedding on %s in %s (vectors stored as %s)", cfg.device, cfg.precision, cfg.dtype)
    n = manifest["n_shards"]
    progress = create_progress_artifact(0.0, key=progress_key, description=progress_key.removesuffix("-progress"))
    futures = [embed_shard_task.submit(cfg, i, manifest, threads) for i in range(n)]
    records, rows = [], 0
    for n_done, fut in enumerate(as_completed(futures), 1):
        rec = fut.result(raise_on_failure=False)
        if fut.state.is_failed() or not isinstance(rec, dict):
            return Failed(message=str(fut.state.message))
        records.append(rec)
        rows += rec["rows"]
        logger.info("shard %d done (%d/%d%s): %d/%d blocks, %.1f blocks/s", rec["shard"], n_done, n,
                    ", reused" if rec["reused"] else "", rows, manifest["total_rows"], rows / (time.monotonic() - t0))
        update_progress_artifact(progress, 100.0 * n_done / n)
    try:
        return build_stage.finish(cfg, records, time.monotonic() - t0, logger.info)
    except RealmError as exc:
        return Failed(message=str(exc))


@flow(name="build_index", task_runner=ThreadPoolTaskRunner(max_workers=1))
def build_index_flow(cfg: BuildIndexConfig):
    """Embed missing shards (as tasks), then verify them and publish the index."""
    metrics = embed_and_index(cfg, "build-index-progress", max(1, (os.cpu_count() or 1) // cfg.workers))
    if not isinstance(metrics, dict):
        return metrics
    publish_index_summary(cfg, metrics)
    return {k: metrics[k] for k in ("rows", "shards_embedded", "shards_reused", "embed_blocks_per_s", "version",
                                    "device", "precision")}


def preflight(cfg: BuildIndexConfig) -> None:
    from realm_core.retrieval.embed import encoder_hash

    if not os.path.isfile(cfg.blocks):
        raise RealmError(f"build_index.blocks: {cfg.blocks}: no such file")
    encoder_hash(cfg.retriever)  # a missing or incomplete checkpoint fails here, before Prefect starts
    build_stage.resolve(cfg)  # so does device: cuda on a machine without one


def _run(cfg: BuildIndexConfig):
    runner = shard_runner(cfg.workers, cfg.dask_address)
    state = build_index_flow.with_options(task_runner=runner)(cfg, return_state=True)
    if state.is_completed():
        print(f"build_index: {state.result()}")
    return state


if __name__ == "__main__":
    sys.exit(main("build_index", _run, preflight))
